"""bench/relation_knowledge.py reads an evaluation's verdicts; its numbers go into docs/TRAINING.md."""

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("relation_knowledge", Path(__file__).parents[1] / "bench" / "relation_knowledge.py")
relation_knowledge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(relation_knowledge)


def _row(relation: str, subject_box, object_box, verdict: str, objects_ok=True, spatial_ok=True) -> dict:
    return {
        "objects_ok": objects_ok,
        "spatial_ok": spatial_ok,
        "objects": [{"name": "red circle", "found": subject_box is not None, "box": subject_box},
                    {"name": "blue square", "found": object_box is not None, "box": object_box}],
        "relations": [{"subject": "red circle", "relation": relation, "object": "blue square", "verdict": verdict}],
    }


LEFT, RIGHT, TOP, BOTTOM = [0, 0.4, 0.2, 0.6], [0.8, 0.4, 1, 0.6], [0.4, 0, 0.6, 0.2], [0.4, 0.8, 0.6, 1]


def test_relations_with_a_missing_object_are_left_out_and_offsets_point_along_the_word():
    rows = [
        _row("left of", LEFT, RIGHT, "true"),
        _row("left of", RIGHT, LEFT, "false", spatial_ok=False),
        _row("below", BOTTOM, TOP, "true"),
        _row("below", None, TOP, "false", objects_ok=False, spatial_ok=False),
    ]
    stats = relation_knowledge.relation_stats(rows)
    assert stats["relations_with_both_objects"] == 3
    assert stats["holds_given_both_found"] == pytest.approx(2 / 3, abs=1e-4)
    assert stats["per_relation"]["left of"] == {"n": 2, "holds": 0.5, "mean_offset_along_direction": 0.0, "offset_positive": 0.5}
    assert stats["per_relation"]["below"]["mean_offset_along_direction"] == pytest.approx(0.8)


def test_split_by_words_separates_prompts_that_use_the_rare_words():
    rows = [
        _row("below", BOTTOM, TOP, "true"),
        _row("below", None, TOP, "false", objects_ok=False, spatial_ok=False),
        _row("above", TOP, BOTTOM, "true"),
        _row("above", BOTTOM, TOP, "false", spatial_ok=False),
    ]
    split = relation_knowledge.split_by_words(rows, ["below", "right of"])
    assert split["with_words"] == {"images": 2, "object_accuracy": 0.5, "spatial_accuracy": 0.5}
    assert split["without_words"] == {"images": 2, "object_accuracy": 1.0, "spatial_accuracy": 0.5}


def test_the_cli_refuses_a_word_the_oracle_does_not_know(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text(json.dumps(_row("above", TOP, BOTTOM, "true")) + "\n")
    with pytest.raises(SystemExit):
        relation_knowledge.main(["--results", str(tmp_path), "--split_words", "beneath"])
    assert "unknown relation words ['beneath']" in capsys.readouterr().err
    assert relation_knowledge.main(["--results", str(tmp_path), "--split_words", "below"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"]["with_words"]["images"] == 0 and out["split"]["without_words"]["images"] == 1


def test_evaluation_images_split_by_whether_the_run_trained_on_what_their_prompt_asks(tmp_path):
    spec = importlib.util.spec_from_file_location("prompt_overlap", Path(__file__).parents[1] / "bench" / "prompt_overlap.py")
    overlap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overlap)
    train = tmp_path / "train.txt"
    train.write_text("a blue square right of a red circle\n")  # asks what the first row asks, in other words
    rows = [{"prompt": "a red circle left of a blue square", "objects_ok": True, "spatial_ok": True},
            {"prompt": "a red circle above a blue square", "objects_ok": True, "spatial_ok": False},
            {"prompt": "a red circle above a blue square", "objects_ok": False, "spatial_ok": False}]  # fmt: skip
    seen = {overlap.parse_prompt(p).meaning() for p in overlap.training_prompts(str(train))}
    parts = overlap.split(rows, seen)
    assert parts["trained on"] == {"prompts": 1, "images": 1, "object_accuracy": 1.0, "spatial_accuracy": 1.0}
    assert parts["not trained on"] == {"prompts": 1, "images": 2, "object_accuracy": 0.5, "spatial_accuracy": 0.0}
    assert len(overlap.training_prompts("seed:101:10")) == 10


def test_object_stats_count_named_objects_found_and_split_object_accuracy_by_how_many_a_prompt_names():
    two = _row("left of", LEFT, RIGHT, "true")
    three = _row("left of", None, RIGHT, "false", objects_ok=False, spatial_ok=False)
    three["objects"].append({"name": "green triangle", "found": True, "box": TOP})
    stats = relation_knowledge.object_stats([two, three])
    assert stats["named_objects"] == 5 and stats["named_objects_found"] == 0.8
    assert stats["object_accuracy_by_count"] == {"2": {"images": 1, "object_accuracy": 1.0},
                                                 "3": {"images": 1, "object_accuracy": 0.0}}  # fmt: skip
