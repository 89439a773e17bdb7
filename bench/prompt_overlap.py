"""How many evaluation prompts an RL run trained on, and what each model scores on the rest.

    python bench/prompt_overlap.py --train runs/prompts-weighted.txt \
        --results runs/eval-base-v5,runs/eval-w-b0.3-600

SpatialWorld is small: most 2-object requests recur in any few thousand prompts, so "held-out"
evaluation prompts (another seed) can ask for exactly what a training prompt asked, in other words
("B below A" is "A above B"). This counts them (`PromptSpec.meaning`) and splits each evaluation's
per-image verdicts (`training.evaluate generator --out DIR` writes DIR/results.jsonl) into the
prompts the run trained on and the rest. --train is a prompt file (one per line) or `seed:N:K`, the
K SpatialWorld prompts of seed N (the GRPO default is seed:101:4000).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.world import parse_prompt, sample_prompts  # noqa: E402


def training_prompts(spec: str) -> list[str]:
    if spec.startswith("seed:"):
        _, seed, n = spec.split(":")
        return sample_prompts(int(n), int(seed))
    return [line.strip() for line in Path(spec).read_text().splitlines() if line.strip()]


def split(rows: list[dict], seen: set) -> dict[str, dict]:
    """Object and spatial accuracy over the images whose prompt the run trained on, and the others."""
    out = {}
    for part, keep in (("trained on", True), ("not trained on", False)):
        mine = [r for r in rows if (parse_prompt(r["prompt"]).meaning() in seen) == keep]
        n = len(mine)
        out[part] = {"prompts": len({r["prompt"] for r in mine}), "images": n,
                     "object_accuracy": round(sum(r["objects_ok"] for r in mine) / n, 4) if n else None,
                     "spatial_accuracy": round(sum(r["spatial_ok"] for r in mine) / n, 4) if n else None}  # fmt: skip
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="training prompt file, or seed:N:K")
    ap.add_argument("--results", required=True, help="comma-separated evaluation folders (each with results.jsonl)")
    args = ap.parse_args(argv)
    seen = {parse_prompt(p).meaning() for p in training_prompts(args.train)}
    for folder in args.results.split(","):
        rows = [json.loads(line) for line in (Path(folder) / "results.jsonl").read_text().splitlines() if line.strip()]
        print(json.dumps({"results": folder, **split(rows, seen)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
