"""Side-by-side base vs tuned on the toy: one pipeline with the LoRA switched, vs two pipelines.

    python bench/generation_memory.py --repeats 5

Each layout runs in a fresh process (so peak RSS is its own): `one` loads the bundled toy, attaches
a rank-16 LoRA as the `tuned` adapter and renders GenerationService.compare pairs; `two` loads the
toy twice (the second with the LoRA merged into its own transformer copy) and renders the same pairs
one per pipeline; `mixed` is `one` with both sides in a single batch of two, the LoRA applied to the
tuned row only (`spatial.generation.adapter_per_row`), the lever of rendering both sides in one pass.
Reported: peak RSS (ru_maxrss) after loading and after rendering, the RSS of the same process with
one plain pipeline and no adapter (the baseline), and seconds per pair (median).

    python bench/generation_memory.py --repeats 5 --threads 1 --layouts plain,one,mixed
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(layout: str, repeats: int, threads: int, size: int) -> dict:
    import numpy as np
    import torch
    from diffusers import FluxPipeline

    from spatial.generation import GenerationConfig, GenerationService, adapter_per_row, add_lora, sampling
    from spatial.generation.config import TOY_BASE

    torch.set_num_threads(threads)
    prompt, steps = "a red circle to the left of a blue square", 20
    config = GenerationConfig.for_preset("toy", device="cpu")
    config.lora = None

    def nudge(transformer):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for n, p in transformer.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)

    if layout == "plain":
        service = GenerationService(config)
        service.pipeline
        loaded = peak_mib()
        run = lambda seed: service.generate(prompt, [seed], size=size)  # noqa: E731
    elif layout in ("one", "mixed"):
        service = GenerationService(config)
        transformer = service.pipeline.transformer
        add_lora(transformer, rank=16, alpha=32, adapter_name="tuned")
        nudge(transformer)
        service.adopt_adapter("tuned", "random rank-16")
        loaded = peak_mib()
        run = lambda seed: service.compare(prompt, seed, size=size)  # noqa: E731
        if layout == "mixed":
            apart = run(0)  # the service's two passes, to check the one-batch pixels against

            def run(seed):  # noqa: F811 - both sides in one batch instead
                with adapter_per_row(transformer, [None, "tuned"]):
                    return tuple(sampling.generate_images(service.pipeline, [prompt] * 2, [seed] * 2, steps, 3.5, size))

            # Same pixels up to the rounding a batch shape may change.
            max_diff = max(int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())
                           for a, b in zip(apart, run(0)))  # fmt: skip
    else:
        base = FluxPipeline.from_pretrained(TOY_BASE)
        tuned = FluxPipeline.from_pretrained(TOY_BASE)
        add_lora(tuned.transformer, rank=16, alpha=32, adapter_name="tuned")
        nudge(tuned.transformer)
        tuned.transformer.fuse_lora()
        for p in (base, tuned):
            p.set_progress_bar_config(disable=True)
            for m in (p.vae, p.text_encoder, p.text_encoder_2, p.transformer):
                m.eval()
        loaded = peak_mib()

        def run(seed):
            return (sampling.generate_images(base, [prompt], [seed], steps, 3.5, size)[0],
                    sampling.generate_images(tuned, [prompt], [seed], steps, 3.5, size)[0])  # fmt: skip

    run(0)
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        run(r)
        times.append(time.perf_counter() - t)
    out = {"layout": layout, "peak_rss_loaded_mib": round(loaded, 1), "peak_rss_mib": round(peak_mib(), 1),
           "seconds": round(statistics.median(times), 4), "runs": [round(v, 4) for v in times]}  # fmt: skip
    if layout == "mixed":
        out["max_pixel_diff_vs_one"] = max_diff
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the app runs the toy on 2, on 1 while a job runs)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--layouts", default="plain,one,two", help="comma-separated: plain, one, two, mixed")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.threads, args.size)))
        return
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    unknown = sorted(set(layouts) - {"plain", "one", "two", "mixed"})
    if unknown or "plain" not in layouts:
        ap.error(f"--layouts needs plain (the baseline) and takes only plain, one, two, mixed; got {args.layouts!r}")
    results = {}
    for layout in layouts:
        command = [sys.executable, __file__, "--child", layout, "--repeats", str(args.repeats),
                   "--threads", str(args.threads), "--size", str(args.size)]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        results[layout] = json.loads(out.stdout.strip().splitlines()[-1])
        print(results[layout], flush=True)
    plain = results["plain"]["peak_rss_mib"]
    for layout in (x for x in layouts if x != "plain"):
        results[layout]["rss_vs_one_plain_pipeline"] = round(results[layout]["peak_rss_mib"] / plain, 3)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
