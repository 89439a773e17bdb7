"""The `python -m spatial.world` command-line contract other tools rely on."""

import json
import subprocess
import sys

import datasets
import pytest
from PIL import Image

from spatial.world import check, parse_prompt


def run(*args, check_rc=True):
    proc = subprocess.run([sys.executable, "-m", "spatial.world", *args], capture_output=True, text=True, timeout=300)
    if check_rc:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_prompts_prints_n_readable_prompts_deterministically():
    out = run("prompts", "--n", "25", "--seed", "4").stdout.splitlines()
    assert len(out) == 25
    assert all(parse_prompt(p) for p in out)
    assert out == run("prompts", "--n", "25", "--seed", "4").stdout.splitlines()
    assert out != run("prompts", "--n", "25", "--seed", "5").stdout.splitlines()


def test_pairs_folder_loads_with_datasets_as_image_columns(tmp_path):
    out = tmp_path / "pairs"
    run("pairs", "--n", "30", "--seed", "2", "--out", str(out), "--size", "48")
    ds = datasets.load_dataset(str(out))
    assert set(ds) == {"train", "test"}
    assert ds["train"].num_rows == 27 and ds["test"].num_rows == 3
    features = ds["train"].features
    assert isinstance(features["chosen"], datasets.Image) and isinstance(features["rejected"], datasets.Image)
    row = ds["train"][0]
    assert {"prompt", "perturbed_prompt", "perturbation", "scene", "rejected_scene"} <= set(row)
    assert row["chosen"].size == (48, 48)
    assert check(row["chosen"], row["prompt"]).satisfied
    assert not check(row["rejected"], row["prompt"]).satisfied
    assert check(row["rejected"], row["perturbed_prompt"]).satisfied
    json.loads(row["scene"])


def test_pairs_are_byte_identical_for_the_same_seed(tmp_path):
    run("pairs", "--n", "8", "--seed", "9", "--out", str(tmp_path / "a"))
    run("pairs", "--n", "8", "--seed", "9", "--out", str(tmp_path / "b"))
    for split in ("train", "test"):
        assert (tmp_path / "a" / split / "metadata.jsonl").read_bytes() == (tmp_path / "b" / split / "metadata.jsonl").read_bytes()


def test_check_prints_one_json_object_per_image(tmp_path):
    prompt = "a red circle left of a blue square"
    run("render", "--prompt", prompt, "--out", str(tmp_path / "ok.png"), "--size", "64")
    Image.new("RGB", (64, 64), (240, 240, 240)).save(tmp_path / "blank.png")
    lines = run("check", "--prompt", prompt, str(tmp_path / "ok.png"), str(tmp_path / "blank.png")).stdout.splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["satisfied"] for r in results] == [True, False]
    assert {"objects", "relations"} <= set(results[-1])


@pytest.mark.parametrize(
    "args, message",
    [
        (("prompts", "--n", "0"), "must be positive"),
        (("prompts", "--n", "-3"), "must be positive"),
        (("prompts", "--n", "ten"), "whole number"),
        (("check", "--prompt", "a zebra left of a blue square", "x.png"), "'zebra'"),
        (("check", "--prompt", "a red circle left of a blue square", "/nonexistent.png"), "no such image"),
        (("check", "--prompt", "a red circle left of a blue square", __file__), "cannot read"),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_line(args, message):
    proc = run(*args, check_rc=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
