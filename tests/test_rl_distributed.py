"""GRPO under `accelerate launch` with 2 CPU processes (gloo) equals 1 process doing the same work:
each process samples whole groups, and gradients are averaged across processes."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def _launch(out, processes, per_process, *extra, timeout=600):
    if processes == 1:
        cmd = [sys.executable, "-m", "tests.helpers.grpo_one_iteration", str(out), str(per_process), *extra]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/cpu_2proc.yaml",
               "-m", "tests.helpers.grpo_one_iteration", str(out), str(per_process), *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _run(out, processes, per_process):
    _launch(out, processes, per_process)
    return torch.load(out / "grads.pt"), load_file(str(out / "final" / "pytorch_lora_weights.safetensors"))


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_take_the_same_gradient_step_as_one(tmp_path):
    # Each process starts from a different random state (the helper seeds by rank): rank 0's LoRA wins.
    grads_one, lora_one = _run(tmp_path / "one", 1, 2)
    grads_two, lora_two = _run(tmp_path / "two", 2, 1)
    assert grads_one.keys() == grads_two.keys() and lora_one.keys() == lora_two.keys()
    nonzero = 0
    for name, g in grads_one.items():
        assert torch.allclose(g, grads_two[name], rtol=1e-4, atol=1e-8), name
        nonzero += int(g.abs().sum() > 0)
    assert nonzero > 0
    # The logged iteration covers every process's samples, as the one process's does.
    (one,), (two,) = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    for key in ("kept", "nfe_sampling", "nfe_training", "nfe_total"):
        assert one[key] == two[key], key
    assert one["kept"] == 4  # top-1 and bottom-1 of each of the two groups
    for key in ("reward_mean", "reward_std", "loss", "kl", "clip_fraction"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-9), key
    # Adam's first step is lr * sign(grad): equal wherever the gradient is not vanishingly small.
    for key in lora_one:
        same = torch.isclose(lora_one[key], lora_two[key], atol=1e-6)
        assert same.float().mean() > 0.9, key


def test_sigterm_on_one_rank_stops_every_rank_after_the_same_iteration(tmp_path):
    # Without agreement rank 1 would wait in save's barrier while rank 0 ran iteration 2: a hang.
    proc = _launch(tmp_path / "run", 2, 1, "stop-on-rank-1", timeout=300)
    assert (tmp_path / "run" / "checkpoint-1" / "trainer_state.json").is_file()
    assert not (tmp_path / "run" / "final").exists()
    assert "stopping on SIGTERM after iteration 1" in proc.stdout
