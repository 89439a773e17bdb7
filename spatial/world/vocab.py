"""The closed vocabulary of SpatialWorld: colours, shapes and relation phrasings.

Everything that can appear in a SpatialWorld prompt is listed here, so tokenizers for the toy
models and the prompt parser are built from one source.
"""

from __future__ import annotations

# Palette chosen so every pair of colours is far apart in RGB (min distance ~95), which keeps
# colour segmentation reliable on blurred, noisy generator output.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (250, 140, 10),
    "yellow": (236, 214, 30),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "purple": (148, 60, 189),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "rectangle")

# Canonical relation names. Each is decided on box centres, like GenEval's position rule.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

OPPOSITE: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}

AXIS: dict[str, str] = {"left of": "x", "right of": "x", "above": "y", "below": "y"}

# Surface phrasings of each relation; the first is the canonical one.
PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "on the left side of", "left of"),
    "right of": ("to the right of", "on the right side of", "right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "lower than"),
}

# Words that may open a prompt, link an object to its relation, or join clauses.
FRAMES: tuple[str, ...] = ("", "a picture of ", "an image of ", "a scene with ")
VERBS: tuple[str, ...] = ("", "is ", "sits ")
CONNECTORS: tuple[str, ...] = (", and ", "; ", ", while ")
ARTICLES: tuple[str, ...] = ("a", "an", "the")


def words() -> list[str]:
    """Every word a SpatialWorld prompt can contain, sorted (for building tokenizers)."""
    vocab: set[str] = set(COLOURS) | set(SHAPES) | set(ARTICLES)
    for text in [*(p for ps in PHRASES.values() for p in ps), *FRAMES, *VERBS, *CONNECTORS]:
        vocab.update(text.replace(",", " ").replace(";", " ").split())
    return sorted(vocab)


PUNCTUATION: tuple[str, ...] = (",", ";", ".")
