"""Build a GRPO run from its config: the pipeline (generation presets), the policy, the reward and
the prompts, refusing bad configurations before any compute."""

from __future__ import annotations

from pathlib import Path

import torch

from spatial.world import PromptError, parse_prompt, sample_prompts

from .config import GRPOConfig
from .trainer import GRPOTrainer

# SpatialWorld seed of the fixed prompts rendered during training. Another seed than the training
# prompts', but not disjoint requests: 1 of its first 16 asks what a default training prompt asks
# (bench/prompt_overlap.py, docs/TRAINING.md).
EVAL_PROMPT_SEED = 4242


def _accelerator(cuda: bool):
    """The run's Accelerator. Precision is the config's `mixed_precision` (bf16 weights, fp32
    log-probs), never accelerate's: its fp16 loss scaling would need a prepared optimizer."""
    import os

    from accelerate import Accelerator

    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launched not in ("no", ""):
        print(f"note: accelerate's mixed precision ({launched}) is not used; GRPO sets its precision with "
              "--mixed_precision (auto: bf16 on CUDA)", flush=True)  # fmt: skip
    return Accelerator(cpu=not cuda, mixed_precision="no")


class RunConfigError(ValueError):
    """A GRPO configuration that cannot run; one line saying why."""


def load_prompts(config: GRPOConfig) -> list[str]:
    if not config.prompts:
        return sample_prompts(config.num_prompts, config.prompt_seed)
    path = Path(config.prompts)
    if path.is_dir():
        raise RunConfigError(f"prompts {config.prompts} is a folder; give a text file with one prompt per line")
    if not path.is_file():
        raise RunConfigError(f"prompt file {config.prompts} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RunConfigError(f"prompt file {config.prompts} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise RunConfigError(f"prompt file {config.prompts} has no prompts")
    return prompts


def check_judgeable(prompts: list[str], reward: str, preset: str) -> None:
    """The oracle and the toy models read only SpatialWorld's vocabulary: refuse other prompts up front."""
    if reward == "oracle" or preset == "toy":
        for i, p in enumerate(prompts, start=1):
            try:
                parse_prompt(p)
            except PromptError as e:
                raise RunConfigError(f"prompt {i} ({p[:60]!r}) cannot be judged by the {reward} reward: {e}") from None


def build_trainer(config: GRPOConfig, accelerator=None) -> GRPOTrainer:
    from spatial.generation.config import GenerationConfig
    from spatial.generation.service import ModelUnavailableError, load_pipeline
    from spatial.scorers import load_scorer
    from spatial.world import check

    from spatial.generation.config import ConfigError

    from .flux_policy import FluxPolicy
    from .trainer import check_output_dir

    config.validate()
    try:
        check_output_dir(config)
    except ValueError as e:
        raise RunConfigError(str(e)) from None
    prompts = load_prompts(config)
    check_judgeable(prompts, config.reward, config.preset)
    cuda = torch.cuda.is_available()
    # The accelerator first: under `accelerate launch` rank k must load onto its own GPU, cuda:k.
    accelerator = accelerator or _accelerator(cuda)
    device = str(accelerator.device) if accelerator.device.type == "cuda" else "cpu"
    if accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
        # The policy's forward is split into sampling steps, so it is not wrapped by accelerate:
        # LoRA gradients are averaged by the trainer itself (plain data parallel).
        raise RunConfigError(f"GRPO runs data parallel only; launch it with configs/accelerate/ddp.yaml, "
                             f"not {accelerator.distributed_type.value}")  # fmt: skip
    bf16 = config.mixed_precision == "bf16" or (config.mixed_precision == "auto" and cuda)
    try:
        gen = GenerationConfig.for_preset(config.preset, base_model=config.base_model or None,
                                          dtype="bfloat16" if bf16 else "float32", device=device)  # fmt: skip
        pipe = load_pipeline(gen)
    except (ConfigError, ModelUnavailableError) as e:
        raise RunConfigError(str(e)) from None
    try:
        scorer = load_scorer(config.reward_model or config.reward, device=device)
    except Exception as e:  # noqa: BLE001 - any failure to load the reward stops the run before compute
        raise RunConfigError(f"the reward {config.reward_model or config.reward!r} cannot be loaded: {e}") from None
    torch.manual_seed(config.seed)  # the LoRA's initial A matrices; the trainer also syncs them across ranks
    policy = FluxPolicy(pipe, rank=config.lora_rank, alpha=config.lora_alpha,
                        dtype=torch.bfloat16 if bf16 else torch.float32,
                        gradient_checkpointing=config.gradient_checkpointing)  # fmt: skip
    eval_prompts = sample_prompts(config.eval_prompts, EVAL_PROMPT_SEED)
    judge = (lambda p, im: check(im, p).satisfied) if config.preset == "toy" else None
    return GRPOTrainer(config, policy, scorer, prompts, accelerator=accelerator, eval_prompts=eval_prompts, judge=judge)
