"""Sample a prompt and a scene that satisfies every relation in it.

The layout is drawn first and the relations are read off it (only those that hold clearly), so
every sampled prompt is satisfiable and consistent by construction.
"""

from __future__ import annotations

import functools
import itertools
import random
from dataclasses import dataclass

from .grammar import format_prompt, parse_prompt
from .scene import RECTANGLE_ASPECT, CLEAR, PromptSpec, Relation, Scene, SceneObject, direction_cosine, relation_holds
from .vocab import COLOURS, OPPOSITE, RELATIONS, SHAPES


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the procedural world. The defaults are what the shipped toy models were trained on."""

    min_objects: int = 2
    """Fewest named objects in a prompt."""
    max_objects: int = 4
    """Most named objects in a prompt."""
    max_relations: int = 3
    """Most relations in a prompt (at least objects - 1, so every object is related)."""
    min_size: float = 0.16
    """Smallest object, as a fraction of the image side."""
    max_size: float = 0.26
    """Largest object, as a fraction of the image side."""
    max_distractors: int = 2
    """Most unnamed objects added to a scene."""
    distractor_prob: float = 0.4
    """Chance that a scene gets any distractors at all."""
    gap: float = 0.04
    """Smallest empty space between two objects' boxes, as a fraction of the side."""
    border: float = 0.03
    """Objects keep this far from the image edge."""
    snap: int = 0
    """When positive, every object's box is moved to start on a grid of 1/snap of the side (8 at 32 px:
    the toy FLUX's 4 px token grid), so the same shape always covers the same tokens the same way."""
    background: tuple[int, int, int] | None = None
    """One background tint for every scene instead of a random light one."""
    canonical: bool = False
    """Move the named objects to the one layout the prompt's relations pick out (`canonical_layout`):
    a function of the prompt instead of one draw among many, for training data whose images the
    relation words decide. The prompt is the same either way; scenes where that layout fails keep
    their drawn one."""
    mirror_prob: float = 0.0
    """Chance that a scene's named objects are turned half a turn about the image centre after layout,
    so every relation the prompt states is shown reversed: captions whose spatial words are wrong, as
    in web alt-text and in flip augmentation that leaves captions alone. The prompt is the same either
    way (drawn from its own stream), so a model trained on it names the right objects but learns the
    layout only as a majority vote."""
    rare_relations: tuple[str, ...] = ()
    """Relation words that captions seldom use: each is stated as its opposite with the roles swapped
    ("B above A" for "A below B") except with chance `rare_relation_prob`. The two
    wordings ask for the same layouts, so a model trained on it sees every layout but some spatial
    words only rarely, as in web captions where a few phrasings are common and the rest a long tail."""
    rare_relation_prob: float = 1.0
    """Chance that a relation in `rare_relations` keeps its own word (1: no effect)."""


@dataclass(frozen=True)
class Example:
    """A prompt, what it asks for, and a scene that satisfies it."""

    prompt: str
    spec: PromptSpec
    scene: Scene


def separated(a: SceneObject, b: SceneObject, gap: float) -> bool:
    """True when the boxes are apart by at least `gap` along x or along y."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1) >= gap


def place(rng: random.Random, colour: str, shape: str, size: float, cfg: WorldConfig, named=True):
    lo, hi = cfg.border + size / 2, 1 - cfg.border - size / 2
    x, y = rng.uniform(lo, hi), rng.uniform(lo, hi)
    return snapped(SceneObject(colour, shape, x, y, size, named), cfg)


def snapped(o: SceneObject, cfg: WorldConfig) -> SceneObject:
    """The object moved so its box edges lie on the world's grid (unchanged when `snap` is 0)."""
    if not cfg.snap:
        return o
    half_h = o.size / 2 * (RECTANGLE_ASPECT if o.shape == "rectangle" else 1.0)
    x = _snap(o.x, o.size / 2, cfg.snap, cfg.border)
    y = _snap(o.y, half_h, cfg.snap, cfg.border)
    return SceneObject(o.colour, o.shape, x, y, o.size, o.named)


def _snap(centre: float, half: float, snap: int, border: float) -> float:
    """The centre whose box edge lies on the nearest grid line, kept inside the border."""
    centre = round((centre - half) * snap) / snap + half
    while centre - half < border - 1e-9:
        centre += 1 / snap
    while centre + half > 1 - border + 1e-9:
        centre -= 1 / snap
    return centre


def background(rng: random.Random) -> tuple[int, int, int]:
    """A light tint: never saturated enough to be mistaken for an object colour."""
    base = rng.randint(228, 250)
    return tuple(min(255, base + rng.randint(-12, 5)) for _ in range(3))


def clear_relations(objs: list[SceneObject]) -> dict[tuple[int, int], list[str]]:
    """For each ordered pair, the relations that hold with margin CLEAR."""
    out = {}
    for i, a in enumerate(objs):
        for j, b in enumerate(objs):
            if i != j:
                rels = [r for r in RELATIONS if direction_cosine(a.box, b.box, r) >= CLEAR]
                if rels:
                    out[(i, j)] = rels
    return out


def add_distractors(rng, objs: list[SceneObject], cfg: WorldConfig) -> list[SceneObject]:
    """Unnamed objects, never a (colour, shape) that the prompt names."""
    if rng.random() >= cfg.distractor_prob:
        return objs
    taken = {(o.colour, o.shape) for o in objs}
    for _ in range(rng.randint(1, cfg.max_distractors)):
        choices = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in taken]
        colour, shape = rng.choice(choices)
        for _ in range(50):
            d = place(rng, colour, shape, rng.uniform(cfg.min_size, cfg.max_size), cfg, False)
            if all(separated(d, o, cfg.gap) for o in objs):
                objs = objs + [d]
                taken.add((colour, shape))
                break
    return objs


def _spanning_relations(rng, n: int, clear: dict, max_rel: int) -> list[tuple[int, int]] | None:
    """A random tree over n objects using only clearly-related pairs, plus maybe one extra edge."""
    order = list(range(n))
    rng.shuffle(order)
    edges: list[tuple[int, int]] = []
    connected = [order[0]]
    for k in order[1:]:
        partners = [j for j in connected if (k, j) in clear]
        if not partners:
            return None
        edges.append((k, rng.choice(partners)))
        connected.append(k)
    extra = [(i, j) for (i, j) in clear if i < j and (i, j) not in edges and (j, i) not in edges]
    if len(edges) < max_rel and extra and rng.random() < 0.35:
        edges.append(rng.choice(extra))
    return edges


def _ranks(n: int, edges: list[tuple[int, int]]) -> list[int | None]:
    """Longest-path depth of each object in a DAG of (before, after) edges; None for objects on no edge."""
    depth: list[int | None] = [None] * n
    touched = {i for e in edges for i in e}
    for i in touched:
        depth[i] = 0
    for _ in range(n):  # relaxation; n rounds settle any DAG over n nodes
        for a, b in edges:
            depth[b] = max(depth[b], depth[a] + 1)
    return depth


def _levels(depth: list[int | None], lo: float, hi: float) -> list[float | None]:
    top = max((d for d in depth if d is not None), default=0)
    return [None if d is None else (lo + hi) / 2 if top == 0 else lo + (hi - lo) * d / top for d in depth]


def _align(pos: list[float | None], partners: list[tuple[int, int]], middle: float) -> list[float]:
    """An object no relation places on this axis lines up with the objects it is related to along
    the other axis (so "A left of B" puts them side by side), else sits at the middle."""
    out = list(pos)
    for i, p in enumerate(pos):
        if p is None:
            near = [pos[j] for a, b in partners for j in ((b,) if a == i else (a,) if b == i else ()) if pos[j] is not None]
            out[i] = sum(near) / len(near) if near else middle
    return out


def canonical_layout(spec: PromptSpec, objects: list[SceneObject], cfg: WorldConfig) -> list[SceneObject] | None:
    """The named objects moved to the layout their relations decide, a function of the prompt.

    The ideal is rank-based: along x, objects ordered by their left/right relations (longest chain) and
    spread evenly across the image, likewise along y; an object no relation places on an axis lines up
    with its partners on the other axis (`_align`). The layout is the assignment of objects to distinct
    cells of a 3 x 3 grid (the most that fit side by side at the toy world's size) nearest that ideal
    among those where every relation holds clearly and no two objects touch; so "A above B, C above B"
    still gets a layout, with A and C side by side. None when no assignment works (the caller keeps
    its drawn layout)."""
    size = max(o.size for o in objects)
    lo, hi = cfg.border + size / 2, 1 - cfg.border - size / 2
    found = _grid_layout(spec.relations, tuple((o.shape, o.size) for o in objects), lo, hi, cfg)
    if found is None:
        return None
    return [SceneObject(o.colour, o.shape, x, y, o.size, o.named) for o, (x, y) in zip(objects, found)]


def _ideal(relations, n: int, lo: float, hi: float) -> list[tuple[float, float]]:
    xs = [(r.subject, r.object) if r.predicate == "left of" else (r.object, r.subject)
          for r in relations if r.predicate in ("left of", "right of")]  # fmt: skip
    ys = [(r.subject, r.object) if r.predicate == "above" else (r.object, r.subject)
          for r in relations if r.predicate in ("above", "below")]  # fmt: skip
    px, py = _levels(_ranks(n, xs), lo, hi), _levels(_ranks(n, ys), lo, hi)
    return list(zip(_align(px, ys, (lo + hi) / 2), _align(py, xs, (lo + hi) / 2)))


@functools.lru_cache(maxsize=4096)  # pretraining asks for the same few hundred relation structures
def _grid_layout(relations, shapes, lo: float, hi: float, cfg: WorldConfig):
    ideal = _ideal(relations, len(shapes), lo, hi)
    levels = (lo, (lo + hi) / 2, hi)
    cells = [(x, y) for y in levels for x in levels]
    best_cost, best = float("inf"), None
    for assignment in itertools.permutations(range(len(cells)), len(shapes)):
        cost = sum((cells[k][0] - ix) ** 2 + (cells[k][1] - iy) ** 2 for k, (ix, iy) in zip(assignment, ideal))
        if cost >= best_cost - 1e-12:  # ties keep the first in enumeration order
            continue
        moved = [snapped(SceneObject("", shape, *cells[k], size), cfg) for k, (shape, size) in zip(assignment, shapes)]
        if all(relation_holds(moved[r.subject].box, moved[r.object].box, r.predicate, CLEAR) for r in relations) and all(
            separated(a, b, cfg.gap) for i, a in enumerate(moved) for b in moved[i + 1 :]
        ):
            best_cost, best = cost, tuple((o.x, o.y) for o in moved)
    return best


def sample_example(seed: int, cfg: WorldConfig = WorldConfig()) -> Example:
    """A deterministic (prompt, spec, scene) for a seed."""
    rng = random.Random(f"spatialworld:{seed}")
    n = rng.randint(cfg.min_objects, min(cfg.max_objects, cfg.max_relations + 1))
    kinds = [(c, s) for c in COLOURS for s in SHAPES]
    while True:
        picked = rng.sample(kinds, n)
        objs: list[SceneObject] = []
        for colour, shape in picked:
            for _ in range(50):
                o = place(rng, colour, shape, rng.uniform(cfg.min_size, cfg.max_size), cfg)
                if all(separated(o, p, cfg.gap) for p in objs):
                    objs.append(o)
                    break
        if len(objs) < n:
            continue
        clear = clear_relations(objs)
        edges = _spanning_relations(rng, n, clear, cfg.max_relations)
        if edges is None:
            continue
        relations = []
        for i, j in edges:
            if rng.random() < 0.5:
                i, j = j, i
            relations.append((i, rng.choice(clear[(i, j)]), j))
        if cfg.rare_relations:  # its own stream, so the scene and the rest of the prompt stay the same
            keep = random.Random(f"spatialworld-rare:{seed}")
            relations = [(j, OPPOSITE[p], i) if p in cfg.rare_relations and keep.random() >= cfg.rare_relation_prob
                         else (i, p, j) for i, p, j in relations]  # fmt: skip
        rng.shuffle(relations)
        # Number objects in order of first mention, as the prompt text will read.
        spec = PromptSpec(tuple((o.colour, o.shape) for o in objs), tuple(Relation(i, p, j) for i, p, j in relations))
        mention = spec.mention_order()
        spec, named = spec.renumbered(mention), [objs[k] for k in mention]
        tint = background(rng)  # drawn even when fixed, so the rng stream (and the prompt) stays the same
        if cfg.canonical:
            named = canonical_layout(spec, named, cfg) or named
        if cfg.mirror_prob and random.Random(f"spatialworld-mirror:{seed}").random() < cfg.mirror_prob:
            named = [snapped(SceneObject(o.colour, o.shape, 1 - o.x, 1 - o.y, o.size, o.named), cfg) for o in named]
        scene = Scene(tuple(add_distractors(rng, named, cfg)), tuple(cfg.background) if cfg.background else tint, seed)
        return Example(format_prompt(spec, rng), spec, scene)


def sample_prompts(n: int, seed: int, cfg: WorldConfig = WorldConfig()) -> list[str]:
    """n prompts; prompt i comes from example seed `seed * 1_000_003 + i` (disjoint across seeds)."""
    return [sample_example(example_seed(seed, i), cfg).prompt for i in range(n)]


def example_seed(seed: int, index: int) -> int:
    """The example seed of item `index` of a run with seed `seed`; distinct runs never collide
    for index < 1,000,003."""
    return seed * 1_000_003 + index


def spec_holds(spec: PromptSpec, scene: Scene, threshold: float = CLEAR) -> list[bool]:
    """Ground truth: does each relation of `spec` hold in `scene` (named objects by name)?"""
    by_name = {(o.colour, o.shape): o for o in scene.objects}
    out = []
    for r in spec.relations:
        a, b = by_name[spec.objects[r.subject]], by_name[spec.objects[r.object]]
        out.append(direction_cosine(a.box, b.box, r.predicate) >= threshold)
    return out


def scene_for(spec: PromptSpec, seed: int = 0, cfg: WorldConfig = WorldConfig(), tries: int = 50000) -> Scene:
    """A scene that clearly satisfies any readable prompt (e.g. one a user typed).

    Raises ValueError when no layout is found, which in practice means the relations contradict
    each other ("A left of B" and "B left of A"). Rejection sampling: 5,000 tries missed 6 of 400
    sampled (so satisfiable) prompts; 50,000 missed none, and a contradiction costs ~0.7 s to refuse.
    """
    rng = random.Random(f"scene_for:{seed}")
    for _ in range(tries):
        objs: list[SceneObject] = []
        for colour, shape in spec.objects:
            o = place(rng, colour, shape, rng.uniform(cfg.min_size, cfg.max_size), cfg)
            if not all(separated(o, p, cfg.gap) for p in objs):
                break
            objs.append(o)
        else:
            scene = Scene(tuple(objs), background(rng), seed)
            if all(spec_holds(spec, scene)):
                return scene
    raise ValueError("no layout satisfies every relation in this prompt; do some contradict each other?")


def weight_by_object_count(prompts: list[str], weights: dict[int, int], seed: int = 0) -> list[str]:
    """Each prompt repeated `weights[number of named objects]` times (missing counts: once), shuffled
    with `random.Random(seed)`: a training list that draws hard many-object prompts more often."""
    for count, w in weights.items():
        if not isinstance(w, int) or w < 0:
            raise ValueError(f"weight for {count}-object prompts must be a whole number >= 0, got {w!r}")
    out = [p for p in prompts for _ in range(weights.get(len(parse_prompt(p).objects), 1))]
    if not out:
        raise ValueError("every prompt has weight 0: nothing to train on")
    random.Random(seed).shuffle(out)
    return out
