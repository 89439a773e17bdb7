"""Sampling, rendering and perturbations of SpatialWorld scenes."""

import numpy as np
import pytest

from spatial.world import KINDS, perturb, render, sample_example, sample_pair, spec_holds
from dataclasses import replace

from spatial.world.sampler import WorldConfig, canonical_layout, sample_prompts, scene_for, separated
from spatial.world.scene import CLEAR, CLEARLY_NOT, SceneObject, direction_cosine
from spatial.world.grammar import parse_prompt

import random
from collections import Counter


def test_same_seed_same_example_and_identical_pixels():
    a, b = sample_example(42), sample_example(42)
    assert a == b
    assert np.array_equal(np.asarray(render(a.scene, 64)), np.asarray(render(b.scene, 64)))


def test_different_seeds_give_different_examples():
    assert len({sample_example(s).prompt for s in range(50)}) > 45


def test_sampled_scenes_satisfy_every_relation_clearly_and_keep_objects_apart():
    cfg = WorldConfig()
    for seed in range(200):
        ex = sample_example(seed)
        assert all(spec_holds(ex.spec, ex.scene, CLEAR))
        objs = ex.scene.objects
        assert all(separated(a, b, cfg.gap) for i, a in enumerate(objs) for b in objs[i + 1 :])
        assert all(0.0 <= v <= 1.0 for o in objs for v in o.box)


GRID = WorldConfig(min_size=0.25, max_size=0.25, snap=8, border=0.0, background=(240, 240, 240), distractor_prob=0.0)


def test_snapped_scenes_put_every_box_edge_on_the_grid_and_still_hold_their_relations():
    for seed in range(200):
        ex = sample_example(seed, GRID)
        assert all(spec_holds(ex.spec, ex.scene, CLEAR))
        assert ex.scene.background == (240, 240, 240)
        for o in ex.scene.objects:
            assert all(abs(v * 8 - round(v * 8)) < 1e-9 for v in o.box), o.box
            assert all(0.0 <= v <= 1.0 for v in o.box)


def test_canonical_layouts_are_a_function_of_the_prompt_and_keep_every_relation():
    canonical = replace(GRID, canonical=True)
    moved = 0
    for seed in range(200):
        drawn, ex = sample_example(seed, GRID), sample_example(seed, canonical)
        assert ex.prompt == drawn.prompt and all(spec_holds(ex.spec, ex.scene, CLEAR))
        objs = ex.scene.objects
        assert all(separated(a, b, GRID.gap) for i, a in enumerate(objs) for b in objs[i + 1 :])
        moved += ex.scene != drawn.scene
    assert moved > 190  # nearly every scene takes the canonical layout; the rest keep their drawn one


def test_mirrored_scenes_show_every_stated_relation_reversed_and_keep_the_prompt():
    canonical = replace(GRID, canonical=True)
    noisy = replace(canonical, mirror_prob=0.3)
    mirrored = 0
    for seed in range(300):
        clean, ex = sample_example(seed, canonical), sample_example(seed, noisy)
        assert ex.prompt == clean.prompt and ex.spec == clean.spec
        if ex.scene == clean.scene:
            assert all(spec_holds(ex.spec, ex.scene, CLEAR))
            continue
        mirrored += 1
        # Each relation exactly the other way: a point reflection negates every offset.
        by_name = {(o.colour, o.shape): o for o in ex.scene.objects}
        for r in ex.spec.relations:
            a, b = by_name[ex.spec.objects[r.subject]], by_name[ex.spec.objects[r.object]]
            assert direction_cosine(a.box, b.box, r.predicate) <= -CLEAR
        assert sorted((o.colour, o.shape) for o in ex.scene.objects) == sorted((o.colour, o.shape) for o in clean.scene.objects)
        for o in ex.scene.objects:
            assert all(abs(v * 8 - round(v * 8)) < 1e-9 for v in o.box) and all(0.0 <= v <= 1.0 for v in o.box)
    assert 60 <= mirrored <= 120  # about 30% of 300


def test_rare_relation_words_are_restated_as_their_opposites_and_the_scene_still_fits():
    rare = replace(WorldConfig(), rare_relations=("below", "right of"), rare_relation_prob=0.1)
    words = {cfg: Counter() for cfg in (WorldConfig(), rare)}
    for seed in range(600):
        for cfg in words:
            ex = sample_example(seed, cfg)
            assert all(spec_holds(ex.spec, ex.scene, CLEAR))
            words[cfg].update(r.predicate for r in ex.spec.relations)
        drawn = lambda cfg: sorted(map(repr, sample_example(seed, cfg).scene.objects))  # order: first mention
        assert drawn(rare) == drawn(WorldConfig())  # only the wording changes
    common, tail = words[WorldConfig()], words[rare]
    assert sum(tail.values()) == sum(common.values())
    for word, opposite in (("below", "above"), ("right of", "left of")):
        assert tail[word] < 0.2 * common[word]  # about 10% of them keep their word
        assert tail[opposite] + tail[word] == common[opposite] + common[word]


def test_every_held_out_prompt_has_a_canonical_layout_at_the_toy_size():
    # Evaluation prompts come from the default world; the toy FLUX learns one layout for each at its size.
    canonical = replace(GRID, canonical=True)
    for prompt in sample_prompts(200, 9001):
        spec = parse_prompt(prompt)
        placed = [SceneObject(c, s, 0.5, 0.5, 0.25) for c, s in spec.objects]
        layout = canonical_layout(spec, placed, canonical)
        assert layout is not None, prompt
        assert layout == canonical_layout(spec, [replace(o, x=0.1, y=0.9) for o in placed], canonical)
        boxes = [o.box for o in layout]
        assert all(direction_cosine(boxes[r.subject], boxes[r.object], r.predicate) >= CLEAR for r in spec.relations)


def test_two_objects_on_the_same_side_of_a_third_sit_side_by_side():
    spec = parse_prompt("a red circle above a blue square, and a green triangle above the blue square")
    placed = [SceneObject(c, s, 0.5, 0.5, 0.25) for c, s in spec.objects]
    red, blue, green = canonical_layout(spec, placed, replace(GRID, canonical=True))
    assert red.y == green.y < blue.y and red.x != green.x


def test_a_canonical_layout_spreads_related_objects_and_lines_them_up():
    spec = parse_prompt("a red circle left of a blue square, and the blue square above a green triangle")
    placed = [SceneObject(c, s, 0.5, 0.5, 0.25) for c, s in spec.objects]
    red, blue, green = canonical_layout(spec, placed, replace(GRID, snap=0))
    assert (red.x, blue.x) == (0.125, 0.875) and red.y == blue.y  # side by side, as far apart as fits
    assert (blue.y, green.y) == (0.125, 0.875) and green.x == blue.x  # one above the other
    contradiction = parse_prompt("a red circle left of a blue square, and the blue square left of the red circle")
    assert canonical_layout(contradiction, placed[:2], GRID) is None


def test_rendering_knobs_leave_the_default_prompts_unchanged():
    # The held-out prompts of every evaluation are drawn with the default world; a fixed background draws
    # the same random numbers, so a seed's prompt does not depend on it.
    plain = WorldConfig(background=(240, 240, 240))
    assert [sample_example(s).prompt for s in range(50)] == [sample_example(s, plain).prompt for s in range(50)]


def test_distractors_are_never_objects_the_prompt_names():
    with_distractors = 0
    for seed in range(200):
        ex = sample_example(seed)
        named = set(ex.spec.objects)
        extra = [o for o in ex.scene.objects if not o.named]
        with_distractors += bool(extra)
        assert all((o.colour, o.shape) not in named for o in extra)
    assert with_distractors > 20


def test_render_any_resolution_with_background_variation():
    ex = sample_example(3)
    for size in (16, 32, 64, 200):
        assert render(ex.scene, size).size == (size, size)
    tints = {sample_example(s).scene.background for s in range(30)}
    assert len(tints) > 10


@pytest.mark.parametrize("kind", KINDS)
def test_perturbation_breaks_the_original_and_satisfies_the_perturbed_prompt(kind):
    done = 0
    for seed in range(60):
        ex = sample_example(seed)
        p = perturb(ex, kind, random.Random(seed))
        if p is None:
            continue
        done += 1
        original = spec_holds(ex.spec, p.scene, CLEAR)
        assert not all(original)
        assert all(spec_holds(p.spec, p.scene, CLEAR))
        assert p.changed and all(not original[k] for k in p.changed)
        # Broken relations are clearly broken, not borderline.
        objs = {(o.colour, o.shape): o for o in p.scene.objects}
        for k in p.changed:
            r = ex.spec.relations[k]
            a, b = objs[ex.spec.objects[r.subject]], objs[ex.spec.objects[r.object]]
            assert direction_cosine(a.box, b.box, r.predicate) <= CLEARLY_NOT
        # Everything but positions is kept.
        assert p.scene.background == ex.scene.background
        assert sorted((o.colour, o.shape, o.size, o.named) for o in p.scene.objects) == sorted(
            (o.colour, o.shape, o.size, o.named) for o in ex.scene.objects
        )
        assert set(p.spec.objects) == set(ex.spec.objects)
        assert parse_prompt(p.prompt) == p.spec
    assert done >= 20, f"{kind} applied to only {done} of 60 examples"


def test_flip_and_axis_change_exactly_one_relation_text():
    for kind in ("flip", "axis"):
        for seed in range(30):
            ex = sample_example(seed)
            p = perturb(ex, kind, random.Random(seed))
            if p is None:
                continue
            # Same objects, same relation count, exactly one relation's wording changed.
            assert len(p.spec.relations) == len(ex.spec.relations)
            assert len(set(ex.spec.describe()) ^ set(p.spec.describe())) == 2


def test_pairs_are_deterministic_and_cover_all_kinds():
    assert sample_pair(5).perturbation == sample_pair(5).perturbation
    assert {sample_pair(s).perturbation.kind for s in range(80)} == set(KINDS)


def test_scene_for_a_typed_prompt_and_refusal_of_contradictions():
    spec = parse_prompt("a red circle left of a blue square, and the blue square above a green triangle")
    assert all(spec_holds(spec, scene_for(spec, seed=1)))
    with pytest.raises(ValueError, match="contradict"):
        scene_for(parse_prompt("a red circle left of a blue square; the blue square left of the red circle"), tries=300)
