"""Where a GRPO group's spread comes from: initial noise vs SDE noise, and how good its best member is.

    python bench/grpo_group_spread.py --prompts 24 --group 8 --steps 8

For held-out SpatialWorld prompts, samples groups of G images from the shipped toy FLUX (no LoRA)
with the trainer's own SDE sampler under several settings: members with their own initial noise or
one shared start (`same_latent`), noise level a, and an SDE window w (only the first w steps
random). For each it prints the oracle's spatial accuracy, the share of groups with both a
satisfied and an unsatisfied member (the groups GRPO can learn layout from), the mean within-group
std of SpatialScore, and the oracle accuracy of the member SpatialScore ranks first (best-of-G):
what a policy that learned the reward perfectly could reach from that spread.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.generation.config import GenerationConfig  # noqa: E402
from spatial.generation.service import load_pipeline  # noqa: E402
from spatial.rl.flux_policy import FluxPolicy  # noqa: E402
from spatial.rl.sampling import sample_trajectory  # noqa: E402
from spatial.scorers import load_scorer  # noqa: E402
from spatial.world import check, sample_prompts  # noqa: E402

SETTINGS = [  # (same_latent, noise level, SDE window; 0 = every step)
    (False, 0.7, 0), (True, 0.7, 0), (True, 1.0, 0), (True, 0.7, 2), (True, 0.7, 4), (True, 0.0, 0),
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prompt_seed", type=int, default=555)
    ap.add_argument("--base_model", default=None, help="Base FluxPipeline folder; default: the shipped toy FLUX.")
    ap.add_argument("--reward", default="spatialscore", help="Scorer for the spread and best-of-G columns.")
    args = ap.parse_args()
    n, g = args.prompts, args.group
    pipe = load_pipeline(GenerationConfig.for_preset("toy", base_model=args.base_model))
    policy = FluxPolicy(pipe, rank=4, alpha=4)
    scorer = load_scorer(args.reward)
    prompts = [p for p in sample_prompts(n, args.prompt_seed) for _ in range(g)]
    cond, guidance = policy.encode(prompts), policy.guidance(3.5, len(prompts))
    sigmas = policy.sigmas(args.steps, 32)
    rows = []
    for same, level, window in SETTINGS:
        seeds = [i * 1000 + (0 if same else m) for i in range(n) for m in range(g)]
        gens = [torch.Generator().manual_seed(7 + k) for k in range(len(prompts))]
        traj = sample_trajectory(policy.velocity, policy.initial_noise(seeds, 32), sigmas, cond, guidance, level,
                                 gens, window or None)  # fmt: skip
        images = policy.decode(traj.final, 32)
        mu = np.asarray(scorer.score(prompts, images).mu).reshape(n, g)
        ok = np.array([check(im, p).satisfied for p, im in zip(prompts, images)]).reshape(n, g)
        row = {"same_latent": same, "noise_level": level, "sde_window": window or args.steps,
               "spatial_accuracy": round(float(ok.mean()), 3),
               "mixed_groups": round(float(np.mean([s.any() and not s.all() for s in ok])), 3),
               "spatialscore_within_std": round(float(mu.std(1).mean()), 2),
               "best_of_group_accuracy": round(float(ok[np.arange(n), mu.argmax(1)].mean()), 3)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"prompts": n, "group": g, "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
