"""Which held-out prompts have a canonical layout at the toy size, and how the base does on each kind.

    python -m training.evaluate generator --preset toy --seeds 4 --num_prompts 200 --out runs/eval-base
    python bench/canonical_coverage.py --results runs/eval-base

The toy FLUX is pretrained on each prompt's canonical layout (`WorldConfig.canonical`); a prompt
without one was seen with a random layout only. This prints, per number of named objects, how many
evaluation images have a prompt with a canonical layout, and the object and spatial accuracy of
those with and without one. Run it from an older checkout (PYTHONPATH) to see that checkout's
`canonical_layout` on the same verdicts.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from spatial.generation.config import PretrainConfig
from spatial.generation.pretrain import training_world
from spatial.world.grammar import parse_prompt
from spatial.world.sampler import canonical_layout
from spatial.world.scene import SceneObject


def has_canonical_layout(prompt: str, world) -> bool:
    spec = parse_prompt(prompt)
    size = world.max_size
    return canonical_layout(spec, [SceneObject(c, s, 0.5, 0.5, size) for c, s in spec.objects], world) is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="an evaluation folder with results.jsonl")
    args = ap.parse_args()
    world = training_world(PretrainConfig())
    rows = [json.loads(line) for line in (Path(args.results) / "results.jsonl").read_text().splitlines()]
    cached: dict[str, bool] = {}
    groups = defaultdict(list)
    for row in rows:
        if row["prompt"] not in cached:
            cached[row["prompt"]] = has_canonical_layout(row["prompt"], world)
        groups[(len(parse_prompt(row["prompt"]).objects), cached[row["prompt"]])].append(row)
    table = {}
    for (n, canonical), group in sorted(groups.items()):
        table[f"{n} objects, canonical layout {'exists' if canonical else 'missing'}"] = {
            "images": len(group),
            "object_accuracy": round(sum(r["objects_ok"] for r in group) / len(group), 3),
            "spatial_accuracy": round(sum(r["spatial_ok"] for r in group) / len(group), 3),
        }
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
