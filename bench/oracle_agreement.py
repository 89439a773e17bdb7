"""Oracle agreement with SpatialWorld ground truth, on clean and degraded renders.

    python bench/oracle_agreement.py --n 2000 --size 64

For each pair: the chosen render must be judged `satisfied`, the rejected render must not.
Degradations: Gaussian blur (radius 1 px at 64 px), Gaussian noise (sigma 12/255), and
downscaling to 32 px and back (bilinear).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from spatial.world import check, example_seed, render, sample_pair

DEGRADATIONS = {
    "clean": lambda im, rng: im,
    "blur": lambda im, rng: im.filter(ImageFilter.GaussianBlur(im.width / 64)),
    "noise": lambda im, rng: Image.fromarray(
        (np.asarray(im, np.float32) + rng.normal(0, 12, (im.height, im.width, 3))).clip(0, 255).astype(np.uint8)
    ),
    "down32": lambda im, rng: im.resize((32, 32), Image.Resampling.BILINEAR).resize(im.size, Image.Resampling.BILINEAR),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    counts = {k: {"chosen_ok": 0, "rejected_ok": 0} for k in DEGRADATIONS}
    t0 = time.perf_counter()
    for i in tqdm(range(args.n), desc="pairs"):
        pair = sample_pair(example_seed(args.seed, i))
        chosen, rejected = render(pair.example.scene, args.size), render(pair.perturbation.scene, args.size)
        for name, fn in DEGRADATIONS.items():
            rng = np.random.default_rng(i)
            counts[name]["chosen_ok"] += check(fn(chosen, rng), pair.example.spec).satisfied
            counts[name]["rejected_ok"] += not check(fn(rejected, rng), pair.example.spec).satisfied
    result = {
        "n": args.n,
        "size": args.size,
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cpus",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for name, c in counts.items():
        result[name] = {
            "chosen_accepted": c["chosen_ok"] / args.n,
            "rejected_rejected": c["rejected_ok"] / args.n,
            "agreement": (c["chosen_ok"] + c["rejected_ok"]) / (2 * args.n),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
