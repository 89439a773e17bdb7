"""`accelerate launch` with 2 CPU processes (gloo) trains SpatialScore like 1 process on the same global batch:
each process scores its half of the batch with the same per-pair noise, and gradients are averaged."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from spatial.world import write_pairs
from tests.test_reward_model import tiny_backbone

pytestmark = pytest.mark.slow


def _train(tmp_path, processes):
    args = ["--pairs", str(tmp_path / "pairs"), "--backbone", str(tmp_path / "vlm"), "--output_dir", str(tmp_path / f"out{processes}"),
            "--steps", "2", "--batch_size", "4", "--lora_rank", "2", "--mc_samples", "64", "--threads", "1",
            "--learning_rate", "1e-3", "--checkpoint_every", "100", "--eval_every", "100"]  # fmt: skip
    if processes == 1:
        cmd = [sys.executable, "-m", "training.train_reward", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/cpu_2proc.yaml",
               "--num_processes", "2", "-m", "training.train_reward", *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / f"out{processes}"
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    weights = {**load_file(str(out / "adapter" / "adapter_model.safetensors")), **load_file(str(out / "head.safetensors"))}
    return metrics, weights


def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path):
    write_pairs(tmp_path / "pairs", 12, seed=2, size=32)
    tiny_backbone(tmp_path / "vlm")
    m1, w1 = _train(tmp_path, 1)
    m2, w2 = _train(tmp_path, 2)
    # Same loss and accuracy over the global batch at every step (the first step sees identical weights).
    assert m1[0]["loss"] == pytest.approx(m2[0]["loss"], rel=1e-4)
    assert [r["accuracy"] for r in m1] == [r["accuracy"] for r in m2]
    assert w1.keys() == w2.keys()
    # Adam's first steps are about lr * sign(grad), so an element whose gradient is 0 up to float noise
    # may move either way: e.g. mu's bias, which the Bradley-Terry loss (a function of mu_w - mu_l)
    # cannot see. Everything else must agree.
    close = torch.cat([torch.isclose(w1[k], w2[k], rtol=1e-3, atol=1e-6).flatten() for k in w1])
    assert close.float().mean() > 0.995
    moved = [k for k in w1 if "lora_B" in k]
    assert moved and all(w1[k].abs().sum() > 0 for k in moved)
