"""Prompt grammar: every generated prompt reads back to exactly its relations."""

import random

import pytest

from spatial.world import PromptError, format_prompt, parse_prompt, sample_example, words
from spatial.world.scene import PromptSpec, Relation
from spatial.world.vocab import COLOURS, PHRASES, SHAPES


def test_every_generated_prompt_parses_back_to_its_spec():
    for seed in range(400):
        ex = sample_example(seed)
        assert parse_prompt(ex.prompt) == ex.spec, ex.prompt


def test_prompts_have_two_to_four_objects_and_one_to_three_relations():
    seen_objects, seen_relations = set(), set()
    for seed in range(400):
        spec = sample_example(seed).spec
        seen_objects.add(len(spec.objects))
        seen_relations.add(len(spec.relations))
    assert seen_objects == {2, 3, 4}
    assert seen_relations == {1, 2, 3}


def test_every_phrasing_of_every_relation_reads_back():
    for relation, phrases in PHRASES.items():
        for phrase in phrases:
            spec = parse_prompt(f"a red circle {phrase} a blue square")
            assert spec.relations == (Relation(0, relation, 1),), phrase


def test_canonical_and_varied_phrasings_agree():
    spec = PromptSpec((("red", "circle"), ("blue", "square"), ("green", "triangle")),
                      (Relation(0, "left of", 1), Relation(2, "below", 1)))  # fmt: skip
    assert parse_prompt(format_prompt(spec)) == spec
    rng = random.Random(0)
    assert {parse_prompt(format_prompt(spec, rng)) for _ in range(50)} == {spec}


def test_articles_follow_first_mention():
    spec = PromptSpec((("orange", "circle"), ("blue", "square")), (Relation(0, "above", 1), Relation(1, "right of", 0)))
    text = format_prompt(spec)
    assert text.startswith("an orange circle") and "the blue square" in text


def test_vocabulary_is_closed_and_sufficient():
    assert len(COLOURS) >= 6 and len(SHAPES) >= 5
    vocab = set(words())
    for seed in range(100):
        for token in sample_example(seed).prompt.replace(",", " ").replace(";", " ").split():
            assert token in vocab


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a zebra left of a blue square", "'zebra'"),
        ("a red circle", "cannot read"),
        ("a red circle left of the red circle", "itself"),
        ("a red blue left of a green square", "not a '<colour> <shape>'"),
        ("a réd círcle left of a blue square", "'círcle', 'réd'"),  # whole words, not their ASCII pieces
        ("a red circle left of 2 blue squares", "'2', 'squares'"),
    ],
)
def test_unreadable_prompts_are_refused_with_a_reason(text, message):
    with pytest.raises(PromptError, match=message):
        parse_prompt(text)


def test_case_and_trailing_period_do_not_matter():
    assert parse_prompt("A Red Circle to the left of a blue square.") == parse_prompt("a red circle left of a blue square")


def test_prompts_that_ask_for_the_same_thing_in_other_words_have_one_meaning():
    same = ["a red circle left of a blue square", "a blue square to the right of a red circle",
            "an image of a blue square right of a red circle"]  # fmt: skip
    assert len({parse_prompt(p).meaning() for p in same}) == 1
    assert parse_prompt("a red circle above a blue square").meaning() == parse_prompt("a blue square below a red circle").meaning()
    assert parse_prompt("a red circle left of a blue square").meaning() != parse_prompt("a blue square left of a red circle").meaning()
    two = "a red circle left of a blue square; a green diamond above the blue square"
    swapped = "a green diamond above a blue square, and a red circle left of the blue square"
    assert parse_prompt(two).meaning() == parse_prompt(swapped).meaning()
