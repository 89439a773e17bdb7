"""RewardTrainer end to end on a tiny Qwen2.5-VL: outputs, checkpoints, bad rows, resume, command line."""

import json
import math
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file

from spatial.reward.data import BadRowError, load_pairs
from spatial.reward.model import SpatialScore
from spatial.reward.trainer import RewardTrainer, RewardTrainingConfig
from spatial.world import write_pairs
from tests.test_reward_model import tiny_backbone
from training import train_reward


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_pairs(root / "pairs", 24, seed=5, size=32, test_fraction=1 / 6)
    return tiny_backbone(root / "vlm"), root / "pairs"


def config(setup, out, **kw):
    backbone, pairs = setup
    base = dict(pairs=str(pairs), backbone=str(backbone), output_dir=str(out), steps=4, batch_size=4, lora_rank=2,
                mc_samples=64, checkpoint_every=2, eval_every=2, keep_checkpoints=1, learning_rate=5e-3, threads=1)  # fmt: skip
    return RewardTrainingConfig(**{**base, **kw})


def weights(folder):
    return {**load_file(str(folder / "adapter" / "adapter_model.safetensors")), **load_file(str(folder / "head.safetensors"))}


def test_training_leaves_a_loadable_model_metrics_checkpoints_and_a_summary(setup, tmp_path):
    out = RewardTrainer(config(setup, tmp_path / "run"), progress=False).run()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all({"loss", "accuracy", "sigma", "lr"} <= set(r) for r in rows)
    assert "eval_accuracy" in rows[1] and "eval_accuracy" in rows[3] and "eval_accuracy" not in rows[2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_n"] == 4 and summary["train_pairs"] == 20
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"]
    model = SpatialScore.from_pretrained(out)
    prompt, chosen, rejected = load_pairs(str(setup[1]), "test")[0].decode()
    assert model.score([prompt, prompt], [chosen, rejected]).mu.shape == (2,)
    # Trained: LoRA's B matrices start at zero and have moved.
    lora_b = [v for k, v in weights(out).items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)


def test_a_bad_row_stops_after_a_checkpoint_and_the_rerun_resumes_to_the_same_weights(setup, tmp_path):
    straight = RewardTrainer(config(setup, tmp_path / "straight"), progress=False).run()
    pairs = tmp_path / "pairs"
    shutil.copytree(setup[1], pairs)
    trainer = RewardTrainer(config(setup, tmp_path / "stopped", pairs=str(pairs), on_bad_row="stop"), progress=False)
    train = load_pairs(str(pairs), "train")
    row = train[trainer.order(len(train), 0)[2 * 4 + 1]]  # second pair of the third step
    original = open(row.chosen, "rb").read()
    open(row.chosen, "wb").write(b"broken")
    with pytest.raises(BadRowError, match=r"metadata.jsonl:\d+: chosen image does not decode"):
        trainer.run()
    assert (tmp_path / "stopped" / "checkpoints" / "step-2" / "trainer_state.pt").is_file()
    open(row.chosen, "wb").write(original)
    # As if a crash had come after step 3 was logged but before its checkpoint: that row is redone.
    with open(tmp_path / "stopped" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": 99.0}) + "\n" + '{"step": 4, "lo')
    resumed = RewardTrainer(config(setup, tmp_path / "stopped", pairs=str(pairs), on_bad_row="stop"), progress=False).run()
    rows = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[2]["loss"] != 99.0
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_sigterm_checkpoints_after_the_current_step_and_the_rerun_ends_like_an_uninterrupted_run(setup, tmp_path):
    straight = RewardTrainer(config(setup, tmp_path / "straight", checkpoint_every=100), progress=False).run()
    trainer = RewardTrainer(config(setup, tmp_path / "stopped", checkpoint_every=100), progress=False)
    decode, calls = trainer.decode_batch, []

    def decode_then_signal(*args):
        calls.append(args)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGTERM)  # a real signal, arriving during step 1 (as from a job's cancel)
        return decode(*args)

    trainer.decode_batch = decode_then_signal
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="after step 1"):
        trainer.run()
    assert signal.getsignal(signal.SIGTERM) is handler  # restored once the run is over
    stopped = tmp_path / "stopped"
    assert [p.name for p in (stopped / "checkpoints").iterdir()] == ["step-1"]
    assert not (stopped / "spatialscore_config.json").exists()  # not mistaken for a finished model
    resumed = RewardTrainer(config(setup, stopped, checkpoint_every=100), progress=False).run()
    rows = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    a, b = weights(straight), weights(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_a_bad_row_is_skipped_when_asked_and_named_in_the_log(setup, tmp_path, capsys):
    pairs = tmp_path / "pairs"
    shutil.copytree(setup[1], pairs)
    train = load_pairs(str(pairs), "train")
    open(train[0].rejected, "wb").write(b"broken")
    cfg = config(setup, tmp_path / "run", pairs=str(pairs), steps=6, on_bad_row="skip")
    out = RewardTrainer(cfg, progress=False).run()
    assert json.loads((out / "summary.json").read_text())["skipped_pairs"] == 1
    assert "skipping bad pair" in capsys.readouterr().err and "metadata.jsonl:1" in train[0].where


@pytest.mark.parametrize("on_bad_row", ["skip", "stop"])
def test_a_prompt_that_writes_out_a_special_token_is_a_bad_row(setup, tmp_path, on_bad_row):
    # encode() refuses such a prompt; found only there, one rank would fail while the others wait.
    pairs = tmp_path / "pairs"
    shutil.copytree(setup[1], pairs)
    meta = pairs / "train" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    rows[0]["prompt"] += " <|image_pad|>"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(setup, tmp_path / "run", pairs=str(pairs), steps=2, on_bad_row=on_bad_row)
    if on_bad_row == "stop":
        with pytest.raises(BadRowError, match="reserved token '<\\|image_pad\\|>'"):
            RewardTrainer(cfg, progress=False).run()
    else:
        out = RewardTrainer(cfg, progress=False).run()
        assert json.loads((out / "summary.json").read_text())["skipped_pairs"] == 1


def test_a_resumed_run_still_counts_the_rows_skipped_before_its_checkpoint(setup, tmp_path):
    pairs = tmp_path / "pairs"
    shutil.copytree(setup[1], pairs)
    train = load_pairs(str(pairs), "train")
    cfg = config(setup, tmp_path / "run", pairs=str(pairs), steps=6, on_bad_row="skip")
    trainer = RewardTrainer(cfg, progress=False)
    # A row of step 1 that the steps redone after resuming from step 4 (5: epoch 0, 6: epoch 1) never see.
    redone = trainer.order(len(train), 0)[16:] + trainer.order(len(train), 1)[:8]
    bad = next(i for i in trainer.order(len(train), 0)[:4] if i not in redone)
    open(train[bad].rejected, "wb").write(b"broken")
    trainer.run()
    again = RewardTrainer(cfg, progress=False).run()  # resumes from step-4
    assert json.loads((again / "summary.json").read_text())["skipped_pairs"] == 1


def test_the_command_line_reports_bad_input_in_one_line(setup, tmp_path, capsys):
    assert train_reward.main(["--pairs", str(tmp_path / "nowhere"), "--backbone", str(setup[0]),
                              "--output_dir", str(tmp_path / "o")]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot load pairs")
    with pytest.raises(SystemExit) as e:
        train_reward.main(["--loss", "hinge"])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == "error: loss must be mc or closed"
    with pytest.raises(SystemExit):
        train_reward.main(["--keep_checkpoints", "0"])
    assert "keep_checkpoints must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("learning_rate", float("nan"), "learning_rate must be a finite number"),
        ("learning_rate", -1.0, "learning_rate must be in (0, 1)"),
        ("weight_decay", float("nan"), "weight_decay must be a finite number"),
        ("sigma_reg", float("inf"), "sigma_reg must be a finite number"),
        ("lora_rank", 0, "lora_rank must be at least 1"),
        ("generate_pairs", -5, "generate_pairs must be zero or more"),
    ],
)
def test_settings_a_run_could_not_train_with_are_refused_before_any_compute(field, value, message):
    import re

    with pytest.raises(ValueError, match=re.escape(message)):
        RewardTrainingConfig(**{field: value}).validate()
    RewardTrainingConfig().validate()


def test_several_pair_sources_joined_by_commas_are_trained_and_evaluated_together(setup, tmp_path):
    other = tmp_path / "other"
    write_pairs(other, 12, seed=6, size=32, test_fraction=1 / 6)
    out = RewardTrainer(config(setup, tmp_path / "run", pairs=f"{setup[1]}, {other}", steps=2), progress=False).run()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_pairs"] == 20 + 10 and summary["eval_n"] == 4 + 2


def test_init_from_continues_from_a_checkpoint_instead_of_a_fresh_head(setup, tmp_path):
    first = RewardTrainer(config(setup, tmp_path / "first"), progress=False).run()
    prompt, chosen, rejected = load_pairs(str(setup[1]), "test")[0].decode()
    before = SpatialScore.from_pretrained(first).score([prompt, prompt], [chosen, rejected]).mu
    # With a vanishing learning rate the fine-tuned model scores like the one it started from;
    # a fresh head (the same run without init_from) does not.
    tuned = RewardTrainer(config(setup, tmp_path / "tuned", init_from=str(first), learning_rate=1e-12, steps=2),
                          progress=False).run()  # fmt: skip
    fresh = RewardTrainer(config(setup, tmp_path / "fresh", learning_rate=1e-12, steps=2), progress=False).run()
    after = SpatialScore.from_pretrained(tuned).score([prompt, prompt], [chosen, rejected]).mu
    other = SpatialScore.from_pretrained(fresh).score([prompt, prompt], [chosen, rejected]).mu
    assert after == pytest.approx(before, abs=1e-4)
    assert abs(other - before).max() > 1e-3


def test_init_from_a_folder_that_is_not_a_checkpoint_is_refused_before_any_compute(setup, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_reward.main(["--init_from", str(tmp_path), "--output_dir", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "is not a SpatialScore checkpoint folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fine_tuning_refuses_model_settings_that_differ_from_its_init_from_checkpoint(setup, tmp_path):
    first = RewardTrainer(config(setup, tmp_path / "first", steps=1), progress=False).run()
    # The checkpoint's own values (rank 2, its backbone) and the defaults both mean "keep the checkpoint's".
    config(setup, tmp_path / "same", init_from=str(first)).validate()
    RewardTrainingConfig(init_from=str(first), output_dir=str(tmp_path / "default")).validate()
    for change in ({"lora_rank": 4}, {"lora_alpha": 3}, {"lora_vision": True}, {"max_pixels": 64 * 64},
                   {"backbone": str(tmp_path / "another-vlm")}):  # fmt: skip
        with pytest.raises(ValueError, match=f"{next(iter(change))}.*init_from checkpoint"):
            config(setup, tmp_path / "changed", init_from=str(first), **change).validate()
    assert not (tmp_path / "changed").exists()


def test_a_checkpoint_another_run_left_in_the_output_folder_is_not_resumed(setup, tmp_path):
    first = config(setup, tmp_path / "run", steps=4, checkpoint_every=2)
    RewardTrainer(first, progress=False).run()
    other = tmp_path / "other-pairs"
    write_pairs(other, 12, seed=6, size=32, test_fraction=1 / 6)
    for change in ({"pairs": str(other)}, {"seed": 7}, {"loss": "closed"}):
        with pytest.raises(ValueError, match=f"checkpoint of another run \\({next(iter(change))} "):
            RewardTrainer(config(setup, tmp_path / "run", steps=6, **change), progress=False).run()
    # Running it longer, even at another learning rate, is a resume of the same run.
    out = RewardTrainer(config(setup, tmp_path / "run", steps=6, learning_rate=1e-3), progress=False).run()
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_each_loss_saves_the_preference_probability_it_trains(setup, tmp_path):
    mc = RewardTrainer(config(setup, tmp_path / "mc", steps=1, checkpoint_every=100), progress=False).run()
    assert SpatialScore.from_pretrained(mc).config.preference == "bradley-terry"
    closed = RewardTrainer(config(setup, tmp_path / "c", init_from=str(mc), loss="closed", steps=1, checkpoint_every=100),
                           progress=False).run()  # fmt: skip
    assert SpatialScore.from_pretrained(closed).config.preference == "thurstone"


def test_the_closed_form_loss_trains_too(setup, tmp_path):
    out = RewardTrainer(config(setup, tmp_path / "closed", loss="closed", steps=2, checkpoint_every=100), progress=False).run()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    lora_b = [v for k, v in weights(out).items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
