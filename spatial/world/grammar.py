"""Prompt text <-> PromptSpec.

`format_prompt` writes a spec in one of several natural phrasings; `parse_prompt` reads any of
them back. Words outside the vocabulary are reported, never guessed.
"""

from __future__ import annotations

import random
import re

from .scene import PromptSpec, Relation
from .vocab import COLOURS, CONNECTORS, FRAMES, PHRASES, SHAPES, VERBS, words


class PromptError(ValueError):
    """A prompt that SpatialWorld cannot read. The message is one line, fit for a user."""


def indefinite_article(word: str) -> str:
    """"an" before the colours that start with a vowel sound ("an orange"), else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def _article(colour: str, first: bool) -> str:
    return indefinite_article(colour) if first else "the"


def format_prompt(spec: PromptSpec, rng: random.Random | None = None) -> str:
    """Render a spec as text. With an rng the phrasing varies; without, it is canonical."""
    pick = (lambda xs: rng.choice(xs)) if rng is not None else (lambda xs: xs[0])
    frame = pick(FRAMES)
    verb = "" if frame else pick(VERBS)
    connector = pick(CONNECTORS)
    seen: set[int] = set()
    clauses = []
    for rel in spec.relations:
        parts = []
        for idx in (rel.subject, rel.object):
            colour, shape = spec.objects[idx]
            parts.append(f"{_article(colour, idx not in seen)} {colour} {shape}")
            seen.add(idx)
        clauses.append(f"{parts[0]} {verb}{pick(PHRASES[rel.predicate])} {parts[1]}")
    return frame + connector.join(clauses)


_NP = r"(?:a|an|the) (\w+) (\w+)"
_PHRASE_TO_RELATION = {p: rel for rel, ps in PHRASES.items() for p in ps}
# Longest phrasing first so "to the left of" wins over "left of".
_PHRASE_RE = "|".join(sorted(map(re.escape, _PHRASE_TO_RELATION), key=len, reverse=True))
_CLAUSE = re.compile(rf"^{_NP} (?:is |sits )?({_PHRASE_RE}) {_NP}$")
_SPLIT = re.compile(r"\s*(?:,\s*and|;|,\s*while|,|\band\b|\bwhile\b|\.)\s+")
_KNOWN = set(words())


def unknown_words(text: str) -> list[str]:
    # Whole words in any script (`réd`, not the pieces `r` and `d`), digits too.
    tokens = re.findall(r"\w+", text.lower())
    return sorted({t for t in tokens if t not in _KNOWN})


def parse_prompt(text: str) -> PromptSpec:
    """Read a prompt back into objects and relations, or raise PromptError saying why."""
    if not isinstance(text, str) or not text.strip():
        raise PromptError("the prompt is empty")
    clean = " ".join(text.lower().strip().rstrip(".").split())
    unknown = unknown_words(clean)
    if unknown:
        raise PromptError(
            "the prompt has words SpatialWorld does not know: " + ", ".join(repr(w) for w in unknown)
        )
    for frame in sorted(FRAMES, key=len, reverse=True):
        if frame and clean.startswith(frame):
            clean = clean[len(frame) :]
            break
    objects: list[tuple[str, str]] = []
    relations: list[Relation] = []
    for clause in _SPLIT.split(clean):
        clause = clause.strip()
        if not clause:
            continue
        m = _CLAUSE.match(clause)
        if not m:
            raise PromptError(f"cannot read {clause!r} as '<object> <relation> <object>'")
        c1, s1, phrase, c2, s2 = m.groups()
        idx = []
        for colour, shape in ((c1, s1), (c2, s2)):
            if colour not in COLOURS or shape not in SHAPES:
                raise PromptError(f"{colour} {shape!s} is not a '<colour> <shape>' object")
            if (colour, shape) not in objects:
                objects.append((colour, shape))
            idx.append(objects.index((colour, shape)))
        if idx[0] == idx[1]:
            raise PromptError(f"{clause!r} relates an object to itself")
        relations.append(Relation(idx[0], _PHRASE_TO_RELATION[phrase], idx[1]))
    if not relations:
        raise PromptError("the prompt names no spatial relation")
    return PromptSpec(objects=tuple(objects), relations=tuple(relations))

