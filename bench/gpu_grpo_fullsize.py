"""One GRPO iteration on the full-size FLUX.1-dev transformer (random weights), with and without
top-k filtering: wall time split into sampling / scoring / training, and peak GPU memory.

    python bench/gpu_grpo_fullsize.py --size 512 --group 24 --k 6 --steps 10

The transformer and VAE are built from FLUX.1-dev's published configs with random weights (no
download). The text encoders are one-layer random stand-ins with FLUX's output widths (T5 4096,
CLIP pooled 768): only their output shapes matter to the transformer's cost, and their own cost is
excluded from the timings. The reward is a cheap image statistic so that this measures the policy;
SpatialScore's own throughput is measured by the scoring benchmark. `--tiny` runs the same code on
a small config (for checking the script on a CPU).
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np
import torch
from generation_full_size import build  # the same full-size FLUX.1-dev builder as the generation bench

from spatial.rl.advantages import group_advantages
from spatial.rl.config import GRPOConfig
from spatial.rl.flux_policy import FluxPolicy
from spatial.rl.trainer import GRPOTrainer


class MeanPixel:
    def score(self, prompts, images):
        mu = np.array([np.asarray(im, dtype=np.float32).mean() / 255 for im in images])
        return SimpleNamespace(mu=mu, sigma=np.zeros_like(mu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--group", type=int, default=24)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--train_fraction", type=float, default=0.6)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    torch.manual_seed(0)
    pipe = build(args.tiny, torch.device(device), dtype)
    policy = FluxPolicy(pipe, rank=32, alpha=64, dtype=dtype, gradient_checkpointing=True)
    rows = []
    for n, k in enumerate((args.k, 0)):
        cfg = GRPOConfig(output_dir="/tmp/grpo-bench", group_size=args.group, top_k=k, prompts_per_iteration=1,
                         iterations=1, sample_steps=args.steps, resolution=args.size, lora_rank=32, lora_alpha=64,
                         train_timestep_fraction=args.train_fraction, save_every=100, eval_every=100)  # fmt: skip
        trainer = GRPOTrainer(cfg, policy, MeanPixel(), ["a red circle left of a blue square"])
        if n == 0:
            trainer.sample(0)  # warm-up (allocator, kernels); not timed
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        prompts, groups, cond, guidance, traj, images, rewards, t_sampled = trainer.sample(1)
        adv, keep = group_advantages(rewards, groups, k)
        t_scored = time.perf_counter()
        stats = trainer.train_step(cond, guidance, traj, adv, keep)
        if cuda:
            torch.cuda.synchronize()
        t_end = time.perf_counter()
        rows.append({"top_k": k, "group": args.group, "kept": int(keep.sum()), "sample_s": round(t_sampled - t0, 2),
                     "score_s": round(t_scored - t_sampled, 3), "train_s": round(t_end - t_scored, 2),
                     "iteration_s": round(t_end - t0, 2), "nfe_sampling": args.group * args.steps,
                     "nfe_training": stats["nfe"],
                     "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None})  # fmt: skip
    print(json.dumps({"size": args.size, "steps": args.steps, "dtype": str(dtype), "device": device,
                      "gpu": torch.cuda.get_device_name() if cuda else None, "rows": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
