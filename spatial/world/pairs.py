"""Preference pairs (chosen satisfies the prompt, rejected is a perturbation) and their folder layout.

Layout, read by `datasets.load_dataset(DIR)` with image columns `chosen` and `rejected`:

    DIR/train/metadata.jsonl   one JSON object per pair (see PAIR_COLUMNS)
    DIR/train/images/*.png     content-addressed images
    DIR/test/...               the same for the test split

Reward training reads `prompt`, `chosen`, `rejected`; annotation exports use the same layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .perturb import KINDS, Perturbation, perturb
from .render import render
from .sampler import Example, WorldConfig, example_seed, sample_example

PAIR_COLUMNS = ("prompt", "chosen", "rejected", "perturbed_prompt", "perturbation", "scene", "rejected_scene")


@dataclass(frozen=True)
class Pair:
    example: Example
    perturbation: Perturbation

    @property
    def prompt(self) -> str:
        return self.example.prompt


def sample_pair(seed: int, cfg: WorldConfig = WorldConfig()) -> Pair:
    """A deterministic pair for a seed: the example for the first seed (>= `seed`) that admits a
    perturbation, with a perturbation kind drawn uniformly among those it admits."""
    s = seed
    while True:
        ex = sample_example(s, cfg)
        rng = random.Random(f"perturb:{s}")
        kinds = list(KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            p = perturb(ex, kind, rng, cfg)
            if p is not None:
                return Pair(ex, p)
        s += 1_000_000_007  # far outside the seeds of neighbouring items


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def save_content_addressed(img: Image.Image, folder: Path) -> str:
    """Write an image once under the hash of its PNG bytes; return its path relative to folder's parent."""
    data = png_bytes(img)
    name = hashlib.sha256(data).hexdigest()[:24] + ".png"
    path = folder / name
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return f"{folder.name}/{name}"


def pair_record(pair: Pair, split_dir: Path, size: int) -> dict:
    images = split_dir / "images"
    return {
        "prompt": pair.prompt,
        "chosen_file_name": save_content_addressed(render(pair.example.scene, size), images),
        "rejected_file_name": save_content_addressed(render(pair.perturbation.scene, size), images),
        "perturbed_prompt": pair.perturbation.prompt,
        "perturbation": pair.perturbation.kind,
        "scene": pair.example.scene.to_json(),
        "rejected_scene": pair.perturbation.scene.to_json(),
    }


def write_pairs(
    out: str | Path,
    n: int,
    seed: int,
    size: int = 64,
    test_fraction: float = 0.1,
    cfg: WorldConfig = WorldConfig(),
    progress=None,
) -> dict[str, int]:
    """Write n pairs (item i from example seed `example_seed(seed, i)`); return rows per split.

    The last round(n * test_fraction) items form the test split; the same (n, seed, size) always
    writes the same folder, byte for byte.
    """
    if n <= 0:
        raise ValueError("the number of pairs must be positive")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    out = Path(out)
    n_test = round(n * test_fraction)
    counts = {}
    for split, lo, hi in (("train", 0, n - n_test), ("test", n - n_test, n)):
        if hi <= lo:
            continue
        split_dir = out / split
        (split_dir / "images").mkdir(parents=True, exist_ok=True)
        with open(split_dir / "metadata.jsonl", "w") as f:
            for i in range(lo, hi):
                f.write(json.dumps(pair_record(sample_pair(example_seed(seed, i), cfg), split_dir, size)) + "\n")
                if progress is not None:
                    progress.update(1)
        counts[split] = hi - lo
    return counts
