"""Render a Scene to a PIL image at any resolution (4x supersampled, so edges are anti-aliased)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .scene import RECTANGLE_ASPECT, Scene
from .vocab import COLOURS

SUPERSAMPLE = 4



def shape_polygon(shape: str, cx: float, cy: float, side: float) -> list[tuple[float, float]] | None:
    """Vertices of a shape in pixel units, or None for the circle (drawn as an ellipse)."""
    h = side / 2
    if shape == "circle":
        return None
    if shape == "square":
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
    if shape == "rectangle":
        v = h * RECTANGLE_ASPECT
        return [(cx - h, cy - v), (cx + h, cy - v), (cx + h, cy + v), (cx - h, cy + v)]
    raise ValueError(f"unknown shape {shape!r}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx, cy, side, fill) -> None:
    poly = shape_polygon(shape, cx, cy, side)
    if poly is None:
        h = side / 2
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def shape_mask(shape: str, px: int) -> np.ndarray:
    """A soft [0, 1] mask of a shape filling a px x px box (the oracle's templates)."""
    big = px * SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw_shape(ImageDraw.Draw(img), shape, big / 2, big / 2, big, 255)
    return np.asarray(img.resize((px, px), Image.Resampling.BOX), dtype=np.float32) / 255.0


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw the scene: a softly graded background tint, then every object in scene order."""
    if size < 8:
        raise ValueError("images must be at least 8 pixels wide")
    big = size * SUPERSAMPLE
    bg = np.array(scene.background, dtype=np.float32)
    # A gentle top-to-bottom gradient, so the background is never one flat colour.
    ramp = np.linspace(1.0, 0.94, big, dtype=np.float32)[:, None, None]
    canvas = np.broadcast_to(bg * ramp, (big, big, 3)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(canvas), "RGB")
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        draw_shape(draw, obj.shape, obj.x * big, obj.y * big, obj.size * big, COLOURS[obj.colour])
    return img.resize((size, size), Image.Resampling.BOX)
