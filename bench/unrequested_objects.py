"""What a generator draws that the prompt did not ask for, read from evaluations' saved images.

    python -m training.evaluate generator --preset toy [--lora PATH] --seeds 4 --num_prompts 200 --out runs/eval-X
    python bench/unrequested_objects.py --results runs/eval-base,runs/eval-X [--truth]

The oracle grades only the named objects and their relations, and SpatialWorld scenes carry
unnamed distractors, so an extra object costs neither reward. Counting them shows whether RL
learned to add things. For every image: object-sized blobs the oracle's detector finds, minus one per named
object it found; the share of images with any extra; extras by colour. With --truth, the same
for SpatialWorld's own renders of the evaluation prompts (what the generator was trained on).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.generation.evaluate import HELD_OUT_SEED  # noqa: E402
from spatial.world import check, example_seed, parse_prompt, render, sample_example  # noqa: E402


def extras(image, prompt: str) -> list[str]:
    """Colours of the object-sized blobs no named object accounts for (the oracle's `extras`)."""
    return [e["name"].split()[0] for e in check(image, prompt).extras]


def summarise(items) -> dict:
    """items: (image, prompt) pairs."""
    n = with_extra = extra_total = 0
    by_colour = Counter()
    uncalled = Counter()  # extras of a colour the prompt never names
    for image, prompt in items:
        left = extras(image, prompt)
        named_colours = {c for c, _ in parse_prompt(prompt).objects}
        n += 1
        with_extra += bool(left)
        extra_total += len(left)
        by_colour.update(left)
        uncalled.update(c for c in left if c not in named_colours)
    return {
        "images": n,
        "extras_per_image": round(extra_total / n, 3),
        "images_with_extras": round(with_extra / n, 3),
        "extras_by_colour": {c: round(k / n, 3) for c, k in by_colour.most_common()},
        "unnamed_colour_extras_by_colour": {c: round(k / n, 3) for c, k in uncalled.most_common()},
    }


def from_results(folder: Path):
    for line in (folder / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        yield Image.open(folder / row["file_name"]).convert("RGB"), row["prompt"]


def truth(prompts: int, size: int):
    for i in range(prompts):
        ex = sample_example(example_seed(HELD_OUT_SEED, i))
        yield render(ex.scene, size), ex.prompt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="", help="comma-separated evaluation folders (with results.jsonl)")
    ap.add_argument("--truth", action="store_true", help="also SpatialWorld's renders of the evaluation prompts")
    ap.add_argument("--prompts", type=int, default=200, help="evaluation prompts, for --truth")
    ap.add_argument("--size", type=int, default=32, help="render size, for --truth")
    args = ap.parse_args(argv)
    folders = [Path(f) for f in args.results.split(",") if f]
    missing = [str(f) for f in folders if not (f / "results.jsonl").is_file()]
    if missing or not (folders or args.truth):
        print(f"error: no results.jsonl in {', '.join(missing)}" if missing else "error: give --results or --truth",
              file=sys.stderr)
        return 2
    if args.truth:
        print(json.dumps({"results": "SpatialWorld renders", **summarise(truth(args.prompts, args.size))}))
    for f in folders:
        print(json.dumps({"results": str(f), **summarise(from_results(f))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
