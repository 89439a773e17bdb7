"""Perturbations: alter one or more relations of a prompt and re-lay the scene to match.

The perturbed scene keeps the background, the distractors and every object's colour, shape and
size; only positions change. It satisfies the perturbed prompt and violates the original one.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from .grammar import format_prompt
from .sampler import Example, WorldConfig, separated
from .scene import CLEAR, CLEARLY_NOT, PromptSpec, Relation, Scene, direction_cosine
from .vocab import AXIS, OPPOSITE, RELATIONS

KINDS = ("swap", "flip", "axis", "move")


@dataclass(frozen=True)
class Perturbation:
    kind: str
    prompt: str
    spec: PromptSpec
    scene: Scene
    changed: tuple[int, ...]
    """Indices of the original prompt's relations that no longer hold."""


def _cos(scene: Scene, spec: PromptSpec, rel: Relation) -> float:
    objs = {(o.colour, o.shape): o for o in scene.objects}
    a, b = objs[spec.objects[rel.subject]], objs[spec.objects[rel.object]]
    return direction_cosine(a.box, b.box, rel.predicate)


def _valid(orig: PromptSpec, new: PromptSpec, scene: Scene, cfg: WorldConfig) -> tuple | None:
    """The broken relations if `scene` clearly satisfies `new` and clearly breaks `orig`, else None.

    Every original relation must be either clearly true or clearly false, so the rejected image
    is never ambiguous for a judge.
    """
    objs = scene.objects
    if any(not separated(a, b, cfg.gap) for i, a in enumerate(objs) for b in objs[i + 1 :]):
        return None
    if any(_cos(scene, new, r) < CLEAR for r in new.relations):
        return None
    broken = []
    for k, r in enumerate(orig.relations):
        c = _cos(scene, orig, r)
        if c <= CLEARLY_NOT:
            broken.append(k)
        elif c < CLEAR:
            return None
    return tuple(broken) or None


def _canonical(spec: PromptSpec) -> PromptSpec:
    return spec.renumbered(spec.mention_order())


def _move(scene: Scene, name: tuple[str, str], rng, cfg: WorldConfig) -> Scene:
    objs = list(scene.objects)
    k = next(i for i, o in enumerate(objs) if (o.colour, o.shape) == name)
    lo, hi = cfg.border + objs[k].size / 2, 1 - cfg.border - objs[k].size / 2
    objs[k] = dataclasses.replace(objs[k], x=rng.uniform(lo, hi), y=rng.uniform(lo, hi))
    return dataclasses.replace(scene, objects=tuple(objs))


def _relocate(ex: Example, new: PromptSpec, movers, rng, cfg, tries=300):
    """Move one of `movers` (object names) until the scene fits `new` and breaks `ex.spec`."""
    for name in movers:
        for _ in range(tries):
            scene = _move(ex.scene, name, rng, cfg)
            broken = _valid(ex.spec, new, scene, cfg)
            if broken is not None:
                return scene, broken
    return None


def perturb(ex: Example, kind: str, rng: random.Random, cfg: WorldConfig = WorldConfig()):
    """One perturbation of `kind`, or None when this example admits none of that kind."""
    spec = ex.spec
    rels = list(range(len(spec.relations)))
    rng.shuffle(rels)
    for k in rels:
        r = spec.relations[k]
        a, b = spec.objects[r.subject], spec.objects[r.object]
        if kind == "swap":
            # Exchange the two objects' places; the prompt exchanges their names to match.
            objs = list(ex.scene.objects)
            ia = next(i for i, o in enumerate(objs) if (o.colour, o.shape) == a)
            ib = next(i for i, o in enumerate(objs) if (o.colour, o.shape) == b)
            oa, ob = objs[ia], objs[ib]
            objs[ia] = dataclasses.replace(oa, x=ob.x, y=ob.y)
            objs[ib] = dataclasses.replace(ob, x=oa.x, y=oa.y)
            scene = dataclasses.replace(ex.scene, objects=tuple(objs))
            swap = {r.subject: r.object, r.object: r.subject}
            new = PromptSpec(
                spec.objects,
                tuple(
                    Relation(swap.get(q.subject, q.subject), q.predicate, swap.get(q.object, q.object))
                    for q in spec.relations
                ),
            )
            broken = _valid(spec, new, scene, cfg)
            found = (scene, broken) if broken is not None else None
        elif kind in ("flip", "axis"):
            if kind == "flip":
                pred = OPPOSITE[r.predicate]
            else:
                pred = rng.choice([p for p in RELATIONS if AXIS[p] != AXIS[r.predicate]])
            new_rels = list(spec.relations)
            new_rels[k] = Relation(r.subject, pred, r.object)
            new = PromptSpec(spec.objects, tuple(new_rels))
            found = _relocate(ex, new, rng.sample([a, b], 2), rng, cfg)
        elif kind == "move":
            # Move one object anywhere; every relation it breaks is rewritten to what now holds.
            mover = rng.choice([a, b])
            found = None
            for _ in range(300):
                scene = _move(ex.scene, mover, rng, cfg)
                new_rels = []
                for q in spec.relations:
                    if _cos(scene, spec, q) >= CLEAR:
                        new_rels.append(q)
                        continue
                    now = [p for p in RELATIONS if _cos(scene, spec, Relation(q.subject, p, q.object)) >= CLEAR]
                    if not now:
                        break
                    new_rels.append(Relation(q.subject, rng.choice(now), q.object))
                else:
                    new = PromptSpec(spec.objects, tuple(new_rels))
                    broken = _valid(spec, new, scene, cfg)
                    if broken is not None:
                        found = (scene, broken)
                        break
        else:
            raise ValueError(f"unknown perturbation {kind!r}; choose from {', '.join(KINDS)}")
        if found is not None:
            scene, broken = found
            new = _canonical(new)
            return Perturbation(kind, format_prompt(new, rng), new, scene, broken)
    return None
