"""One toy GRPO iteration, split into sampling / scoring / training, with top-k filtering vs without.

    python bench/grpo_iteration.py --group 24 --k 6 --repeats 5

The real toy run's pieces (`spatial.rl.run.build_trainer`: the shipped toy FLUX with a fresh LoRA,
the toy SpatialScore as reward, SpatialWorld prompts) at the paper's best filter, k = 6 of G = 24,
against k = 0 at the same group size, in the same process. Each row is the median of --repeats
timed iterations after one untimed warm-up iteration; the LoRA is reset before every timed
iteration so both rows train the same starting point. Scoring runs in a worker thread that
overlaps sampling; `score_s` is only the wait after the last group is sampled.

Prints one JSON object per row, then a last line with all of them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.rl.advantages import group_advantages  # noqa: E402
from spatial.rl.config import GRPOConfig  # noqa: E402
from spatial.rl.run import build_trainer  # noqa: E402


def timed_iteration(trainer, it: int, k: int) -> dict:
    t0 = time.perf_counter()
    prompts, groups, cond, guidance, traj, images, rewards, t_sampled = trainer.sample(it)
    t_scored = time.perf_counter()
    adv, keep = group_advantages(rewards, groups, k)
    stats = trainer.train_step(cond, guidance, traj, adv, keep)
    t_end = time.perf_counter()
    return {"sample_s": t_sampled - t0, "score_s": t_scored - t_sampled, "train_s": t_end - t_scored,
            "iteration_s": t_end - t0, "kept": int(keep.sum()), "nfe_sampling": len(prompts) * trainer.config.sample_steps,
            "nfe_training": stats["nfe"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", type=int, default=24)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=1, help="groups per iteration")
    ap.add_argument("--steps", type=int, default=8, help="SDE sampling steps")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    out = tempfile.mkdtemp(prefix="grpo-bench-")
    cfg = GRPOConfig(output_dir=out, preset="toy", reward="spatialscore", group_size=args.group, top_k=args.k,
                     prompts_per_iteration=args.prompts, iterations=1, sample_steps=args.steps, num_prompts=64)  # fmt: skip
    trainer = build_trainer(cfg)
    start = [p.detach().clone() for p in trainer.params]
    timed_iteration(trainer, 0, args.k)  # warm-up: allocator, thread pool, first-call overheads
    rows = []
    for k in (args.k, 0):
        trainer.config.top_k = k
        runs = []
        for r in range(args.repeats):
            with torch.no_grad():
                for p, s in zip(trainer.params, start):
                    p.copy_(s)
            runs.append(timed_iteration(trainer, 1 + r, k))
        row = {"top_k": k, "group": args.group, "kept": runs[0]["kept"], "nfe_sampling": runs[0]["nfe_sampling"],
               "nfe_training": runs[0]["nfe_training"]}  # fmt: skip
        for key in ("sample_s", "score_s", "train_s", "iteration_s"):
            row[key] = round(statistics.median(x[key] for x in runs), 3)
        row["iteration_runs_s"] = [round(x["iteration_s"], 3) for x in runs]
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[1]["iteration_s"]
    for row in rows:
        row["iteration_vs_k0"] = round(row["iteration_s"] / base, 3)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "steps": args.steps, "rows": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
