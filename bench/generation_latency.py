"""Toy FLUX render latency on the CPU: one image at 32 and 64 px, and a batch vs one-by-one.

    python bench/generation_latency.py --repeats 7

Uses the bundled checkpoint (assets/toy/flux) through GenerationService.generate at the toy
preset's steps and guidance. Every figure is the median of `--repeats` timed runs after one warm-up;
per-image batch figures divide the batch's time by its size.

    python bench/generation_latency.py --repeats 7 --threads 1 --compile

also times the same service with its transformer under torch.compile (GenerationConfig.compile),
after the eager rows (the baseline, same process), with each size's first call (the compile)
reported separately and checked to give the eager pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from spatial.generation import GenerationConfig, GenerationService  # noqa: E402
from spatial.world import sample_prompts  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base_model", default=None, help="pipeline folder (default: the bundled toy)")
    ap.add_argument("--compile", action="store_true", help="then time the torch.compile'd transformer too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = GenerationConfig.for_preset("toy", base_model=args.base_model, device="cpu", batch_size=args.batch)
    config.lora = None
    service = GenerationService(config)
    prompts = sample_prompts(args.batch, seed=77)
    rows = measure(service, prompts, args)
    # libgomp's wait policy decides whether a second thread pays (docs/BENCHMARKS.md): record it
    policy = os.environ.get("OMP_WAIT_POLICY") or "default"
    out = {"steps": config.steps, "threads": args.threads, "omp_wait_policy": policy, "batch": args.batch, "sizes": rows}
    if args.compile:
        eager_images = {size: service.generate(prompts[0], [0], size=size)[0] for size in (32, 64)}
        service.pipeline.transformer.compile()
        first = {}
        for size in (32, 64):
            t = time.perf_counter()
            image = service.generate(prompts[0], [0], size=size)[0]
            first[size] = round(time.perf_counter() - t, 1)
            same = np.array_equal(np.asarray(image), np.asarray(eager_images[size]))
            print(f"compiled, first call at {size} px: {first[size]} s, same pixels as eager: {same}", flush=True)
        compiled = measure(service, prompts, args)
        for size, row in compiled.items():
            row["first_call_s"] = first[size]
            row["one_image_vs_eager"] = round(row["one_image_s"] / rows[size]["one_image_s"], 2)
        out["compiled"] = compiled
    print(json.dumps(out))


def measure(service, prompts, args) -> dict:
    rows = {}
    for size in (32, 64):
        single = timed(lambda: service.generate(prompts[0], [0], size=size), args.repeats)
        batch = timed(lambda: service.generate(prompts, [0], size=size), args.repeats)
        one_by_one = timed(lambda: [service.generate(p, [0], size=size) for p in prompts], args.repeats)
        rows[size] = {
            "one_image_s": round(statistics.median(single), 4),
            "one_image_runs": [round(v, 4) for v in single],
            "batched_per_image_s": round(statistics.median(batch) / args.batch, 4),
            "one_by_one_per_image_s": round(statistics.median(one_by_one) / args.batch, 4),
        }
        rows[size]["batch_speedup"] = round(rows[size]["one_by_one_per_image_s"] / rows[size]["batched_per_image_s"], 2)
        print(size, rows[size], flush=True)
    return rows


if __name__ == "__main__":
    main()
