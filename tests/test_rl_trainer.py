"""GRPOTrainer end to end on a tiny random FLUX: sampling, scoring, training, checkpoints, resume."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spatial.rl.config import GRPOConfig
from spatial.rl.flux_policy import FluxPolicy
from spatial.rl.sampling import sample_trajectory, step_log_prob
from spatial.rl.trainer import GRPOTrainer, sample_seed, step_noise_seed
from tests.helpers.tiny_flux import tiny_flux_pipeline

PROMPTS = ["a red circle above a blue square", "a green triangle left of a purple diamond",
           "a yellow square right of an orange circle"]  # fmt: skip


class Brightness:
    """A real, deterministic reward with spread on random images: mean pixel value in [0, 1]."""

    def score(self, prompts, images):
        mu = np.array([np.asarray(im, dtype=np.float32).mean() / 255 for im in images])
        return SimpleNamespace(mu=mu, sigma=np.zeros_like(mu))


def make(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "run"), group_size=4, top_k=1, prompts_per_iteration=2, iterations=2,
                    sample_steps=3, eval_steps=3, resolution=32, lora_rank=4, lora_alpha=8, save_every=1,
                    eval_every=2, learning_rate=1e-2, clip_range=0.2, beta=0.01)  # fmt: skip
    cfg = GRPOConfig(**{**settings, **overrides})
    policy = FluxPolicy(tiny_flux_pipeline(), rank=cfg.lora_rank, alpha=cfg.lora_alpha)
    return GRPOTrainer(cfg, policy, Brightness(), PROMPTS, eval_prompts=PROMPTS[:1]), policy


def test_first_inner_step_is_exactly_on_policy_and_log_probs_match_sampling():
    policy = FluxPolicy(tiny_flux_pipeline(), rank=4, alpha=8)
    with torch.no_grad():  # make the LoRA non-trivial so the check is not vacuous
        for p in policy.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    cond = policy.encode(PROMPTS[:2])
    guidance = policy.guidance(3.5, 2)
    traj = sample_trajectory(policy.velocity, policy.initial_noise([1, 2], 32), policy.sigmas(4, 32), cond,
                             guidance, 0.7, [torch.Generator().manual_seed(s) for s in (7, 8)])  # fmt: skip
    for j in range(4):
        lp, kl = step_log_prob(policy.velocity, traj, j, cond, guidance, 0.7, policy.reference_velocity)
        assert torch.allclose(torch.exp(lp - traj.log_probs[:, j]), torch.ones(2), atol=1e-4)
        assert (kl > 0).all()  # the LoRA-off reference differs from the policy


def test_reference_is_the_same_transformer_with_the_adapter_off():
    pipe = tiny_flux_pipeline()
    base_params = sum(p.numel() for p in pipe.transformer.parameters())
    policy = FluxPolicy(pipe, rank=4, alpha=8)
    x, cond, g = policy.initial_noise([0], 32), policy.encode(PROMPTS[:1]), policy.guidance(3.5, 1)
    sigma = torch.tensor(0.6)
    base = policy.velocity(x, sigma, cond, g).detach()  # LoRA B starts at zero: policy == base
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.1)
    assert not torch.allclose(policy.velocity(x, sigma, cond, g), base)
    assert torch.allclose(policy.reference_velocity(x, sigma, cond, g), base, atol=1e-6)
    # Only LoRA weights were added to the one transformer; no second copy exists.
    lora = sum(p.numel() for p in policy.trainable_parameters())
    assert sum(p.numel() for p in pipe.transformer.parameters()) == base_params + lora
    assert policy.transformer is pipe.transformer


def test_two_iterations_train_the_lora_log_metrics_and_save_checkpoints(tmp_path):
    trainer, policy = make(tmp_path)
    before = [p.detach().clone() for p in policy.trainable_parameters()]
    history = trainer.train()
    assert len(history) == 2 and all(h.kept == 4 for h in history)  # 2 groups x (top 1 + bottom 1)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.trainable_parameters()))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"reward_mean", "reward_std", "kl", "clip_fraction", "nfe_sampling", "nfe_training", "nfe_total"} <= set(rows[0])
    assert rows[0]["nfe_sampling"] == 2 * 4 * 3  # prompts x group x steps
    assert "eval_reward" in rows[1] and len(list((tmp_path / "run" / "eval" / "iter-00002").glob("*.png"))) == 2
    for name in ("checkpoint-1", "checkpoint-2", "final"):
        assert (tmp_path / "run" / name / "pytorch_lora_weights.safetensors").exists()


def test_top_k_zero_trains_on_every_sample_and_costs_twice_the_training_passes(tmp_path):
    filtered, _ = make(tmp_path / "k1")
    everything, _ = make(tmp_path / "k0", top_k=0)
    a, b = filtered.train()[0], everything.train()[0]
    # kept samples x 3 trained steps x 2 passes (policy + LoRA-off reference for the KL)
    assert (a.kept, a.nfe_training) == (4, 24) and (b.kept, b.nfe_training) == (8, 48)
    assert a.nfe_sampling == b.nfe_sampling == 24


@pytest.mark.parametrize("same_latent", [False, True])
def test_same_latent_groups_share_their_starting_noise_and_differ_by_the_sde_noise(tmp_path, same_latent):
    trainer, _ = make(tmp_path, same_latent=same_latent)
    *_, traj, _, _, _ = trainer.sample(0)
    start, final = traj.states[:, 0], traj.final
    g = trainer.config.group_size
    assert torch.equal(start[0], start[1]) == same_latent  # members of the first group
    assert not torch.equal(start[0], start[g])  # groups never share noise
    assert not torch.equal(final[0], final[1])  # the SDE noise still spreads the group


def test_an_sde_window_trains_only_its_steps(tmp_path):
    full, _ = make(tmp_path / "full", sample_steps=3)
    window, _ = make(tmp_path / "window", sample_steps=3, sde_window=1)
    a, b = full.train()[0], window.train()[0]
    assert a.nfe_sampling == b.nfe_sampling == 24  # every step still runs the transformer once
    assert (a.nfe_training, b.nfe_training) == (24, 8)  # 4 kept x 2 passes x (3 steps vs 1)


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    trainer, _ = make(tmp_path)
    trainer.train()
    again, policy = make(tmp_path, resume=True)
    again.config.iterations = 3
    saved = {k: v.clone() for k, v in __import__("safetensors.torch", fromlist=["load_file"]).load_file(
        str(tmp_path / "run" / "checkpoint-2" / "pytorch_lora_weights.safetensors")).items()}
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:  # a row past the checkpoint, then a cut-off line
        f.write(json.dumps({"iteration": 3, "step": 3, "loss": 99.0}) + "\n" + '{"iteration": 4, "lo')
    history = again.train()
    assert [h.iteration for h in history] == [3]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["loss"] != 99.0
    assert saved  # the checkpoint it resumed from holds the adapter


def test_sigterm_saves_a_checkpoint_and_stops_after_the_current_iteration(tmp_path):
    trainer, _ = make(tmp_path)
    trainer.config.iterations = 5
    trainer._stop = True  # as if SIGTERM arrived during the first iteration
    history = trainer.train()
    assert len(history) == 1 and (tmp_path / "run" / "checkpoint-1").exists()
    assert not (tmp_path / "run" / "final").exists()


def test_sigterm_during_the_last_iteration_still_writes_the_final_adapter(tmp_path):
    trainer, _ = make(tmp_path)
    trainer.config.iterations = 1
    trainer._stop = True  # the work is done when the stop is seen: nothing is left to resume
    assert len(trainer.train()) == 1
    assert (tmp_path / "run" / "final" / "pytorch_lora_weights.safetensors").exists()


def test_sample_seeds_do_not_depend_on_how_work_is_split():
    seeds = {sample_seed(0, it, i, m) for it in range(3) for i in range(8) for m in range(6)}
    assert len(seeds) == 3 * 8 * 6


def test_no_member_s_step_noise_is_another_member_s_starting_noise():
    coords = [(it, i, m) for it in range(50) for i in range(16) for m in range(24)]
    starts = {sample_seed(0, *c) for c in coords}
    steps = {step_noise_seed(0, *c) for c in coords}
    assert len(steps) == len(coords) and not starts & steps


def test_a_half_written_checkpoint_is_never_resumed_from(tmp_path):
    trainer, _ = make(tmp_path)
    trainer.train()
    run = tmp_path / "run"
    assert not list(run.glob("*.partial"))  # saves rename their folder in whole
    (run / "checkpoint-3.partial").mkdir()  # killed mid-save: only the adapter written
    (run / "checkpoint-3.partial" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (run / "checkpoint-4").mkdir()  # a folder from an older layout, no trainer state
    again, _ = make(tmp_path, resume=True, iterations=3)
    assert [h.iteration for h in again.train()] == [3]


def test_ema_is_updated_once_per_iteration_and_is_what_evaluation_renders(tmp_path):
    trainer, policy = make(tmp_path, ema=True, ema_decay=0.5, inner_epochs=3, iterations=1, eval_every=1)
    start = [p.detach().clone() for p in trainer.params]
    seen = []
    generate = policy.generate
    policy.generate = lambda *a, **k: seen.append([p.detach().clone() for p in trainer.params]) or generate(*a, **k)
    trainer.train()
    for e, s0, p in zip(trainer.ema, start, trainer.params):
        torch.testing.assert_close(e, 0.5 * s0 + 0.5 * p.detach())  # one update after the 3 inner epochs
    assert any(not torch.equal(e, p) for e, p in zip(trainer.ema, trainer.params))
    for rendered, e in zip(seen[0], trainer.ema):
        torch.testing.assert_close(rendered, e)  # evaluation saw the EMA weights ...
    assert any(not torch.equal(r, p) for r, p in zip(seen[0], trainer.params))  # ... and training kept its own


def test_a_resumed_run_keeps_its_ema_only_if_its_config_asks_for_one(tmp_path, capsys):
    trainer, _ = make(tmp_path, ema=True, ema_decay=0.5, iterations=1)
    trainer.train()
    without, _ = make(tmp_path, resume=True, iterations=2, ema=False)
    without._resume()
    assert without.ema is None  # a switched-off EMA does not come back from the checkpoint
    assert "ema: True -> False" in capsys.readouterr().out  # changed settings are named on resume


def test_an_ema_switched_on_at_resume_starts_from_the_resumed_weights(tmp_path):
    trainer, _ = make(tmp_path, iterations=1)
    trainer.train()
    trained = [p.detach().clone() for p in trainer.params]
    with_ema, _ = make(tmp_path, resume=True, iterations=2, ema=True)
    untrained = [e.clone() for e in with_ema.ema]  # built from the fresh LoRA (zero B) before resuming
    with_ema._resume()
    for e, t in zip(with_ema.ema, trained):
        torch.testing.assert_close(e, t)
    assert any(not torch.equal(e, u) for e, u in zip(with_ema.ema, untrained))


def test_the_trained_steps_are_the_first_fraction_of_the_sampling_steps_without_float_error():
    assert GRPOConfig(sample_steps=25, train_timestep_fraction=0.28).trained_steps() == 7  # 25 * 0.28 = 7.000...01
    assert GRPOConfig(sample_steps=10, train_timestep_fraction=0.35).trained_steps() == 4
    assert GRPOConfig(sample_steps=10, sde_window=2).trained_steps() == 2  # the deterministic rest has no log-prob


@pytest.mark.parametrize("bad", [{"group_size": 1}, {"group_size": 4, "top_k": 3}, {"iterations": 0},
                                 {"resolution": 30}, {"sample_steps": 4, "sde_window": 5},
                                 {"sample_steps": 10, "sde_window": 4, "train_timestep_fraction": 0.2}])  # fmt: skip
def test_bad_configurations_are_refused_before_any_compute(bad):
    with pytest.raises(ValueError):
        GRPOConfig(**bad).validate()


def test_a_fresh_run_refuses_a_folder_that_holds_a_run_and_a_resume_without_checkpoint_starts_its_log_over(tmp_path):
    first, _ = make(tmp_path, iterations=1)
    first.train()
    again, _ = make(tmp_path, iterations=1, seed=7)
    with pytest.raises(ValueError, match="already holds a run"):
        again.train()
    with pytest.raises(ValueError, match=r"checkpoint of another run \(seed 0 there, 7 now\)"):
        make(tmp_path, iterations=2, seed=7, resume=True)[0].train()
    # A run stopped before its first checkpoint left a logged row: resuming it redoes that step once.
    out = tmp_path / "early" / "run"
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "step": 1, "reward_mean": 9.0}) + "\n")
    make(tmp_path / "early", iterations=2, resume=True)[0].train()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and rows[0]["reward_mean"] != 9.0
