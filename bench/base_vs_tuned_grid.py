"""An image grid of base vs RL-tuned toy FLUX on held-out prompts (top row base, bottom row tuned,
same seed per column), with the oracle's verdict per image on stdout.

    python bench/base_vs_tuned_grid.py --prompts 12 --out docs/screenshots/rl-lora-base-vs-tuned.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.generation import GenerationConfig, GenerationService  # noqa: E402
from spatial.generation.evaluate import HELD_OUT_SEED  # noqa: E402
from spatial.world import check, sample_prompts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cell", type=int, default=96, help="pixels per image in the grid")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    service = GenerationService(GenerationConfig.for_preset("toy", device="cpu"))
    prompts = sample_prompts(args.prompts, HELD_OUT_SEED)
    rows = [service.generate(prompts, [args.seed]), service.generate(prompts, [args.seed], adapter="tuned")]
    c = args.cell
    grid = Image.new("RGB", (c * len(prompts), c * 2), "white")
    for r, images in enumerate(rows):
        for i, image in enumerate(images):
            grid.paste(image.resize((c, c), Image.NEAREST), (c * i, c * r))
    grid.save(args.out)
    for i, p in enumerate(prompts):
        verdicts = [check(images[i], p) for images in rows]
        print(json.dumps({"prompt": p, "objects_found": [sum(o["found"] for o in v.objects) for v in verdicts],
                          "satisfied": [v.satisfied for v in verdicts]}))  # fmt: skip


if __name__ == "__main__":
    main()
