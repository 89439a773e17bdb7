"""The oracle's shape classifier: a ridge-regression readout of a blob's soft-alpha crop.

Shape outlines at 32 px under blur and noise are beyond fixed templates (a blurred diamond
looks like a circle), so, like GenEval's detector, the oracle uses a small trained model. It is
trained only on single-object renders with random degradations, never on prompts or pairs, and
is rebuilt deterministically by `python -m spatial.world.shapes` (a few seconds).
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from .vocab import COLOURS, SHAPES

CROP = 16  # feature map side
WINDOW = 1.4  # crop window side, as a multiple of the blob's larger extent
WEIGHTS = Path(__file__).with_name("shape_classifier.npz")


def crop_features(alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Soft alpha around a blob (its thresholded `mask`), square window, scaled to peak 1."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = WINDOW * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    near = ndimage.binary_dilation(mask, iterations=3)
    img = Image.fromarray((alpha * near).astype(np.float32), mode="F")
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    crop = img.transform((CROP, CROP), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
    v = np.asarray(crop, dtype=np.float32).ravel()
    return v / (v.max() + 1e-6)


@lru_cache(maxsize=1)
def _weights() -> np.ndarray:
    if not WEIGHTS.exists():
        raise FileNotFoundError(f"{WEIGHTS} is missing: run `python -m spatial.world.shapes`")
    return np.load(WEIGHTS)["W"]


def classify(features: np.ndarray) -> np.ndarray:
    """Scores (n, len(SHAPES)) for feature rows (n, CROP*CROP); higher is more likely."""
    x = np.atleast_2d(features)
    return np.hstack([x, np.ones((len(x), 1), np.float32)]) @ _weights()


def degrade(img: Image.Image, rng: random.Random) -> Image.Image:
    """One random degradation of the kinds a small generator produces (or none)."""
    kind = rng.choice(["none", "blur", "noise", "down", "blur+noise"])
    if "blur" in kind:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.5)))
    if "noise" in kind:
        a = np.asarray(img, dtype=np.float32)
        a = a + np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(4, 24), a.shape)
        img = Image.fromarray(a.clip(0, 255).astype(np.uint8))
    if kind == "down":
        s = rng.choice([24, 32, 40])
        img = img.resize((s, s), Image.Resampling.BILINEAR).resize(img.size, Image.Resampling.BILINEAR)
    return img


def training_set(n: int, seed: int):
    """Features and labels from n single-object renders at random sizes, resolutions and degradations."""
    from .oracle import blob_masks  # late import: the oracle imports this module
    from .render import render
    from .scene import Scene, SceneObject

    rng = random.Random(f"shapes:{seed}")
    X, y = [], []
    for i in range(n):
        k = i % len(SHAPES)
        colour = rng.choice(list(COLOURS))
        obj = SceneObject(colour, SHAPES[k], rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.14, 0.28))
        bg = tuple(rng.randint(225, 250) for _ in range(3))
        img = degrade(render(Scene((obj,), bg), rng.choice([32, 48, 64, 96, 128])), rng)
        blobs = [b for b in blob_masks(img) if b[0] == colour]
        if blobs:
            _, mask, alpha = max(blobs, key=lambda b: b[1].sum())
            X.append(crop_features(alpha, mask))
            y.append(k)
    return np.array(X, np.float32), np.array(y)


def fit(X: np.ndarray, y: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Closed-form ridge regression onto +-1 one-hot targets (deterministic, no iterations)."""
    xb = np.hstack([X, np.ones((len(X), 1), np.float32)]).astype(np.float64)
    t = np.eye(len(SHAPES))[y] * 2 - 1
    return np.linalg.solve(xb.T @ xb + ridge * np.eye(xb.shape[1]), xb.T @ t).astype(np.float32)


def main() -> None:
    X, y = training_set(6000, seed=0)
    W = fit(X, y)
    np.savez_compressed(WEIGHTS, W=W)
    _weights.cache_clear()
    Xt, yt = training_set(1000, seed=1)
    acc = float((classify(Xt).argmax(1) == yt).mean())
    print(f"wrote {WEIGHTS.name}: {len(X)} training blobs, held-out accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
