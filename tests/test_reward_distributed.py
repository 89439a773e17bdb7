"""`accelerate launch` with 2 CPU processes (gloo) trains SpatialScore like 1 process on the same global batch:
each process scores its half of the batch with the same per-pair noise, and gradients are averaged."""

import json
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from spatial.world import write_pairs
from tests.test_reward_model import tiny_backbone

pytestmark = pytest.mark.slow


def _launch(tmp_path, processes, *extra, timeout=600):
    args = ["--pairs", str(tmp_path / "pairs"), "--backbone", str(tmp_path / "vlm"), "--output_dir", str(tmp_path / f"out{processes}"),
            "--steps", "3", "--batch_size", "4", "--lora_rank", "2", "--mc_samples", "64", "--threads", "1",
            "--learning_rate", "1e-3", "--checkpoint_every", "100", "--eval_every", "100", *extra]  # fmt: skip
    if processes == 1:
        cmd = [sys.executable, "-m", "training.train_reward", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/cpu_2proc.yaml",
               "--num_processes", "2", "-m", "training.train_reward", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _train(tmp_path, processes):
    proc = _launch(tmp_path, processes)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / f"out{processes}"
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    weights = {**load_file(str(out / "adapter" / "adapter_model.safetensors")), **load_file(str(out / "head.safetensors"))}
    return metrics, weights, json.loads((out / "summary.json").read_text())


def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path):
    write_pairs(tmp_path / "pairs", 12, seed=2, size=32)
    # Two undecodable training rows: every process must skip the same ones and refill the global batch
    # the way one process does (a rank must never take over its neighbour's pair).
    from spatial.reward.data import load_pairs

    train = load_pairs(str(tmp_path / "pairs"), "train")
    for row in (train[1], train[4]):
        open(row.rejected, "wb").write(b"broken")
    tiny_backbone(tmp_path / "vlm")
    m1, w1, s1 = _train(tmp_path, 1)
    m2, w2, s2 = _train(tmp_path, 2)
    assert s1["skipped_pairs"] == s2["skipped_pairs"] == 2
    # Same loss and accuracy over the global batch at every step.
    assert [r["loss"] for r in m1] == pytest.approx([r["loss"] for r in m2], rel=1e-4)
    assert [r["accuracy"] for r in m1] == [r["accuracy"] for r in m2]
    assert w1.keys() == w2.keys()
    # Adam's first steps are about lr * sign(grad), so an element whose gradient is 0 up to float noise
    # may move either way: e.g. mu's bias, which the Bradley-Terry loss (a function of mu_w - mu_l)
    # cannot see. Everything else must agree.
    close = torch.cat([torch.isclose(w1[k], w2[k], rtol=1e-3, atol=1e-6).flatten() for k in w1])
    assert close.float().mean() > 0.995
    moved = [k for k in w1 if "lora_B" in k]
    assert moved and all(w1[k].abs().sum() > 0 for k in moved)


def test_a_bad_row_in_stop_mode_ends_every_process_with_the_row_named(tmp_path):
    write_pairs(tmp_path / "pairs", 12, seed=2, size=32)
    from spatial.reward.data import load_pairs

    bad = load_pairs(str(tmp_path / "pairs"), "train")[4]
    open(bad.rejected, "wb").write(b"broken")
    tiny_backbone(tmp_path / "vlm")
    # A rank that raised alone would leave the other waiting in a collective until the timeout.
    proc = _launch(tmp_path, 2, "--on_bad_row", "stop", timeout=120)
    assert proc.returncode != 0
    assert f"{bad.where}: rejected image does not decode" in proc.stderr


def test_sigterm_on_one_rank_stops_every_rank_after_the_same_step_with_a_checkpoint(tmp_path):
    import time

    import psutil

    write_pairs(tmp_path / "pairs", 12, seed=2, size=32)
    tiny_backbone(tmp_path / "vlm")
    args = ["--pairs", str(tmp_path / "pairs"), "--backbone", str(tmp_path / "vlm"), "--output_dir", str(tmp_path / "out"),
            "--steps", "400", "--batch_size", "4", "--lora_rank", "2", "--mc_samples", "16", "--threads", "1",
            "--checkpoint_every", "1000", "--eval_every", "1000"]  # fmt: skip
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/cpu_2proc.yaml",
           "--num_processes", "2", "-m", "training.train_reward", *args]  # fmt: skip
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "out" / "metrics.jsonl"
        deadline = time.time() + 240
        while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            time.sleep(0.2)
        rank1 = [p for p in psutil.Process(launcher.pid).children(recursive=True)
                 if p.environ().get("RANK") == "1" and "training.train_reward" in " ".join(p.cmdline())]  # fmt: skip
        assert len(rank1) == 1
        rank1[0].send_signal(signal.SIGTERM)  # only rank 1 hears it, as when one worker is stopped
        _, err = launcher.communicate(timeout=120)  # a rank that stopped alone would leave the other hanging
    finally:
        if launcher.poll() is None:
            launcher.kill()
    saved = [p.name for p in (tmp_path / "out" / "checkpoints").iterdir()]
    assert len(saved) == 1 and saved[0].startswith("step-")
    step = int(saved[0].split("-")[1])
    assert err.count(f"stopped on SIGTERM after step {step} (checkpoint saved)") == 2  # both ranks, same step
    assert not (tmp_path / "out" / "spatialscore_config.json").exists()
