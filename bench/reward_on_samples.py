"""Does the reward rank the generator's own images the way the oracle does? (What GRPO relies on.)

    python bench/reward_on_samples.py --prompts 48 --seeds 8 --steps 8 --reward spatialscore

The toy SpatialScore was trained on SpatialWorld renders, not on toy FLUX samples. This renders
K seeds per held-out prompt with the shipped toy FLUX (no LoRA) and, over every pair of images
of one prompt on which the oracle disagrees, counts how often the reward puts the oracle's
better image first: for "every relation holds", "every object found" and the fraction of
relations that hold. It also prints the oracle accuracy of each prompt's top-ranked image
(best-of-K), against the mean.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.generation import sampling  # noqa: E402
from spatial.generation.config import GenerationConfig  # noqa: E402
from spatial.generation.service import load_pipeline  # noqa: E402
from spatial.scorers import load_scorer  # noqa: E402
from spatial.world import check, sample_prompts  # noqa: E402


def pairwise_agreement(mu: np.ndarray, label: np.ndarray) -> tuple[float, int]:
    right = total = 0
    for i in range(mu.shape[0]):
        for j, k in itertools.combinations(range(mu.shape[1]), 2):
            if label[i, j] != label[i, k]:
                total += 1
                right += (mu[i, j] - mu[i, k]) * (label[i, j] - label[i, k]) > 0
    return (right / total if total else float("nan")), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--reward", default="spatialscore")
    ap.add_argument("--prompt_seed", type=int, default=777)
    args = ap.parse_args()
    n, k = args.prompts, args.seeds
    pipe = load_pipeline(GenerationConfig.for_preset("toy", lora=None))
    prompts = [p for p in sample_prompts(n, args.prompt_seed) for _ in range(k)]
    seeds = [s for _ in range(n) for s in range(k)]
    images = sampling.generate_images(pipe, prompts, seeds, args.steps, 3.5, 32)
    mu = np.asarray(load_scorer(args.reward).score(prompts, images).mu).reshape(n, k)
    verdicts = [check(im, p) for p, im in zip(prompts, images)]
    ok = np.array([v.satisfied for v in verdicts]).reshape(n, k)
    found = np.array([all(o["found"] for o in v.objects) for v in verdicts]).reshape(n, k)
    rel = np.array([np.mean([r["verdict"] == "true" for r in v.relations]) for v in verdicts]).reshape(n, k)
    out = {"reward": args.reward, "prompts": n, "seeds": k, "steps": args.steps,
           "spatial_accuracy": round(float(ok.mean()), 3), "object_accuracy": round(float(found.mean()), 3)}  # fmt: skip
    for name, label in (("all_relations", ok), ("all_objects", found), ("relation_fraction", rel)):
        agreement, pairs = pairwise_agreement(mu, label.astype(float))
        out[f"agreement_{name}"], out[f"pairs_{name}"] = round(agreement, 3), pairs
    top = mu.argmax(1)
    out["best_of_k_spatial_accuracy"] = round(float(ok[np.arange(n), top].mean()), 3)
    out["best_of_k_object_accuracy"] = round(float(found[np.arange(n), top].mean()), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
