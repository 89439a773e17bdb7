"""Pairs from the toy generator's own samples, graded by the oracle: the pairing rule, the folder a
reward run reads, and the command line's answers to bad input."""

import json
import random
from pathlib import Path

import pytest

from spatial.generation.config import GenerationConfig
from spatial.generation.service import load_pipeline
from spatial.reward.data import load_pairs
from spatial.reward.sample_pairs import SamplePairsConfig, choose_pairs, grade, write_sample_pairs
from spatial.world import check, sample_prompts
from training import sample_pairs as cli


class Verdict:
    def __init__(self, found, verdicts, extras=0):
        self.objects = [{"found": f} for f in found]
        self.relations = [{"verdict": v} for v in verdicts]
        self.extras = [{"name": "yellow circle"}] * extras


def test_a_grade_counts_found_objects_and_true_relations_each_as_a_fraction():
    assert grade(Verdict([True, True], ["true"])) == 2.0
    assert grade(Verdict([True, False], ["unknown"])) == 0.5
    assert grade(Verdict([True, True, True], ["true", "false"])) == 1.5


def test_unrequested_objects_cost_grade_only_when_a_penalty_is_set():
    assert grade(Verdict([True, True], ["true"], extras=2)) == 2.0
    assert grade(Verdict([True, True], ["true"], extras=2), extra_penalty=0.5) == 1.0
    # a complete image that added one object now loses a pair at the default margin to a clean one
    assert choose_pairs([grade(Verdict([True, True], ["true"]), 0.5), grade(Verdict([True, True], ["true"], 1), 0.5)],
                        n=1, margin=0.5, rng=random.Random(0)) == [(0, 1)]  # fmt: skip


def test_pairs_respect_the_margin_put_the_better_sample_first_and_use_a_sample_at_most_twice():
    grades = [2.0, 2.0, 2.0, 0.0, 1.0, 1.75]
    pairs = choose_pairs(grades, n=6, margin=0.5, rng=random.Random(0))
    assert pairs and all(grades[a] - grades[b] >= 0.5 for a, b in pairs)
    uses = [i for ab in pairs for i in ab]
    assert max(uses.count(i) for i in set(uses)) <= 2
    assert choose_pairs(grades, 6, 0.5, random.Random(0)) == pairs
    assert choose_pairs([1.0, 1.2, 0.9], 3, 0.5, random.Random(0)) == []
    # Margin 0 still means a strict preference: no sample paired with itself, no tie.
    assert sorted(choose_pairs([1.0, 1.0, 0.5], 6, 0.0, random.Random(0))) == [(0, 2), (1, 2)]


@pytest.fixture(scope="module")
def toy_pipe():
    return load_pipeline(GenerationConfig.for_preset("toy", device="cpu"))


def test_the_folder_holds_graded_pairs_of_one_prompt_that_reward_training_reads(toy_pipe, tmp_path):
    prompts = sample_prompts(5, 7)
    config = SamplePairsConfig(out=str(tmp_path / "pairs"), sde_samples=3, ode_steps="8,2", pairs_per_prompt=2,
                               test_fraction=0.2)  # fmt: skip
    counts = write_sample_pairs(toy_pipe, prompts, config)
    rows = load_pairs(str(tmp_path / "pairs"), "train") + load_pairs(str(tmp_path / "pairs"), "test")
    assert len(rows) == counts["train"] + counts["test"] > 0
    records = [json.loads(x) for s in ("train", "test") for x in (tmp_path / "pairs" / s / "metadata.jsonl").read_text().splitlines()]
    test_prompts = {r["prompt"] for r in records[counts["train"]:]}
    assert test_prompts <= {prompts[-1]}  # the last fifth of the prompts is the test split
    for row, rec in zip(rows, records):
        prompt, chosen, rejected = row.decode()
        # The saved PNGs are what was graded: the oracle gives them the recorded grades again.
        assert grade(check(chosen, prompt)) == pytest.approx(rec["chosen_grade"], abs=1e-4)
        assert grade(check(rejected, prompt)) == pytest.approx(rec["rejected_grade"], abs=1e-4)
        assert rec["chosen_grade"] - rec["rejected_grade"] >= config.margin
        assert {rec["chosen_sampler"], rec["rejected_sampler"]} <= {"sde-8", "ode-8", "ode-2"}
    # Same config, same folder contents.
    again = SamplePairsConfig(**{**config.__dict__, "out": str(tmp_path / "again")})
    write_sample_pairs(toy_pipe, prompts, again)
    for split in ("train", "test"):
        assert (tmp_path / "again" / split / "metadata.jsonl").read_text() == (tmp_path / "pairs" / split / "metadata.jsonl").read_text()


@pytest.mark.parametrize("args, message", [
    (["--ode_steps", "8,x"], "ode_steps must be whole numbers"),
    (["--sde_samples", "0", "--ode_steps", "8"], "at least two samples"),
    (["--margin", "3"], "margin must be in [0, 2]"),
])  # fmt: skip
def test_the_command_line_refuses_bad_settings_in_one_line(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["--out", str(tmp_path / "x"), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not Path(tmp_path / "x").exists()


def test_the_command_line_names_a_missing_lora(capsys, tmp_path):
    code = cli.main(["--out", str(tmp_path / "x"), "--num_prompts", "1", "--lora", str(tmp_path / "nope"), "--device", "cpu"])
    assert code == 1
    assert "nope" in capsys.readouterr().err
