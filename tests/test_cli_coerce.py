"""Form and command-line values become typed config fields; an empty text box means "not given"."""

from dataclasses import dataclass

import pytest

from spatial.cli import coerce


@dataclass
class Example:
    source: str = ""
    """Empty: generate one."""
    name: str = "run"
    seed: int = 0
    model: str | None = None


def test_an_empty_value_keeps_an_empty_default_or_clears_an_optional_field():
    assert coerce(Example, "source", "") == ""
    assert coerce(Example, "model", "") is None
    assert coerce(Example, "source", None) == ""


def test_an_empty_value_for_a_field_that_needs_one_is_refused_by_name():
    with pytest.raises(ValueError, match="name needs a value"):
        coerce(Example, "name", "")
    with pytest.raises(ValueError, match="seed needs a value"):
        coerce(Example, "seed", None)


def test_values_are_converted_to_the_declared_type():
    assert coerce(Example, "seed", "3") == 3 and coerce(Example, "seed", 3.0) == 3
    with pytest.raises(ValueError, match="whole number"):
        coerce(Example, "seed", 2.5)


@pytest.mark.parametrize("value", ["nan", float("nan"), "inf", float("-inf"), "1e999"])
def test_numbers_that_are_not_finite_are_refused_by_name(value):
    with pytest.raises(ValueError, match="seed must be a finite number"):
        coerce(Example, "seed", value)


def test_text_in_a_number_field_is_refused_by_name():
    with pytest.raises(ValueError, match="seed must be a number, got 'ten'"):
        coerce(Example, "seed", "ten")


@pytest.mark.parametrize("entry", ["pretrain_toy", "pretrain_toy_vlm", "sample_pairs", "train_reward", "train_grpo",
                                   "evaluate generator", "evaluate reward", "launch_hub_job"])  # fmt: skip
def test_every_training_command_prints_its_help(entry):
    # field docs quote percentages ("85% vs 78%"); argparse would read them as format specifiers
    import subprocess
    import sys
    from pathlib import Path

    run = subprocess.run([sys.executable, "-m", *f"training.{entry}".split(), "--help"], cwd=Path(__file__).parents[1],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-500:]
    assert run.stdout.startswith("usage: ")


def test_help_shows_the_defaults_a_run_without_preset_gets():
    from spatial.cli import build_parser
    from spatial.rl.config import PRESETS, GRPOConfig

    text = " ".join(build_parser(GRPOConfig, presets=PRESETS).format_help().split())
    assert "Defaults shown are the 'toy' preset's" in text
    options = text.split("options:")[1]
    for flag, value in (("beta", PRESETS["toy"]["beta"]), ("top_k", PRESETS["toy"]["top_k"]), ("group_size", 8)):
        assert f"(default: {value})" in options.split(f"--{flag} ")[1].split(" --")[0], flag
