"""Does a SpatialScore pay for objects nobody asked for? Score renders of the named objects alone
against the same renders with one unrequested object added, per colour of that object.

    python bench/reward_extra_object.py [--reward assets/toy/spatialscore] [--prompts 150]

SpatialWorld prompts (seed 555, used by no training run); the extra object has a colour the prompt
does not name, a random shape and a random place in the middle of the image. A reward that
ranks the cluttered image higher invites a policy to add objects (docs/TRAINING.md). Prints one
JSON line per colour and one for all: mean mu of clean and cluttered images and how often the
cluttered one scores higher.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.scorers import TOY_SPATIALSCORE  # noqa: E402
from spatial.scorers import SpatialScoreScorer  # noqa: E402
from spatial.world import COLOURS, SHAPES, Scene, SceneObject, example_seed, render, sample_example  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reward", default=str(TOY_SPATIALSCORE), help="SpatialScore checkpoint folder")
    ap.add_argument("--prompts", type=int, default=150)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args(argv)
    scorer = SpatialScoreScorer(args.reward)
    rng = random.Random(0)
    rows = []  # (colour, prompt, clean image, cluttered image)
    for i in range(args.prompts):
        ex = sample_example(example_seed(555, i))
        named = tuple(o for o in ex.scene.objects if o.named)
        colour = rng.choice([c for c in COLOURS if c not in {o.colour for o in named}])
        extra = SceneObject(colour, rng.choice(SHAPES), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), 0.2)
        rows.append((colour, ex.prompt, render(Scene(named, ex.scene.background), args.size),
                     render(Scene(named + (extra,), ex.scene.background), args.size)))  # fmt: skip
    prompts = [r[1] for r in rows]
    clean = np.array(scorer.score(prompts, [r[2] for r in rows]).mu, dtype=float)
    cluttered = np.array(scorer.score(prompts, [r[3] for r in rows]).mu, dtype=float)
    colours = np.array([r[0] for r in rows])
    for name in [*COLOURS, "all"]:
        m = colours == name if name != "all" else np.ones(len(rows), bool)
        if m.any():
            print(json.dumps({"reward": args.reward, "extra_colour": name, "n": int(m.sum()),
                              "mu_clean": round(float(clean[m].mean()), 3), "mu_with_extra": round(float(cluttered[m].mean()), 3),
                              "extra_scored_higher": round(float((cluttered[m] > clean[m]).mean()), 3)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
