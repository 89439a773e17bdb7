"""GenerationConfig: which FLUX pipeline to load and how to sample from it, with two named presets.

`toy` is the bundled checkpoint in assets/toy/flux (offline, CPU); `flux-dev` is
black-forest-labs/FLUX.1-dev in bf16. Model ids and paths come from the config or the
environment (`GenerationConfig.from_env`), never from code edits.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..cli import parse_bool
from ..world.vocab import RELATIONS

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY_BASE = REPO_ROOT / "assets" / "toy" / "flux"
TOY_LORA = REPO_ROOT / "assets" / "toy" / "rl-lora"
TUNED = "tuned"


class ConfigError(ValueError):
    """A generation setting that cannot work; the message says which and what is allowed."""


class ModelUnavailableError(RuntimeError):
    """The base model cannot be loaded; the message names what was looked for and how to supply it."""


class AdapterUnavailableError(RuntimeError):
    """A LoRA adapter that cannot be found or loaded; the message says what was looked for."""


@dataclass
class GenerationConfig:
    """Generation: a FLUX pipeline (base model + optional RL LoRA) and its sampling defaults."""

    preset: str = "toy"
    """Named preset that filled the other fields: `toy` (bundled, offline) or `flux-dev`."""
    base_model: str = str(TOY_BASE)
    """Base FluxPipeline: a local folder in the diffusers layout or a Hub repo id."""
    lora: str | None = str(TOY_LORA)
    """RL-tuned LoRA (folder or Hub repo id) loaded as the `tuned` adapter; empty: none."""
    steps: int = 20
    """Denoising steps."""
    guidance: float = 3.5
    """FLUX distilled guidance scale (fed to the transformer's guidance embedding)."""
    size: int = 32
    """Image side in pixels (a multiple of 16; the toy is trained at 32)."""
    dtype: str = "auto"
    """`float32`, `bfloat16`, or `auto` (bf16 on CUDA when supported, fp32 otherwise)."""
    device: str = "auto"
    """`cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when available)."""
    batch_size: int = 16
    """Images per transformer forward; larger requests are split (results do not depend on it)."""
    max_sequence_length: int = 512
    """T5 prompt length cap; the tokenizer's own `model_max_length` applies when smaller."""
    local_files_only: bool = False
    """Never contact the Hub (also implied by HF_HUB_OFFLINE=1)."""
    cache_dir: str | None = None
    """Hugging Face cache for Hub downloads; empty: the default (HF_HOME / HF_HUB_CACHE)."""
    compile: bool = False
    """`torch.compile` the transformer. Same pixels; on the toy's CPU path 0.74-0.75x the eager
    render time at 64 px, 0.49-0.96x at 32 px (docs/BENCHMARKS.md), after a compile of seconds
    to tens of seconds on the first call of each image size, batch shape and adapter state. Off
    by default so no visitor waits for a compile."""

    @classmethod
    def for_preset(cls, name: str = "toy", **overrides) -> "GenerationConfig":
        """The named preset's config, with `overrides` (None values keep the preset's)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown generation preset {name!r}; choose from {', '.join(PRESETS)}")
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown generation setting(s): {', '.join(sorted(unknown))}")
        config = replace(cls(), **{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})
        config.validate()
        return config

    @classmethod
    def from_env(cls, env: dict | None = None) -> "GenerationConfig":
        """SPATIAL_PRESET (toy | flux-dev), SPATIAL_BASE_MODEL (folder or Hub id), SPATIAL_LORA
        (folder or Hub id of the RL adapter; `none` for none) and SPATIAL_COMPILE (1 | 0) over the
        preset's defaults."""
        env = os.environ if env is None else env
        config = cls.for_preset(env.get("SPATIAL_PRESET") or "toy", base_model=env.get("SPATIAL_BASE_MODEL") or None)
        lora = (env.get("SPATIAL_LORA") or "").strip()
        if lora:
            config.lora = None if lora.lower() == "none" else lora
        if flag := (env.get("SPATIAL_COMPILE") or "").strip():
            try:
                config.compile = parse_bool(flag)
            except argparse.ArgumentTypeError:
                raise ConfigError(f"SPATIAL_COMPILE must be 1 or 0, got {flag!r}") from None
        return config

    def validate(self) -> None:
        if not self.base_model:
            raise ConfigError("base_model is empty; give a FluxPipeline folder or a Hub repo id")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.size % 16 or not 16 <= self.size <= 2048:
            raise ConfigError(f"size must be a multiple of 16 between 16 and 2048, got {self.size}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 1 <= self.max_sequence_length <= 512:
            raise ConfigError("max_sequence_length must be between 1 and 512 (FLUX's T5 limit)")

    def to_dict(self) -> dict:
        return asdict(self)


# Presets override the defaults above (which are the toy's). flux-dev follows the model card:
# bf16, 28 steps, guidance 3.5, 1024 px; its scheduler comes from the repo's own config.
PRESETS: dict[str, dict] = {
    "toy": {"preset": "toy"},
    "flux-dev": {
        "preset": "flux-dev",
        "base_model": "black-forest-labs/FLUX.1-dev",
        "lora": None,
        "steps": 28,
        "guidance": 3.5,
        "size": 1024,
        "dtype": "bfloat16",
        "batch_size": 2,
    },
}


@dataclass
class PretrainConfig:
    """Training the toy FLUX from scratch on SpatialWorld renders."""

    out: str = "assets/toy/flux"
    """Output folder: a FluxPipeline `save_pretrained` layout (plus `checkpoints/` while training)."""
    seed: int = 0
    """Seed of initialisation, data order and noise."""
    data_seed: int = 10
    """SpatialWorld seed of the training examples (evaluation uses other seeds)."""
    examples: int = 24000
    """Distinct training examples, rendered (and later encoded) once at the start."""
    distractors: bool = False
    """Keep SpatialWorld's unnamed distractor objects in the training scenes."""
    min_size: float = 0.25
    """Smallest object in the training renders (fraction of the side; SpatialWorld's default is 0.16).
    The oracle judges any size and any position; the generator only has to draw one way that satisfies
    a prompt, and 0.25 at 32 px is exactly 2 x 2 of the toy's 4 px tokens."""
    max_size: float = 0.25
    """Largest object in the training renders (SpatialWorld's default is 0.26). Objects of 0.375 (3 x 3
    tokens) gave 26% vs 37% of named objects found after 1,000 steps."""
    snap: int = 8
    """Box edges of training objects on a grid of 1/snap of the side (8: the 4 px token grid at 32 px; 0:
    anywhere), so a shape always covers its tokens the same way; with a plain background this took
    1,000-step runs from blurred blobs to crisp shapes (docs/TRAINING.md)."""
    background: int = 240
    """Grey level of one plain background for every training render (0: SpatialWorld's random tints)."""
    vae_steps: int = 500
    """Autoencoder steps (stage 1)."""
    vae_from: str | None = None
    """Reuse the autoencoder of a saved toy pipeline folder instead of training one (skips stage 1; for
    short recipe pilots of stage 2)."""
    init_from: str | None = None
    """Continue from a saved toy pipeline folder instead of starting from scratch: its autoencoder (with
    its latent scaling, so latents mean what they meant), transformer and text encoders are the
    starting weights, stage 1 is skipped, and stage 2 runs `steps` more steps on this run's data (for
    a base that unlearns part of what it knew, e.g. with `mirror_prob`)."""
    model: str = ""
    """ToyFluxConfig fields to change, as a JSON object (e.g. '{"object_tokens": false}'); empty: the defaults."""
    vae_batch: int = 32
    """Autoencoder batch size."""
    vae_lr: float = 2e-3
    """Autoencoder peak learning rate, cosine-decayed."""
    steps: int = 4000
    """Transformer steps (stage 2)."""
    batch: int = 32
    """Transformer batch size."""
    lr: float = 1e-3
    """Transformer (and text encoders) peak learning rate, cosine-decayed to 10%."""
    warmup: int = 200
    """Linear warm-up steps of stage 2."""
    sigma_shift: float = 3.0
    """Time shift of the training noise levels, s -> shift s / (1 + (shift - 1) s) on logit-normal s
    (0: the sampler's own shift for the image's token count, 1.6 at 64 tokens). Layout, colour and shape
    are decided at high noise; shift 3 (SD3's) beat 1.6 there: 85% vs 78% of named colours present and
    26% vs 23% of named objects found after 1,000 steps (docs/TRAINING.md)."""
    canonical: bool = True
    """Train on one layout per prompt, the one its relations pick out (SpatialWorld's
    `WorldConfig.canonical`), instead of a random layout that satisfies it."""
    mirror_prob: float = 0.0
    """Share of training scenes shown with every stated relation reversed (SpatialWorld's
    `WorldConfig.mirror_prob`): spatially wrong captions, which leave the base drawing the named
    objects but choosing the layout the prompt asks for only as often as its data did."""
    rare_relations: str = ""
    """Comma-separated relation words ("below,right of") that training captions seldom use: each is
    restated as its opposite with the roles swapped except with chance `rare_relation_prob`
    (SpatialWorld's `WorldConfig.rare_relations`; the scenes are unchanged, only the wording)."""
    rare_relation_prob: float = 1.0
    """Chance that a relation in `rare_relations` keeps its own word (1: no effect)."""
    layout_weight: float = 0.0
    """Weight of an auxiliary loss that asks a linear readout of the T5 output at each object token for
    where that object sits in the render (dropped after training). FLUX gives text tokens no position,
    so the transformer reads the prompt as a set: unless T5 itself writes word order into each token,
    "A left of B" and "B left of A" look the same to it (0: off)."""
    attention_weight: float = 0.1
    """Weight of TokenCompose's token loss on the double-stream blocks' attention: each object token
    should be attended by the image tokens its object covers in the render (0: off). A direct signal
    for where each named object goes, which the text encoder can only serve by telling subject from
    object."""
    ema_decay: float = 0.998
    """Decay of the weight average that is saved (0 saves the raw weights)."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every this many steps (both stages)."""
    log_every: int = 50
    """Append a row to `out/pretrain_log.jsonl` every this many steps (both stages)."""
    probe_every: int = 600
    """Every this many steps, render `probe_prompts` held-out prompts and log the oracle's accuracy (0: never)."""
    probe_prompts: int = 32
    """Prompts in each probe."""
    resume: bool = True
    """Continue from `out/checkpoints` when present."""
    threads: int = 2
    """Torch CPU threads per process (1 under `accelerate launch` with one process per core)."""
    device: str = "cpu"
    """`cpu` or `cuda`. The shipped checkpoint is trained on the CPU."""

    def toy_config(self):
        """The ToyFluxConfig this run builds: the defaults with `model`'s fields replaced."""
        from .toy import ToyFluxConfig  # diffusers, only once the command line has been read

        if not self.model.strip():
            return ToyFluxConfig()
        try:
            fields = json.loads(self.model)
            return ToyFluxConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise ValueError(f"model must be a JSON object of ToyFluxConfig fields ({e})") from None

    def rare_relation_words(self) -> tuple[str, ...]:
        return tuple(w.strip() for w in self.rare_relations.split(",") if w.strip())

    def validate(self) -> None:
        for name in ("examples", "vae_steps", "vae_batch", "steps", "batch", "checkpoint_every", "log_every",
                     "threads", "probe_prompts"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.snap < 0 or not 0 <= self.background <= 255:
            raise ValueError(f"snap must be >= 0 and background in 0..255, got {self.snap}, {self.background}")
        if not 0.05 <= self.min_size <= self.max_size <= 0.4:
            raise ValueError(f"object sizes must satisfy 0.05 <= min_size <= max_size <= 0.4, got {self.min_size}, {self.max_size}")
        if not 0 <= self.mirror_prob < 0.5:
            raise ValueError(f"mirror_prob must be in [0, 0.5) (at 0.5 the words no longer decide the layout), got {self.mirror_prob}")
        unknown = [r for r in self.rare_relation_words() if r not in RELATIONS]
        if unknown or not 0 <= self.rare_relation_prob <= 1:
            raise ValueError(f"rare_relations must name relations among {', '.join(RELATIONS)} and rare_relation_prob "
                             f"lie in [0, 1], got {self.rare_relations!r}, {self.rare_relation_prob}")  # fmt: skip
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.sigma_shift < 0:
            raise ValueError(f"sigma_shift must be 0 (the sampler's) or positive, got {self.sigma_shift}")
        if self.layout_weight < 0 or self.attention_weight < 0:
            raise ValueError(f"layout_weight and attention_weight must be 0 (off) or positive, got "
                             f"{self.layout_weight}, {self.attention_weight}")  # fmt: skip
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        if self.vae_from and not (Path(self.vae_from) / "vae" / "config.json").is_file():
            raise ValueError(f"vae_from {self.vae_from} is not a pipeline folder with a vae/ inside")
        if self.init_from:
            missing = [d for d in ("vae", "transformer", "text_encoder", "text_encoder_2")
                       if not (Path(self.init_from) / d / "config.json").is_file()]  # fmt: skip
            if missing:
                raise ValueError(f"init_from {self.init_from} is not a saved toy pipeline folder (no {', '.join(missing)} inside)")
            if self.vae_from:
                raise ValueError("init_from already brings its autoencoder; leave vae_from empty")
        self.toy_config()
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("device cuda was asked for but this machine has no CUDA GPU")
