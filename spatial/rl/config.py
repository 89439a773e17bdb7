"""GRPOConfig: every knob of a Spatial-RL run, with defaults that work and two named presets."""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass

from spatial.cli import require_finite
from spatial.scorers import check_scorer_name


@dataclass
class GRPOConfig:
    """Spatial-RL: GRPO on a FLUX transformer with a LoRA, rewarded by a spatial scorer."""

    output_dir: str = "runs/grpo"
    """Where checkpoints, metrics.jsonl, evaluation images and the final LoRA go."""
    preset: str = "toy"
    """Generation preset whose defaults fill unset fields: `toy` or `flux-dev`."""
    base_model: str | None = None
    """Base FLUX pipeline (folder or Hub id); empty: the preset's."""
    reward: str = "spatialscore"
    """Reward: `spatialscore`, `judge` (zero-shot VLM), `oracle` (SpatialWorld rules) or a checkpoint path."""
    reward_model: str | None = None
    """SpatialScore checkpoint (folder or Hub id); empty: the preset's bundled one."""
    prompts: str | None = None
    """Training prompts, one per line; empty: SpatialWorld prompts from `prompt_seed`."""
    num_prompts: int = 4000
    """How many SpatialWorld prompts to draw when `prompts` is empty."""
    prompt_seed: int = 101
    """Seed of the SpatialWorld training prompts (evaluation uses other seeds)."""
    group_size: int = 8
    """G: images sampled per prompt; advantages are normalised within each group."""
    top_k: int = 0
    """Keep only the k best and k worst of each group (0 keeps all; needs 2k <= G)."""
    prompts_per_iteration: int = 4
    """Prompts (groups) sampled per iteration and process."""
    iterations: int = 100
    """Sampling + training rounds."""
    inner_epochs: int = 1
    """Passes over each iteration's samples."""
    sample_steps: int = 8
    """Denoising steps when sampling for training."""
    eval_steps: int = 20
    """Denoising steps for evaluation images."""
    guidance: float = 3.5
    """FLUX distilled guidance scale."""
    resolution: int = 32
    """Image side in pixels (the toy FLUX is trained at 32)."""
    noise_level: float = 0.7
    """a in the SDE's std = a * sqrt(sigma / (1 - sigma))."""
    same_latent: bool = False
    """Start every member of a group from the same initial noise (Flow-GRPO's `sample.same_latent`):
    the group then differs only by the SDE noise, which is what the log-probs credit."""
    sde_window: int = 0
    """Stochastic sampling steps, from the first (0: all): later steps are deterministic and not
    trained, so a group's spread comes only from the trained steps (Flow-GRPO-Fast)."""
    train_timestep_fraction: float = 1.0
    """Fraction of the sampling steps trained on (the earliest ones, where layout is decided)."""
    lora_rank: int = 16
    """LoRA rank on the transformer's attention and feed-forward layers."""
    lora_alpha: int = 32
    """LoRA alpha (scale = alpha / rank)."""
    learning_rate: float = 3e-4
    """AdamW learning rate for the LoRA."""
    clip_range: float = 1e-4
    """PPO clip range on the probability ratio."""
    adv_clip: float = 5.0
    """Advantages are clipped to [-adv_clip, adv_clip]."""
    beta: float = 0.004
    """Weight of the KL penalty to the reference (the LoRA-off transformer)."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (saves memory on large models)."""
    mixed_precision: str = "auto"
    """`bf16`, `no`, or `auto` (bf16 on CUDA, fp32 on CPU). Log-probs are always fp32."""
    ema: bool = False
    """Keep an exponential moving average of the LoRA weights and save it."""
    ema_decay: float = 0.95
    """EMA decay, applied once per iteration (after its last inner epoch)."""
    save_every: int = 10
    """Save a checkpoint every this many iterations."""
    eval_every: int = 10
    """Render the fixed evaluation prompts every this many iterations."""
    eval_prompts: int = 4
    """How many fixed evaluation prompts (x 2 seeds) to render; 0: none."""
    seed: int = 0
    """Seed of sampling noise and initialisation."""
    resume: bool = False
    """Continue from the last checkpoint in output_dir."""

    def validate(self) -> None:
        """Refuse bad configurations before any compute, with one clear message."""
        require_finite(self)
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        try:
            check_scorer_name(self.reward)
        except FileNotFoundError as e:
            raise ValueError(f"reward: {e}") from None
        if self.reward_model:
            # The checkpoint of the spatialscore reward; with another reward it would silently replace it.
            if self.reward != "spatialscore":
                raise ValueError(f"reward_model applies to reward=spatialscore only, but reward is {self.reward!r}: "
                                 "clear reward_model, or set reward to spatialscore")  # fmt: skip
            try:
                check_scorer_name(self.reward_model)
            except FileNotFoundError as e:
                raise ValueError(f"reward_model: {e}") from None
        if self.eval_prompts < 0:
            raise ValueError(f"eval_prompts must be zero (no evaluation) or more, got {self.eval_prompts}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2 to compare samples, got {self.group_size}")
        if self.top_k < 0 or 2 * self.top_k > self.group_size:
            raise ValueError(f"top_k must satisfy 0 <= 2k <= group_size ({self.group_size}), got k={self.top_k}")
        positive = ("prompts_per_iteration", "iterations", "inner_epochs", "sample_steps", "eval_steps", "lora_rank",
                    "save_every", "eval_every", "num_prompts")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.train_timestep_fraction <= 1:
            raise ValueError("train_timestep_fraction must be in (0, 1]")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.resolution % 16 or not 16 <= self.resolution <= 2048:
            raise ValueError(f"resolution must be a multiple of 16 between 16 and 2048, got {self.resolution}")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError("mixed_precision must be auto, bf16 or no")
        if not 0 < self.noise_level <= 2:
            raise ValueError(f"noise_level must be in (0, 2] (0 leaves the SDE no noise to score), got {self.noise_level}")
        if self.sample_steps < 2:
            raise ValueError("sample_steps must be at least 2: the first step, at sigma = 1, needs a sigma below 1 to cap it")
        for name in ("clip_range", "adv_clip", "max_grad_norm", "lora_alpha"):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("beta", "guidance"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be zero or more, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.sde_window <= self.sample_steps:
            raise ValueError(f"sde_window must be in [0, sample_steps={self.sample_steps}], got {self.sde_window}")
        if self.sde_window and self.trained_steps() < self.sde_window:
            raise ValueError(f"train_timestep_fraction={self.train_timestep_fraction} trains {self.trained_steps()} of the "
                             f"sde_window={self.sde_window} noisy steps: the others would add spread nothing is trained "
                             "on; raise the fraction or shrink the window")  # fmt: skip

    def trained_steps(self) -> int:
        """How many sampling steps, from the first, the policy update trains on."""
        # The epsilon keeps float error from adding a step (25 * 0.28 is 7.000000000000001).
        steps = max(1, math.ceil(self.sample_steps * self.train_timestep_fraction - 1e-9))
        return min(steps, self.sde_window) if self.sde_window else steps

    def to_dict(self) -> dict:
        return asdict(self)


# Presets extend the defaults above. flux-dev follows the paper's top-k study (G=24, k=6).
PRESETS: dict[str, dict] = {
    # The shipped toy run's recipe (docs/TRAINING.md, "Spatial-RL"): k = 2 of G = 8, same-latent groups
    # whose spread comes from the first two (trained) SDE steps, and a KL weight of 0.3: at 0.004 the
    # policy left the region where the toy SpatialScore is right within 200 iterations.
    "toy": {"preset": "toy", "top_k": 2, "learning_rate": 3e-4, "beta": 0.3, "same_latent": True, "sde_window": 2},
    "flux-dev": {
        "preset": "flux-dev",
        "resolution": 512,
        "group_size": 24,
        "top_k": 6,
        "prompts_per_iteration": 2,
        "sample_steps": 10,
        "eval_steps": 28,
        "lora_rank": 32,
        "lora_alpha": 64,
        "learning_rate": 1e-4,
        "gradient_checkpointing": True,
        "train_timestep_fraction": 0.6,
    },
}
