"""GRPOTrainer: sample groups with log-probs, score them, and train the LoRA with the clipped
objective and a KL to the LoRA-off reference. Runs under `accelerate launch` on 1..N processes.

Each process handles whole groups (all G samples of a prompt), so group statistics computed on a
process are the global ones; gradients are averaged across processes by DDP. Every sample's noise
comes from its own seed (iteration, global prompt index, member), so a run draws the same samples
whatever the number of processes.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from spatial.runlog import check_same_run, steps_up_to, stop_on_sigterm, trim_jsonl

from .advantages import group_advantages
from .config import GRPOConfig
from .loss import grpo_loss
from .sampling import Trajectory, sample_trajectory, step_log_prob


class FlowPolicy(Protocol):
    """What GRPO needs from a flow-matching text-to-image model with a trainable LoRA."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...
    def encode(self, prompts: list[str]): ...  # conditioning, batched like `prompts`
    def select(self, cond, index: torch.Tensor): ...  # rows of a conditioning
    def initial_noise(self, seeds: list[int], size: int) -> torch.Tensor: ...
    def sigmas(self, steps: int, size: int) -> torch.Tensor: ...
    def guidance(self, scale: float, batch: int) -> torch.Tensor | None: ...
    def velocity(self, x, sigma, cond, guidance) -> torch.Tensor: ...  # LoRA on
    def reference_velocity(self, x, sigma, cond, guidance) -> torch.Tensor: ...  # LoRA off
    def decode(self, latents: torch.Tensor, size: int) -> list: ...  # PIL images
    def generate(self, prompts: list[str], seeds: list[int], steps: int, size: int, guidance: float) -> list: ...
    def save_lora(self, path: Path) -> None: ...
    def load_lora_weights(self, path: Path) -> None: ...


@dataclass
class IterationStats:
    iteration: int
    reward_mean: float
    reward_std: float
    kept: int
    loss: float
    kl: float
    clip_fraction: float
    nfe_sampling: int
    nfe_training: int
    sample_s: float
    score_s: float
    train_s: float


def sample_seed(seed: int, iteration: int, prompt_index: int, member: int) -> int:
    """A sample's initial-noise seed from its global coordinates (independent of process count)."""
    return (((seed * 1_000_003 + iteration) * 1_000_033 + prompt_index) * 1_009 + member) % (2**63 - 1)


def step_noise_seed(seed: int, iteration: int, prompt_index: int, member: int) -> int:
    """The seed of a sample's SDE step noise: scrambled, so it is no other member's initial-noise seed
    (seed + 1 would be the next member's)."""
    return (sample_seed(seed, iteration, prompt_index, member) * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % (2**63 - 1)


CHECKPOINT = re.compile(r"checkpoint-(\d+)")
RUN_IDENTITY = {"preset", "base_model", "reward", "reward_model", "prompts", "num_prompts", "prompt_seed", "lora_rank",
                "lora_alpha", "resolution", "seed"}  # fmt: skip
"""Settings that make a GRPO run what it is: a checkpoint written under others is another run's."""
QUIET_CHANGES = {"iterations", "resume", "output_dir", "save_every", "eval_every"}
"""Settings a resumed run changes without a note (running longer, logging more often)."""


def last_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir() if CHECKPOINT.fullmatch(p.name) and (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(CHECKPOINT.fullmatch(p.name).group(1)), default=None)


def check_output_dir(config: GRPOConfig) -> list[str]:
    """Refuse, before anything loads, a fresh run into a folder that holds a run (its log would mix with
    the old one's, and a later resume would continue the old weights) and a resume of a checkpoint that
    another run wrote. Returns the settings a resume changes, for a note."""
    out = Path(config.output_dir)
    last = last_checkpoint(out)
    if not config.resume:
        used = [p.name for p in (last, out / "metrics.jsonl", out / "final") if p is not None and p.exists()]
        if used:
            raise ValueError(f"{out} already holds a run ({', '.join(used)}): resume it (--resume true) or give "
                             "this run another output_dir")  # fmt: skip
        return []
    if last is None:
        return []
    saved = json.loads((last / "trainer_state.json").read_text()).get("config")
    return check_same_run(saved, config.to_dict(), RUN_IDENTITY, QUIET_CHANGES, last)


class GRPOTrainer:
    def __init__(self, config: GRPOConfig, policy: FlowPolicy, scorer, prompts: list[str], accelerator=None,
                 eval_prompts: list[str] | None = None, judge=None):  # fmt: skip
        from accelerate import Accelerator

        config.validate()
        self.config = config
        self.policy = policy
        self.scorer = scorer
        self.prompts = prompts
        self.eval_prompts = eval_prompts or []
        self.judge = judge  # optional callable(prompt, image) -> bool for evaluation accuracy
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
        self.out = Path(config.output_dir)
        self.params = policy.trainable_parameters()
        if self.accelerator.num_processes > 1:
            # Every rank starts from rank 0's LoRA, whatever each process's random state was.
            import torch.distributed as dist

            with torch.no_grad():
                for p in self.params:
                    dist.broadcast(p.data, src=0)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=1e-4)
        self.ema = [p.detach().clone() for p in self.params] if config.ema else None
        self.start_iteration = 0
        self.nfe_total = 0
        self._stop = False

    # ---- one iteration ---------------------------------------------------------------------------

    def iteration_prompts(self, it: int) -> list[tuple[int, str]]:
        """(global index, prompt) pairs this process handles at iteration `it`."""
        c, acc = self.config, self.accelerator
        per = c.prompts_per_iteration
        first = (it * acc.num_processes + acc.process_index) * per
        return [(i, self.prompts[i % len(self.prompts)]) for i in range(first, first + per)]

    def sample(self, it: int):
        c = self.config
        chosen = self.iteration_prompts(it)
        prompts = [p for _, p in chosen for _ in range(c.group_size)]
        groups = torch.tensor([k for k in range(len(chosen)) for _ in range(c.group_size)])
        cond = self.policy.encode(prompts)
        # Same-latent groups start from their first member's noise; the SDE noise still differs.
        noise_seeds = [sample_seed(c.seed, it, i, 0 if c.same_latent else m) for i, _ in chosen for m in range(c.group_size)]
        noise = self.policy.initial_noise(noise_seeds, c.resolution)
        sigmas = self.policy.sigmas(c.sample_steps, c.resolution)
        guidance = self.policy.guidance(c.guidance, len(prompts))
        gens = [torch.Generator().manual_seed(step_noise_seed(c.seed, it, i, m)) for i, _ in chosen for m in range(c.group_size)]
        trajs, images = [], []
        with ThreadPoolExecutor(max_workers=1) as pool:
            futures = []
            # One group at a time, so scoring group k overlaps with sampling group k + 1.
            for k in range(len(chosen)):
                rows = torch.arange(k * c.group_size, (k + 1) * c.group_size)
                traj = sample_trajectory(self.policy.velocity, noise[rows], sigmas, self.policy.select(cond, rows),
                                         None if guidance is None else guidance[rows], c.noise_level,
                                         [gens[i] for i in rows.tolist()], c.sde_window or None)  # fmt: skip
                imgs = self.policy.decode(traj.final, c.resolution)
                trajs.append(traj)
                images += imgs
                futures.append(pool.submit(self._score, [prompts[i] for i in rows.tolist()], imgs))
            t_sampled = time.perf_counter()
            rewards = torch.cat([f.result() for f in futures])
        traj = Trajectory(torch.cat([t.states for t in trajs]), torch.cat([t.log_probs for t in trajs]), sigmas.float())
        return prompts, groups, cond, guidance, traj, images, rewards, t_sampled

    def _score(self, prompts, images) -> torch.Tensor:
        result = self.scorer.score(prompts, images)
        return torch.as_tensor(result.mu, dtype=torch.float32).reshape(-1)

    def train_step(self, cond, guidance, traj: Trajectory, advantages, keep) -> dict:
        c = self.config
        idx = torch.nonzero(keep, as_tuple=True)[0]
        trained = list(range(min(c.trained_steps(), traj.log_probs.shape[1])))  # deterministic steps: no log-prob
        sub = Trajectory(traj.states[idx], traj.log_probs[idx], traj.sigmas)
        sub_cond = self.policy.select(cond, idx)
        sub_guidance = None if guidance is None else guidance[idx]
        adv = advantages[idx].to(traj.states.device)
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio": 0.0}
        nfe = 0
        for _ in range(c.inner_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for j in trained:
                reference = self.policy.reference_velocity if c.beta > 0 else None
                lp, kl = step_log_prob(self.policy.velocity, sub, j, sub_cond, sub_guidance, c.noise_level, reference)
                out = grpo_loss(lp, sub.log_probs[:, j], adv, kl, c.clip_range, c.adv_clip, c.beta)
                self.accelerator.backward(out.loss / len(trained))
                nfe += len(idx) * (2 if reference is not None else 1)
                for key, value in (("loss", out.loss), ("kl", out.kl), ("clip_fraction", out.clip_fraction),
                                   ("ratio", out.ratio_mean)):  # fmt: skip
                    stats[key] += float(value.detach()) / (len(trained) * c.inner_epochs)
            if self.accelerator.num_processes > 1:
                # DDP is not wrapped around the policy (its forward is split into steps), so average here.
                for p in self.params:
                    if p.grad is not None:
                        p.grad = self.accelerator.reduce(p.grad, reduction="mean")
            torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
            self.optimizer.step()
        if self.ema is not None:  # once per iteration, as `ema_decay` says
            with torch.no_grad():
                for e, p in zip(self.ema, self.params):
                    e.mul_(c.ema_decay).add_(p.detach(), alpha=1 - c.ema_decay)
        stats["nfe"] = nfe
        return stats

    # ---- the loop ----------------------------------------------------------------------------------

    def train(self) -> list[IterationStats]:
        restore_sigterm = stop_on_sigterm(self)
        try:
            return self._train()
        finally:
            restore_sigterm()

    def _train(self) -> list[IterationStats]:
        c, acc = self.config, self.accelerator
        if c.resume:
            self._resume()
        else:
            check_output_dir(c)
        self.out.mkdir(parents=True, exist_ok=True)
        history = []
        bar = tqdm(range(self.start_iteration, c.iterations), initial=self.start_iteration, total=c.iterations,
                   desc="grpo", disable=not acc.is_main_process)  # fmt: skip
        for it in bar:
            t0 = time.perf_counter()
            prompts, groups, cond, guidance, traj, images, rewards, t_sampled = self.sample(it)
            t_scored = time.perf_counter()
            advantages, keep = group_advantages(rewards, groups, c.top_k)
            stats = self.train_step(cond, guidance, traj, advantages, keep)
            t_trained = time.perf_counter()
            # NFE over all processes (every process samples and trains the same amount); evaluation
            # images are not counted: they are not part of the training cost the paper compares.
            nfe_sampling = len(prompts) * c.sample_steps * acc.num_processes
            nfe_training = stats["nfe"] * acc.num_processes
            all_rewards = acc.gather(rewards.to(acc.device)).float()
            kept = int(keep.sum())
            if acc.num_processes > 1:  # logged over all processes, as one process doing all the work would
                # Every process trains the same number of samples, so the mean of means is the mean.
                shared = acc.reduce(torch.tensor([stats["loss"], stats["kl"], stats["clip_fraction"], kept],
                                                 dtype=torch.float64, device=acc.device), reduction="sum")  # fmt: skip
                stats["loss"], stats["kl"], stats["clip_fraction"] = (float(v) / acc.num_processes for v in shared[:3])
                kept = int(shared[3])
            s = IterationStats(
                iteration=it + 1, reward_mean=float(all_rewards.mean()), reward_std=float(all_rewards.std()),
                kept=kept, loss=stats["loss"], kl=stats["kl"], clip_fraction=stats["clip_fraction"],
                nfe_sampling=nfe_sampling, nfe_training=nfe_training, sample_s=t_sampled - t0,
                score_s=t_scored - t_sampled, train_s=t_trained - t_scored,
            )  # fmt: skip
            self.nfe_total += nfe_sampling + nfe_training
            history.append(s)
            bar.set_postfix(reward=f"{s.reward_mean:.3f}", kl=f"{s.kl:.2e}")
            extra = {}
            if (it + 1) % c.eval_every == 0 or it + 1 == c.iterations:
                extra = self.evaluate(it + 1)
            self._log({**s.__dict__, "step": it + 1, "total_steps": c.iterations, "nfe_total": self.nfe_total, **extra})
            stop = self._agreed_stop()
            if (it + 1) % c.save_every == 0 or stop:
                self.save(self.out / f"checkpoint-{it + 1}", it + 1)
            if stop and it + 1 < c.iterations:  # a stop during the last iteration still writes `final`
                if acc.is_main_process:
                    print(f"stopping on SIGTERM after iteration {it + 1} (checkpoint saved)", flush=True)
                return history
        self.save(self.out / "final", c.iterations)
        return history

    def evaluate(self, it: int) -> dict:
        """Fixed prompts x 2 seeds, deterministic sampling with the adapter on; images saved."""
        c = self.config
        if not self.eval_prompts or not self.accelerator.is_main_process:
            return {}
        prompts = [p for p in self.eval_prompts for _ in (0, 1)]
        seeds = [s for _ in self.eval_prompts for s in (0, 1)]
        with self._ema_weights():  # evaluate the adapter a checkpoint ships
            images = self.policy.generate(prompts, seeds, c.eval_steps, c.resolution, c.guidance)
        folder = self.out / "eval" / f"iter-{it:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, img in enumerate(images):
            img.save(folder / f"{k:02d}-seed{seeds[k]}.png")
        (folder / "prompts.json").write_text(json.dumps(prompts, indent=1))
        out = {"eval_reward": float(self._score(prompts, images).mean())}
        if self.judge is not None:
            out["eval_accuracy"] = sum(bool(self.judge(p, im)) for p, im in zip(prompts, images)) / len(images)
        return out

    # ---- state ------------------------------------------------------------------------------------

    @contextmanager
    def _ema_weights(self):
        """The EMA weights in the LoRA for the duration (nothing to do without EMA)."""
        if self.ema is None:
            yield
            return
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw):
                    p.copy_(r)

    def save(self, path: Path, iteration: int) -> None:
        """Write the checkpoint beside its place and rename it in, so a kill mid-save leaves no
        half-written checkpoint for a resume to pick."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            partial = path.with_name(path.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            with self._ema_weights():  # the adapter is the EMA; the raw weights below resume exactly
                self.policy.save_lora(partial)
            if self.ema is not None:
                torch.save({"params": [p.detach().clone() for p in self.params], "ema": self.ema}, partial / "raw_params.pt")
            torch.save(self.optimizer.state_dict(), partial / "optimizer.pt")
            state = {"iteration": iteration, "nfe_total": self.nfe_total, "config": self.config.to_dict()}
            (partial / "trainer_state.json").write_text(json.dumps(state, indent=2))
            shutil.rmtree(path, ignore_errors=True)
            partial.rename(path)
        acc.wait_for_everyone()

    def _resume(self) -> None:
        changed = check_output_dir(self.config)  # refuses another run's checkpoint before loading it
        last = last_checkpoint(self.out)
        if last is None:  # stopped before its first checkpoint: it starts over, and so does its log
            if self.accelerator.is_main_process:
                trim_jsonl(self.out / "metrics.jsonl", steps_up_to(0, "iteration"))
            return
        state = json.loads((last / "trainer_state.json").read_text())
        # Loaded to the CPU, then copied onto each parameter's device: a checkpoint saved on cuda:0
        # resumes on rank k's GPU, or on a machine without one.
        saved_ema = None
        if (last / "raw_params.pt").exists():
            saved = torch.load(last / "raw_params.pt", map_location="cpu")
            with torch.no_grad():
                for p, r in zip(self.params, saved["params"]):
                    p.copy_(r)
            saved_ema = saved["ema"]
        else:
            self.policy.load_lora_weights(last)
        if self.config.ema:
            # The EMA follows this run's config: resumed when saved, else started from the resumed weights.
            source = saved_ema if saved_ema is not None else self.params
            self.ema = [e.detach().clone().to(p.device) for e, p in zip(source, self.params)]
        self.optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location="cpu"))
        if changed and self.accelerator.is_main_process:
            print(f"resuming with changed settings: {', '.join(changed)}", flush=True)
        self.start_iteration = state["iteration"]
        self.nfe_total = state.get("nfe_total", 0)
        if self.accelerator.is_main_process:
            trim_jsonl(self.out / "metrics.jsonl", steps_up_to(self.start_iteration, "iteration"))
            print(f"resuming from {last.name} (iteration {self.start_iteration})", flush=True)

    def _log(self, row: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _agreed_stop(self) -> bool:
        """True on every rank if SIGTERM reached any: ranks that disagreed would wait on different
        collectives (one in save's barrier, another in the next iteration's)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return self._stop
        flag = torch.tensor([1.0 if self._stop else 0.0], device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)


def shuffled(prompts: list[str], seed: int) -> list[str]:
    out = list(prompts)
    random.Random(seed).shuffle(out)
    return out
