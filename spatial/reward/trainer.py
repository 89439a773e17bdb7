"""RewardTrainer: SpatialScore on preference pairs with a Bradley-Terry loss, under accelerate.

    python -m training.train_reward --pairs DIR --backbone assets/toy/vlm --output_dir runs/spatialscore
    accelerate launch --num_processes 2 -m training.train_reward ...

Each step takes a global batch of `batch_size` pairs (the same indices on every process) and
gives process k the k-th contiguous slice; gradients are averaged across processes, so N
processes take the same step as one process would on the whole batch. The Monte Carlo noise of a
pair is drawn from a generator seeded by (seed, step, pair position in the global batch), so it
does not depend on which process scores the pair either.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .config import SpatialScoreConfig
from spatial.cli import require_finite
from spatial.runlog import check_same_run, steps_up_to, stop_on_sigterm, trim_jsonl

from .data import BadRowError, DatasetError, PairRow, ensure_pairs, load_pairs, splits_of
from .losses import bt_closed_loss, bt_mc_loss, sigma_from_log, sigma_prior_kl

PREFERENCE_BY_LOSS = {"mc": "bradley-terry", "closed": "thurstone"}
"""The preference probability each loss trains (saved with the model, used by `prob_prefer`)."""
RUN_IDENTITY = {"pairs", "generate_pairs", "pairs_seed", "backbone", "init_from", "seed", "lora_rank", "lora_alpha",
                "lora_vision", "loss", "max_pixels"}  # fmt: skip
"""Settings that make a reward run what it is: a checkpoint written under others is another run's."""
QUIET_CHANGES = {"steps", "resume", "threads", "eval_every", "checkpoint_every"}
"""Settings a resumed run changes without a note (running longer, logging more often)."""
from .model import SpatialScore


@dataclass
class RewardTrainingConfig:
    """Train SpatialScore (LoRA on a Qwen2.5-VL, a reward token and a Gaussian head) on preference pairs."""

    pairs: str = ""
    """Pair folder (SpatialWorld layout) or Hub dataset id, or several joined by commas (their splits are
    concatenated); empty: generate SpatialWorld pairs into output_dir/pairs."""
    generate_pairs: int = 8000
    """How many SpatialWorld pairs to write when `pairs` is empty (10% become the test split)."""
    pairs_seed: int = 1
    """SpatialWorld seed of generated pairs (keep apart from evaluation seeds)."""
    backbone: str = "assets/toy/vlm"
    """Base Qwen2.5-VL folder or Hub id (Qwen/Qwen2.5-VL-7B-Instruct on a Space)."""
    init_from: str = ""
    """Start from this SpatialScore checkpoint folder (its backbone, LoRA, head and reward token) instead of a
    fresh head: fine-tuning on new pairs, e.g. annotators' labels or a generator's graded samples."""
    output_dir: str = "runs/spatialscore"
    """Where the final SpatialScore, metrics.jsonl and summary.json go."""
    checkpoint_dir: str = ""
    """Where resumable checkpoints go; empty: output_dir/checkpoints."""
    seed: int = 0
    """Seed of the head's initial weights, the pair order and the Monte Carlo noise."""
    steps: int = 800
    """Optimiser steps."""
    batch_size: int = 16
    """Pairs per step over all processes (must divide by the number of processes)."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate of the LoRA, the head and the reward token (warm-up, cosine decay)."""
    warmup: int = 30
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lora_rank: int = 16
    """LoRA rank on the language model."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_vision: bool = False
    """Also train a LoRA on the vision tower."""
    loss: str = "mc"
    """`mc`: Bradley-Terry averaged over sampled scores (paper); `closed`: -log P(s_w > s_l) of the Gaussians."""
    mc_samples: int = 1000
    """Monte Carlo samples per pair for the `mc` loss (paper: 1000)."""
    sigma_reg: float = 0.01
    """Weight of the KL(N(mu, sigma^2) || N(mu, sigma_prior^2)) term that keeps sigma from collapsing to 0."""
    sigma_prior: float = 1.0
    """sigma0 of that KL term."""
    checkpoint_every: int = 200
    """Steps between resumable checkpoints."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept (older ones are deleted)."""
    eval_every: int = 200
    """Steps between evaluations on the test split (and one at the end)."""
    eval_pairs: int = 0
    """Test pairs per evaluation (0: the whole test split)."""
    on_bad_row: str = "skip"
    """A pair with an empty prompt or an image that does not decode: `skip` it (logged) or `stop` (after a checkpoint)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (needed for the 7B on one GPU)."""
    mixed_precision: str = "auto"
    """`auto` (bf16 on CUDA, fp32 on CPU), `bf16` or `no`."""
    max_pixels: int = 448 * 448
    """Largest image area fed to the vision tower (the toy processor fixes 64x64)."""
    threads: int = 0
    """torch CPU threads per process (0: torch's default)."""
    resume: bool = True
    """Continue from the newest checkpoint in checkpoint_dir when there is one."""

    def validate(self) -> None:
        require_finite(self)
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError("steps and batch_size must be positive")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.weight_decay < 0 or self.warmup < 0 or self.generate_pairs < 0:
            raise ValueError("weight_decay, warmup and generate_pairs must be zero or more")
        if self.lora_rank < 1 or not self.lora_alpha > 0:
            raise ValueError(f"lora_rank must be at least 1 and lora_alpha positive, got {self.lora_rank} and {self.lora_alpha}")
        if self.loss not in ("mc", "closed"):
            raise ValueError("loss must be mc or closed")
        if self.mc_samples <= 0:
            raise ValueError("mc_samples must be positive")
        if self.on_bad_row not in ("skip", "stop"):
            raise ValueError("on_bad_row must be skip or stop")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError("mixed_precision must be auto, bf16 or no")
        if self.sigma_prior <= 0 or self.sigma_reg < 0:
            raise ValueError("sigma_prior must be positive and sigma_reg non-negative")
        if self.checkpoint_every <= 0 or self.eval_every <= 0:
            raise ValueError("checkpoint_every and eval_every must be positive")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be at least 1 (resume needs the newest checkpoint)")
        if self.init_from and not (Path(self.init_from) / "spatialscore_config.json").is_file():
            raise ValueError(f"init_from {self.init_from!r} is not a SpatialScore checkpoint folder (no spatialscore_config.json)")
        if self.init_from:
            self.check_init_from()

    def check_init_from(self) -> None:
        """The model settings of a fine-tuning run come from its `init_from` checkpoint; one set to
        something else would be silently ignored, so it is refused (its default means "inherit")."""
        saved = SpatialScoreConfig.load(Path(self.init_from) / "spatialscore_config.json")
        defaults = RewardTrainingConfig()
        for name in ("lora_rank", "lora_alpha", "lora_vision", "max_pixels"):
            mine, theirs = getattr(self, name), getattr(saved, name)
            if mine != getattr(defaults, name) and mine != theirs:
                raise ValueError(f"{name}={mine} differs from the init_from checkpoint's {name}={theirs}, which a "
                                 f"fine-tuning run keeps: leave {name} at its default or set it to {theirs}")
        if self.backbone != defaults.backbone and not _same_model(self.backbone, saved.backbone, Path(self.init_from)):
            raise ValueError(f"backbone {self.backbone!r} differs from the init_from checkpoint's ({saved.backbone!r}, "
                             "relative to the checkpoint), which a fine-tuning run keeps: leave backbone at its default")

    def model_config(self) -> SpatialScoreConfig:
        return SpatialScoreConfig(backbone=self.backbone, lora_rank=self.lora_rank, lora_alpha=self.lora_alpha,
                                  lora_vision=self.lora_vision, max_pixels=self.max_pixels,
                                  preference=PREFERENCE_BY_LOSS[self.loss])  # fmt: skip


def _same_model(name: str, saved: str, checkpoint: Path) -> bool:
    """Whether a backbone name and a checkpoint's saved one (a folder relative to it, or a Hub id) agree."""
    if (checkpoint / saved).is_dir() and Path(name).is_dir():
        return (checkpoint / saved).resolve() == Path(name).resolve()
    return name == saved


def pair_noise(seed: int, step: int, position: int, n: int, device) -> torch.Tensor:
    """(2, n) standard normals for one pair, independent of the process that scores it."""
    g = torch.Generator().manual_seed(hash((seed, step, position)) & 0x7FFFFFFFFFFF)
    return torch.randn(2, n, generator=g).to(device)


def pair_loss(mu_w, ls_w, mu_l, ls_l, config: RewardTrainingConfig, noise: torch.Tensor | None) -> torch.Tensor:
    """Per-pair loss: BT (MC or closed form) + sigma_reg * KL of both scores to the sigma prior."""
    if config.loss == "mc":
        bt = bt_mc_loss(mu_w, ls_w, mu_l, ls_l, noise[:, 0], noise[:, 1])
    else:
        bt = bt_closed_loss(mu_w, ls_w, mu_l, ls_l)
    reg = sigma_prior_kl(ls_w, config.sigma_prior) + sigma_prior_kl(ls_l, config.sigma_prior)
    return bt + config.sigma_reg * reg


class RewardTrainer:
    def __init__(self, config: RewardTrainingConfig, accelerator=None, progress: bool = True):
        from accelerate import Accelerator

        config.validate()
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        if accelerator is None:
            mp = config.mixed_precision
            if mp == "auto":
                mp = "bf16" if torch.cuda.is_available() else "no"
            # cpu=True without GPUs makes `accelerate launch` on CPU join a gloo process group.
            accelerator = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
        self.acc = accelerator
        if config.batch_size % self.acc.num_processes:
            raise ValueError(f"batch_size {config.batch_size} does not divide by {self.acc.num_processes} processes")
        self.progress = progress and self.acc.is_main_process
        self.out = Path(config.output_dir)
        self.ckpt_dir = Path(config.checkpoint_dir or self.out / "checkpoints")
        self.skipped: set[str] = set()
        self._stop = False  # set by SIGTERM

    # ---- data -------------------------------------------------------------------------------------

    def load_data(self) -> tuple[list[PairRow], list[PairRow]]:
        c = self.config
        sources = [s.strip() for s in c.pairs.split(",") if s.strip()]
        if not sources:
            sources = [str(self.out / "pairs")]
            if self.acc.is_main_process:
                ensure_pairs(sources[0], c.generate_pairs, c.pairs_seed)
            self.acc.wait_for_everyone()
        train, test = [], []
        for source in sources:
            train += load_pairs(source, "train")
            names = splits_of(source)
            has_test = "test" in names or not names  # unknown splits: try loading one
            try:
                test += load_pairs(source, "test") if has_test else []
            except DatasetError:
                pass
        train = self.check_prompts(train)
        test = self.check_prompts(test)
        if not train:
            raise DatasetError(f"{', '.join(sources)} has no usable training pairs")
        if c.eval_pairs:
            test = test[: c.eval_pairs]
        # Every process checks every test row now, so a bad one cannot stop a single rank mid-evaluation
        # (the others would wait for it in the all-reduce) or after an optimiser step.
        return train, self.check_images(test)

    def check_images(self, rows: list[PairRow]) -> list[PairRow]:
        good = []
        for r in rows:
            try:
                r.decode()
                good.append(r)
            except BadRowError as e:
                self.bad_row(e)
        return good

    def check_prompts(self, rows: list[PairRow]) -> list[PairRow]:
        good = []
        for r in rows:
            if isinstance(r.prompt, str) and r.prompt.strip():
                good.append(r)
                continue
            self.bad_row(BadRowError(f"{r.where}: the prompt is empty"))
        return good

    def check_reserved(self, rows: list[PairRow], model) -> list[PairRow]:
        good = []
        for r in rows:
            token = model.reserved_token_in(r.prompt)
            if token is None:
                good.append(r)
            else:
                self.bad_row(BadRowError(f"{r.where}: the prompt contains the reserved token {token!r}"))
        return good

    def bad_row(self, err: BadRowError) -> None:
        if self.config.on_bad_row == "stop":
            raise err
        if str(err) not in self.skipped:
            self.skipped.add(str(err))
            if self.acc.is_main_process:
                print(f"skipping bad pair: {err}", file=sys.stderr, flush=True)

    def decode_batch(self, rows: list[PairRow], order: list[int], start: int, count: int):
        """`count` decodable pairs from order[start:], replacing bad ones with the next in order.

        Every process decodes the whole global batch and keeps its slice: all ranks then agree on which
        rows were bad (a `stop` raises on all of them together, a skip never hands one pair to two ranks).
        """
        out, k = [], start
        while len(out) < count:
            row = rows[order[k % len(order)]]
            k += 1
            try:
                out.append(row.decode())
            except BadRowError as e:
                self.bad_row(e)
                if k - start > len(order):
                    raise DatasetError("no decodable pairs left") from None
        return out

    def order(self, n: int, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g).tolist()

    # ---- checkpoints ------------------------------------------------------------------------------

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.ckpt_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        found = [p for p in found if (p / "trainer_state.pt").is_file()]
        return found[-1] if found else None

    def save_checkpoint(self, model, opt, sched, step: int) -> None:
        if self.acc.is_main_process:
            path = self.ckpt_dir / f"step-{step}"
            tmp = self.ckpt_dir / f".tmp-step-{step}"
            shutil.rmtree(tmp, ignore_errors=True)
            self.acc.unwrap_model(model).save_pretrained(tmp)
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                        "skipped": sorted(self.skipped), "config": asdict(self.config)}, tmp / "trainer_state.pt")  # fmt: skip
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)  # a checkpoint appears whole or not at all
            done = sorted(self.ckpt_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
            for old in done[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def open_metrics(self, start: int):
        """metrics.jsonl for appending, without rows past `start` (steps a resumed run will redo)."""
        trim_jsonl(self.out / "metrics.jsonl", steps_up_to(start))
        return open(self.out / "metrics.jsonl", "a")

    def load_checkpoint(self, model: SpatialScore, path: Path) -> None:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(model.vlm, load_peft_weights(str(path / "adapter"), device="cpu"))
        model.load_head(path)

    # ---- training ---------------------------------------------------------------------------------

    def run(self) -> Path:
        c, acc = self.config, self.acc
        t0 = time.perf_counter()
        train, test = self.load_data()
        torch.manual_seed(c.seed)
        # mixed_precision "no" means fp32 weights too, not bf16 weights without autocast.
        dtype = torch.float32 if acc.mixed_precision == "no" else None
        if c.init_from:
            model = SpatialScore.from_pretrained(c.init_from, device=acc.device, dtype=dtype, trainable=True)
            model.config.preference = PREFERENCE_BY_LOSS[c.loss]  # what this run's loss trains
        else:
            model = SpatialScore.from_backbone(c.model_config(), device=acc.device, dtype=dtype)
        # Rows whose prompt writes out a special token fail in `encode` on one rank only (the others
        # would then wait in the all-reduce): every process drops or stops on them here, together.
        train, test = self.check_reserved(train, model), self.check_reserved(test, model)
        if not train:
            raise DatasetError("no usable training pairs are left once prompts with special tokens are dropped")
        if c.gradient_checkpointing:
            model.vlm.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        resume_from = self.latest_checkpoint() if c.resume else None
        if resume_from is not None:
            state = torch.load(resume_from / "trainer_state.pt", map_location="cpu", weights_only=False)
            changed = check_same_run(state.get("config"), asdict(c), RUN_IDENTITY, QUIET_CHANGES, resume_from)
            if changed and acc.is_main_process:
                print(f"resuming with changed settings: {', '.join(changed)}", flush=True)
            self.load_checkpoint(model, resume_from)
        model.train()
        opt = torch.optim.AdamW(model.trainable_parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, c.warmup))
                                                  * 0.5 * (1 + math.cos(math.pi * min(1.0, s / c.steps))))  # fmt: skip
        model, opt = acc.prepare(model, opt)
        start = 0
        if resume_from is not None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start = state["step"]
            self.skipped |= set(state.get("skipped", []))
        self.out.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            (self.out / "train_config.json").write_text(json.dumps(asdict(c), indent=1))
        metrics = self.open_metrics(start) if acc.is_main_process else None
        from tqdm.auto import tqdm

        bar = tqdm(total=c.steps, initial=start, desc="train SpatialScore", disable=not self.progress)
        local = c.batch_size // acc.num_processes
        lo = acc.process_index * local
        per_epoch = max(1, len(train) // c.batch_size)
        last_eval = {}
        step = start
        restore_sigterm = stop_on_sigterm(self)
        try:
            for step in range(start, c.steps):
                epoch, k = divmod(step, per_epoch)
                order = self.order(len(train), epoch)
                batch = self.decode_batch(train, order, k * c.batch_size, c.batch_size)[lo : lo + local]
                prompts = [p for p, _, _ in batch]
                enc = acc.unwrap_model(model).encode(prompts * 2, [w for _, w, _ in batch] + [l for _, _, l in batch])
                with acc.autocast():
                    mu, ls = model(**enc)
                noise = None
                if c.loss == "mc":
                    noise = torch.stack([pair_noise(c.seed, step, lo + i, c.mc_samples, acc.device) for i in range(local)])
                loss = pair_loss(mu[:local], ls[:local], mu[local:], ls[local:], c, noise).mean()
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                # The SIGTERM flag rides along, so every process stops after the same step.
                stats = torch.stack([loss.detach().float(), (mu[:local] > mu[local:]).float().mean(),
                                     sigma_from_log(ls.detach()).float().mean(),
                                     torch.tensor(float(self._stop), device=loss.device)])  # fmt: skip
                stats = acc.reduce(stats, reduction="mean")
                row = {"step": step + 1, "loss": round(stats[0].item(), 5), "accuracy": round(stats[1].item(), 4),
                       "sigma": round(stats[2].item(), 5), "lr": sched.get_last_lr()[0],
                       "elapsed_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
                if (step + 1) % c.eval_every == 0 or step + 1 == c.steps:
                    last_eval = self.evaluate(acc.unwrap_model(model), test)
                    row.update(last_eval)
                    model.train()
                if (step + 1) % c.checkpoint_every == 0 and step + 1 < c.steps:
                    self.save_checkpoint(model, opt, sched, step + 1)
                if metrics is not None:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}", sigma=f"{row['sigma']:.3f}")
                if stats[3].item() > 0 and step + 1 < c.steps:
                    if (step + 1) % c.checkpoint_every:  # else saved just above
                        self.save_checkpoint(model, opt, sched, step + 1)
                    raise KeyboardInterrupt(f"stopped on SIGTERM after step {step + 1} (checkpoint saved)")
        except BadRowError:
            self.save_checkpoint(model, opt, sched, step)  # keep what was learnt up to the bad row
            raise
        finally:
            restore_sigterm()
            bar.close()
            if metrics is not None:
                metrics.close()
        if acc.is_main_process:
            acc.unwrap_model(model).save_pretrained(self.out)
            summary = {"steps": c.steps, "train_pairs": len(train), "test_pairs": len(test),
                       "skipped_pairs": len(self.skipped), "wall_s": round(time.perf_counter() - t0, 1),
                       "processes": acc.num_processes, **last_eval}  # fmt: skip
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        acc.wait_for_everyone()
        return self.out

    @torch.no_grad()
    def evaluate(self, model: SpatialScore, test: list[PairRow]) -> dict:
        """Pairwise accuracy (chosen scored above rejected) on the test split, sharded over processes."""
        if not test:
            return {}
        acc = self.acc
        model.eval()
        mine = test[acc.process_index :: acc.num_processes]
        correct = torch.zeros(2, device=acc.device)
        for k in range(0, len(mine), 32):
            batch = []
            batch = [row.decode() for row in mine[k : k + 32]]  # rows were checked in load_data
            prompts = [p for p, _, _ in batch]
            r = model.score(prompts * 2, [w for _, w, _ in batch] + [l for _, _, l in batch], batch_size=64)
            n = len(batch)
            correct[0] += float((r.mu[:n] > r.mu[n:]).sum())
            correct[1] += n
        correct = acc.reduce(correct, reduction="sum")
        return {"eval_accuracy": round((correct[0] / correct[1].clamp_min(1)).item(), 4), "eval_n": int(correct[1].item())}
