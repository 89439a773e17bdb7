"""Scenes, relations and the geometric rule that decides a relation.

Coordinates are normalised to [0, 1] with x to the right and y downwards (image convention), so
"above" means a smaller y. An object's `size` is the width of its bounding box (square for every shape but the rectangle).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from .vocab import AXIS, OPPOSITE, RELATIONS

# GenEval decides "A left of B" when the centre offset, shrunk by POSITION_THRESHOLD times the
# summed box sizes, points within 60 degrees of the relation's direction (cos >= 0.5).
# Source: djghosh13/geneval, evaluation/evaluate_images.py (POSITION_THRESHOLD = 0.1).
POSITION_THRESHOLD = 0.1
HOLDS = 0.5  # the oracle's decision threshold on the direction cosine
CLEAR = 0.75  # scenes we sample satisfy named relations at least this clearly
CLEARLY_NOT = 0.25  # a perturbation breaks a relation only to below this
# A rectangle is as wide as its size and this fraction of it tall (a wide bar: its aspect ratio
# survives blur, so it stays distinguishable from the other shapes at 32 px).
RECTANGLE_ASPECT = 0.5


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    x: float
    y: float
    size: float
    named: bool = True

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the object's bounding box."""
        h = self.size / 2
        v = h * RECTANGLE_ASPECT if self.shape == "rectangle" else h
        return (self.x - h, self.y - v, self.x + h, self.y + v)


@dataclass(frozen=True)
class Relation:
    """`subject` <predicate> `object`, both indices into the prompt's object list."""

    subject: int
    predicate: str
    object: int

    def __post_init__(self):
        if self.predicate not in RELATIONS:
            raise ValueError(f"unknown relation {self.predicate!r}")
        if self.subject == self.object:
            raise ValueError("a relation needs two different objects")


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for: named objects (colour, shape) and relations between them."""

    objects: tuple[tuple[str, str], ...]
    relations: tuple[Relation, ...]

    def names(self) -> list[str]:
        return [f"{c} {s}" for c, s in self.objects]

    def mention_order(self) -> list[int]:
        """Object indices in order of first mention in the relations (how the prompt text reads)."""
        order: list[int] = []
        for r in self.relations:
            order += [k for k in (r.subject, r.object) if k not in order]
        return order

    def renumbered(self, order: list[int]) -> PromptSpec:
        """The same request with object `order[k]` renamed k (objects not in `order` dropped)."""
        new = {old: k for k, old in enumerate(order)}
        return PromptSpec(tuple(self.objects[k] for k in order),
                          tuple(Relation(new[r.subject], r.predicate, new[r.object]) for r in self.relations))  # fmt: skip

    def describe(self) -> list[str]:
        n = self.names()
        return [f"{n[r.subject]} {r.predicate} {n[r.object]}" for r in self.relations]

    def meaning(self) -> tuple[frozenset, frozenset]:
        """What the prompt asks for, whatever its wording or order: its objects, and its relations each
        stated one way ("B below A" is "A above B"). Two prompts with the same meaning are one request."""
        stated = set()
        for r in self.relations:
            a, b, predicate = self.objects[r.subject], self.objects[r.object], r.predicate
            if predicate in ("right of", "below"):
                a, b, predicate = b, a, OPPOSITE[predicate]
            stated.add((a, predicate, b))
        return frozenset(self.objects), frozenset(stated)

    def to_dict(self) -> dict:
        return {
            "objects": [list(o) for o in self.objects],
            "relations": [asdict(r) for r in self.relations],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PromptSpec":
        return cls(
            objects=tuple(tuple(o) for o in d["objects"]),
            relations=tuple(Relation(**r) for r in d["relations"]),
        )


@dataclass(frozen=True)
class Scene:
    """Named objects first (in prompt order), then distractors; plus the background tint."""

    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int] = (240, 240, 240)
    seed: int = 0
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def named(self) -> tuple[SceneObject, ...]:
        return tuple(o for o in self.objects if o.named)

    def to_json(self) -> str:
        return json.dumps(
            {
                "objects": [asdict(o) for o in self.objects],
                "background": list(self.background),
                "seed": self.seed,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> "Scene":
        d = json.loads(text)
        return cls(
            objects=tuple(SceneObject(**o) for o in d["objects"]),
            background=tuple(d["background"]),
            seed=d.get("seed", 0),
        )


def direction_cosine(box_a, box_b, predicate: str) -> float:
    """How strongly A lies in `predicate` direction of B: cosine in [-1, 1], 0 when they overlap.

    Boxes are (x0, y0, x1, y1). The centre offset is shrunk per axis by POSITION_THRESHOLD times
    the summed box extents (so touching, large objects need a larger offset), then projected on
    the relation's unit direction and divided by the offset's length.
    """
    ax, ay = (box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2
    bx, by = (box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2
    dx, dy = ax - bx, ay - by
    norm = math.hypot(dx, dy)
    if norm < 1e-9:
        return 0.0
    wsum = (box_a[2] - box_a[0]) + (box_b[2] - box_b[0])
    hsum = (box_a[3] - box_a[1]) + (box_b[3] - box_b[1])
    rx = math.copysign(max(abs(dx) - POSITION_THRESHOLD * wsum, 0.0), dx)
    ry = math.copysign(max(abs(dy) - POSITION_THRESHOLD * hsum, 0.0), dy)
    along = {"left of": -rx, "right of": rx, "above": -ry, "below": ry}[predicate]
    return along / norm


def relation_holds(box_a, box_b, predicate: str, threshold: float = HOLDS) -> bool:
    return direction_cosine(box_a, box_b, predicate) >= threshold


def same_axis(a: str, b: str) -> bool:
    return AXIS[a] == AXIS[b]
