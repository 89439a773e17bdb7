"""GRPO training prompt files weighted by object count (`training.write_prompts`): hard many-object
prompts drawn more often, reproducibly, and bad weights refused with one line."""

import json
from collections import Counter

import pytest

from spatial.world import parse_prompt, sample_prompts, weight_by_object_count
from training import write_prompts


def objects(p: str) -> int:
    return len(parse_prompt(p).objects)


def test_each_prompt_is_repeated_by_its_weight_and_the_order_is_seeded():
    prompts = sample_prompts(60, 5)
    lines = weight_by_object_count(prompts, {2: 1, 3: 2, 4: 4}, seed=0)
    copies = Counter(lines)
    assert set(copies) == set(prompts)
    assert all(copies[p] == {2: 1, 3: 2, 4: 4}[objects(p)] * prompts.count(p) for p in prompts)
    assert lines == weight_by_object_count(prompts, {2: 1, 3: 2, 4: 4}, seed=0)
    assert lines != weight_by_object_count(prompts, {2: 1, 3: 2, 4: 4}, seed=1)


def test_counts_without_a_weight_appear_once_and_weight_zero_drops_them():
    prompts = sample_prompts(40, 6)
    lines = weight_by_object_count(prompts, {2: 0})
    assert sorted(lines) == sorted(p for p in prompts if objects(p) != 2)
    with pytest.raises(ValueError, match="nothing to train on"):
        weight_by_object_count(prompts, {2: 0, 3: 0, 4: 0})
    with pytest.raises(ValueError, match="whole number"):
        weight_by_object_count(prompts, {2: -1})


def test_the_cli_writes_a_file_train_grpo_reads(tmp_path, capsys):
    out = tmp_path / "prompts.txt"
    assert write_prompts.main(["--out", str(out), "--num_prompts", "50", "--weights", "2:1,4:3"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = out.read_text().splitlines()
    assert report["lines"] == len(lines) and sum(report["by_objects"].values()) == len(lines)
    from spatial.rl.config import GRPOConfig
    from spatial.rl.run import load_prompts

    assert load_prompts(GRPOConfig(prompts=str(out))) == lines


@pytest.mark.parametrize("weights", ["2:a", "2-1", "x:1"])
def test_malformed_weights_are_refused_with_one_line(tmp_path, capsys, weights):
    assert write_prompts.main(["--out", str(tmp_path / "p.txt"), "--weights", weights]) == 2
    assert "weights must look like" in capsys.readouterr().err
    assert not (tmp_path / "p.txt").exists()


def test_the_default_file_is_byte_for_byte_the_one_the_shipped_lora_trained_on(tmp_path, capsys):
    import hashlib

    # sha256 of runs/prompts-weighted.txt as the shipped run read it (docs/TRAINING.md, "Spatial-RL").
    write_prompts.main(["--out", str(tmp_path / "p.txt")])
    data = (tmp_path / "p.txt").read_bytes()
    assert data.count(b"\n") == 9254
    assert hashlib.sha256(data).hexdigest() == "32d70b9e5219eab063fcdc69e6efa1089776f37253552f7637fe9edfb7a09345"
