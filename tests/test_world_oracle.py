"""The oracle judges images from pixels alone and agrees with SpatialWorld ground truth."""

import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from spatial.world import PromptError, check, example_seed, render, sample_pair
from spatial.world.render import render as render_scene
from spatial.world.scene import Scene, SceneObject
from spatial.world import shapes


def _pairs(n, seed=11):
    return [sample_pair(example_seed(seed, i)) for i in range(n)]


def test_accepts_every_chosen_and_rejects_every_rejected_render():
    for pair in _pairs(150):
        assert check(render(pair.example.scene, 64), pair.prompt).satisfied, pair.prompt
        assert not check(render(pair.perturbation.scene, 64), pair.prompt).satisfied, pair.prompt


def test_rejected_render_satisfies_its_own_perturbed_prompt():
    for pair in _pairs(60, seed=12):
        assert check(render(pair.perturbation.scene, 64), pair.perturbation.prompt).satisfied


@pytest.mark.parametrize(
    "degrade",
    [
        lambda im: im.filter(ImageFilter.GaussianBlur(1.0)),
        lambda im: Image.fromarray(
            (np.asarray(im, np.float32) + np.random.default_rng(0).normal(0, 12, (64, 64, 3))).clip(0, 255).astype(np.uint8)
        ),
        lambda im: im.resize((32, 32), Image.Resampling.BILINEAR).resize((64, 64), Image.Resampling.BILINEAR),
    ],
    ids=["blur", "noise", "down32"],
)
def test_stays_right_on_degraded_renders(degrade):
    right = 0
    pairs = _pairs(60, seed=13)
    for pair in pairs:
        right += check(degrade(render(pair.example.scene, 64)), pair.prompt).satisfied
        right += not check(degrade(render(pair.perturbation.scene, 64)), pair.prompt).satisfied
    assert right / (2 * len(pairs)) >= 0.97


def test_works_at_other_resolutions_and_from_a_path(tmp_path):
    pair = sample_pair(3)
    for size in (32, 128, 512):
        assert check(render(pair.example.scene, size), pair.prompt).satisfied
    path = tmp_path / "img.png"
    render(pair.example.scene, 64).save(path)
    assert check(str(path), pair.prompt).satisfied


def test_a_missing_object_leaves_its_relations_unknown():
    scene = Scene((SceneObject("red", "circle", 0.25, 0.5, 0.2),), (240, 240, 240))
    result = check(render_scene(scene, 64), "a red circle left of a blue square")
    assert not result.satisfied
    assert [o["found"] for o in result.objects] == [True, False]
    assert result.relations[0]["verdict"] == "unknown"


@pytest.mark.parametrize("size", [32, 64, 256])
def test_the_soft_edge_of_one_colour_is_not_found_as_another(size):
    # Orange blended half-way into a light background is nearer yellow than orange; red's edge is
    # nearer purple. Those fringes must not be found as objects the image does not hold.
    for shape in ("rectangle", "circle", "diamond", "square", "triangle"):
        for drawn, named in (("orange", "yellow"), ("red", "purple")):
            scene = Scene((SceneObject(drawn, shape, 0.3, 0.5, 0.25), SceneObject("blue", "circle", 0.75, 0.5, 0.2)), (240, 240, 240))
            result = check(render_scene(scene, size), f"a {named} {shape} left of a blue circle")
            assert result.objects[0]["found"] is False, (size, drawn, shape)
            assert check(render_scene(scene, size), f"a {drawn} {shape} left of a blue circle").satisfied


def test_a_wrong_shape_of_the_right_colour_is_not_the_named_object():
    scene = Scene((SceneObject("red", "square", 0.25, 0.5, 0.22), SceneObject("blue", "square", 0.75, 0.5, 0.22)), (240, 240, 240))
    result = check(render_scene(scene, 64), "a red circle left of a blue square")
    assert result.objects[0]["found"] is False and not result.satisfied


def test_a_violated_relation_is_false_not_unknown():
    scene = Scene((SceneObject("red", "circle", 0.75, 0.5, 0.2), SceneObject("blue", "square", 0.25, 0.5, 0.2)), (240, 240, 240))
    result = check(render_scene(scene, 64), "a red circle left of a blue square")
    assert result.relations[0]["verdict"] == "false"


def test_objects_the_prompt_did_not_name_are_listed_as_extras_and_do_not_fail_it():
    named = (SceneObject("red", "circle", 0.25, 0.5, 0.2), SceneObject("blue", "square", 0.75, 0.5, 0.2))
    extra = SceneObject("yellow", "triangle", 0.5, 0.15, 0.2)
    alone = check(render_scene(Scene(named, (240, 240, 240)), 64), "a red circle left of a blue square")
    crowded = check(render_scene(Scene(named + (extra,), (240, 240, 240)), 64), "a red circle left of a blue square")
    assert alone.satisfied and alone.extras == []
    assert crowded.satisfied and [e["name"] for e in crowded.extras] == ["yellow triangle"]


def test_a_second_copy_of_a_named_object_is_an_extra():
    scene = Scene((SceneObject("red", "circle", 0.2, 0.5, 0.2), SceneObject("blue", "square", 0.5, 0.5, 0.2),
                   SceneObject("red", "circle", 0.8, 0.5, 0.2)), (240, 240, 240))  # fmt: skip
    result = check(render_scene(scene, 64), "a red circle left of a blue square")
    assert [e["name"] for e in result.extras] == ["red circle"]


def test_a_blank_image_finds_nothing():
    result = check(Image.new("RGB", (64, 64), (235, 235, 235)), "a red circle left of a blue square")
    assert not result.satisfied and not any(o["found"] for o in result.objects)


def test_unknown_words_are_reported_not_guessed():
    with pytest.raises(PromptError, match="'zebra'"):
        check(Image.new("RGB", (64, 64)), "a zebra above a red circle")


def test_shape_classifier_holds_up_on_fresh_degraded_single_objects():
    X, y = shapes.training_set(250, seed=99)
    assert (shapes.classify(X).argmax(1) == y).mean() >= 0.95
