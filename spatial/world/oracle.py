"""The oracle: judge an image against a prompt from pixels alone.

It plays the part GenEval's detector plays for real images. Steps: resample to a fixed working
resolution (averaging away noise), estimate the background from the border, give each pixel the
nearest palette colour when it is closer to that than to the background, split each colour into
connected components, classify each component's shape (shapes.py), then decide each relation on
the components' boxes with the GenEval-style rule in scene.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from . import shapes
from .grammar import parse_prompt
from .scene import HOLDS, PromptSpec, direction_cosine
from .vocab import COLOURS, SHAPES

WORK = 96  # working resolution: the smallest object is ~13 px wide here, whatever the input size
MIN_AREA = 0.002  # of the image: smaller blobs are noise
# Smallest object-sized blob: a SpatialWorld object (side >= 0.16; a triangle is the least filled)
# covers about 0.013 of the image, while anti-aliasing fringes read as specks of 0.002-0.008.
OBJECT_AREA = 0.01
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32) / 255.0
_NAMES = list(COLOURS)


@dataclass
class Blob:
    colour: str
    shape: str
    confidence: float  # classifier margin of the chosen shape over the runner-up
    box: tuple[float, float, float, float]  # normalised (x0, y0, x1, y1)
    area: float  # fraction of the image


@dataclass
class CheckResult:
    satisfied: bool
    objects: list[dict] = field(default_factory=list)
    relations: list[dict] = field(default_factory=list)
    extras: list[dict] = field(default_factory=list)
    """Object-sized blobs no named object accounts for. Neither accuracy counts them (SpatialWorld
    scenes have unnamed distractors), so a policy that learns to add objects shows up only here."""

    def to_dict(self) -> dict:
        return asdict(self)


def to_array(image) -> np.ndarray:
    """PIL image or path -> float32 HxWx3 in [0, 1] at the working resolution."""
    if not isinstance(image, Image.Image):
        image = Image.open(image)
    image = image.convert("RGB")
    if image.size != (WORK, WORK):
        # BOX averages when shrinking (kills noise); BILINEAR keeps small inputs smooth.
        method = Image.Resampling.BOX if min(image.size) > WORK else Image.Resampling.BILINEAR
        image = image.resize((WORK, WORK), method)
    return np.asarray(image, dtype=np.float32) / 255.0


def blob_masks(image) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(colour, component mask, soft alpha of that colour) for every blob big enough to matter."""
    arr = ndimage.uniform_filter(to_array(image), size=(3, 3, 1), mode="nearest")
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    bg = np.median(border, axis=0)
    d_pal = np.linalg.norm(arr[:, :, None, :] - _PALETTE[None, None], axis=-1)
    d_bg = np.linalg.norm(arr - bg, axis=-1)
    nearest, d_near = d_pal.argmin(-1), d_pal.min(-1)
    # An object's soft edge is a blend of its colour and the background, and a blend can sit nearer
    # another palette colour (orange half-way to a light background is nearer yellow, red nearer
    # purple): such a fringe would be found as an object that is not there. So a pixel takes its
    # nearest colour only if no other colour explains it clearly better as a background blend.
    steps = _PALETTE - bg  # (colours, 3): the line from the background to each colour
    frac = np.clip(((arr - bg) @ steps.T) / np.maximum((steps * steps).sum(-1), 1e-6), 0.0, 1.0)
    off_line = np.linalg.norm(arr[:, :, None, :] - (bg + frac[..., None] * steps), axis=-1)
    off_nearest = np.take_along_axis(off_line, nearest[..., None], -1)[..., 0]
    fringe = (off_line.argmin(-1) != nearest) & (off_line.min(-1) < 0.5 * off_nearest)
    labels = np.where((d_near < d_bg) & (d_near < 0.45) & ~fringe, nearest, -1)
    out = []
    for ci, colour in enumerate(_NAMES):
        comp, n = ndimage.label(labels == ci)
        if n == 0:
            continue
        # How far each pixel has moved from the background towards this colour (1 = fully).
        d = _PALETTE[ci] - bg
        alpha = np.clip((arr - bg) @ d / max(float(d @ d), 1e-6), 0.0, 1.2)
        for k, sl in enumerate(ndimage.find_objects(comp), start=1):
            mask = comp == k
            if mask[sl].sum() >= MIN_AREA * WORK * WORK:
                out.append((colour, mask, alpha))
    return out


def find_blobs(image) -> list[Blob]:
    found = blob_masks(image)
    if not found:
        return []
    scores = shapes.classify(np.stack([shapes.crop_features(a, m) for _, m, a in found]))
    blobs = []
    for (colour, mask, _), s in zip(found, scores):
        order = np.argsort(s)[::-1]
        ys, xs = np.nonzero(mask)
        box = (xs.min() / WORK, ys.min() / WORK, (xs.max() + 1) / WORK, (ys.max() + 1) / WORK)
        blobs.append(
            Blob(colour, SHAPES[order[0]], float(s[order[0]] - s[order[1]]), box, float(mask.sum()) / WORK**2)
        )
    return blobs


def check(image, prompt: str | PromptSpec) -> CheckResult:
    """Judge one image against a prompt. Raises PromptError for prompts it cannot read."""
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    blobs = find_blobs(image)
    names = spec.names()
    objects, boxes, claimed = [], [], set()
    for colour, shape in spec.objects:
        best = max((b for b in blobs if (b.colour, b.shape) == (colour, shape)), key=lambda b: b.area, default=None)
        boxes.append(best.box if best else None)
        if best is not None:
            claimed.add(id(best))
        objects.append(
            {"name": f"{colour} {shape}", "found": best is not None, "box": [round(v, 4) for v in best.box] if best else None}
        )
    relations = []
    for r in spec.relations:
        a, b = boxes[r.subject], boxes[r.object]
        if a is None or b is None:
            verdict = "unknown"
        else:
            verdict = "true" if direction_cosine(a, b, r.predicate) >= HOLDS else "false"
        relations.append({"subject": names[r.subject], "relation": r.predicate, "object": names[r.object], "verdict": verdict})
    ok = all(o["found"] for o in objects) and all(r["verdict"] == "true" for r in relations)
    extras = [{"name": f"{b.colour} {b.shape}", "box": [round(v, 4) for v in b.box]}
              for b in blobs if id(b) not in claimed and b.area >= OBJECT_AREA]  # fmt: skip
    return CheckResult(ok, objects, relations, extras)
