"""`python -m training.train_grpo`: refuses bad configurations before compute, and runs end to end
on a FluxPipeline folder (a tiny random one saved in the Hub layout) with the oracle reward."""

import json
import re
import subprocess
import sys

import pytest

from tests.helpers.tiny_flux import tiny_flux_pipeline


def run(*args):
    return subprocess.run([sys.executable, "-m", "training.train_grpo", *args], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--group_size", "1"], "group_size must be at least 2"),
        (["--group_size", "4", "--top_k", "3"], "2k <= group_size"),
        (["--prompts", "/nonexistent.txt"], "does not exist"),
        (["--reward", "oracle", "--base_model", "/nonexistent/flux"], "no FluxPipeline folder"),
        (["--learning_rate", "abc"], "invalid float"),
        (["--preset", "nope"], "unknown preset"),
        (["--reward", "oracle", "--reward_model", "assets/toy/spatialscore"], "reward_model applies to reward=spatialscore only"),
        (["--prompts", "/tmp"], "is a folder; give a text file"),
    ],
)
def test_bad_configurations_fail_fast_with_one_line(args, message):
    proc = run(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]


def test_prompts_the_reward_cannot_judge_are_refused(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle left of a blue square\na zebra above a red circle\n")
    proc = run("--prompts", str(prompts), "--reward", "oracle")
    assert proc.returncode == 2 and "prompt 2" in proc.stderr and "'zebra'" in proc.stderr


def test_a_prompt_file_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes("a red circle left of a blue square\n".encode("utf-16"))
    proc = run("--prompts", str(prompts), "--reward", "oracle")
    assert proc.returncode == 2 and "is not UTF-8 text" in proc.stderr and "Traceback" not in proc.stderr


def test_an_output_dir_that_holds_another_run_is_refused_before_anything_loads(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"iteration": 4, "config": {"seed": 0}}))
    proc = run("--reward", "oracle", "--output_dir", str(out))
    assert proc.returncode == 2 and "already holds a run (checkpoint-4)" in proc.stderr
    proc = run("--reward", "oracle", "--output_dir", str(out), "--resume", "true", "--seed", "7")
    assert proc.returncode == 2 and "checkpoint of another run (seed 0 there, 7 now)" in proc.stderr


@pytest.mark.slow
def test_a_short_run_writes_metrics_eval_images_and_a_final_lora(tmp_path):
    base = tmp_path / "flux"
    tiny_flux_pipeline().save_pretrained(base)
    out = tmp_path / "run"
    proc = run("--base_model", str(base), "--reward", "oracle", "--output_dir", str(out), "--iterations", "2",
               "--group_size", "4", "--top_k", "1", "--prompts_per_iteration", "1", "--sample_steps", "2",
               "--eval_steps", "2", "--eval_every", "2", "--eval_prompts", "1", "--resolution", "32",
               "--lora_rank", "4", "--lora_alpha", "8")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["total_steps"] == 2
    assert "eval_accuracy" in rows[-1]
    assert (out / "final" / "pytorch_lora_weights.safetensors").exists()
    assert list((out / "eval" / "iter-00002").glob("*.png"))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("noise_level", 0.0, "noise_level must be in (0, 2]"),
        ("sample_steps", 1, "sample_steps must be at least 2"),
        ("clip_range", -0.5, "clip_range must be positive"),
        ("clip_range", float("nan"), "clip_range must be a finite number"),
        ("beta", float("inf"), "beta must be a finite number"),
        ("preset", "bogus", "preset must be one of toy, flux-dev"),
        ("reward", "bogus", "reward: no scorer 'bogus'"),
        ("eval_prompts", -3, "eval_prompts must be zero (no evaluation) or more"),
        ("adv_clip", 0.0, "adv_clip must be positive"),
        ("max_grad_norm", -1.0, "max_grad_norm must be positive"),
        ("beta", -1.0, "beta must be zero or more"),
        ("guidance", -3.0, "guidance must be zero or more"),
        ("ema_decay", 1.5, "ema_decay must be in [0, 1)"),
    ],
)
def test_settings_that_would_give_nan_or_a_one_sided_gradient_are_refused(field, value, message):
    from spatial.rl.config import GRPOConfig

    with pytest.raises(ValueError, match=re.escape(message)):
        GRPOConfig(**{field: value}).validate()
    GRPOConfig().validate()  # the defaults are fine


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_grpo_refuses_sharded_launches_it_cannot_honour(kind):
    # An FSDP or DeepSpeed accelerator needs GPUs, which this machine lacks: a stand-in states the
    # distributed type, the one thing build_trainer reads before refusing (no model is loaded).
    from types import SimpleNamespace

    import torch
    from accelerate.utils import DistributedType

    from spatial.rl.config import GRPOConfig
    from spatial.rl.run import RunConfigError, build_trainer

    launched = SimpleNamespace(distributed_type=DistributedType[kind], device=torch.device("cpu"))
    with pytest.raises(RunConfigError, match=f"data parallel only.*ddp.yaml, not {kind}"):
        build_trainer(GRPOConfig(reward="oracle"), accelerator=launched)
