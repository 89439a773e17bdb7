"""FluxPipeline.__call__ taken apart: the pieces a sampler needs, usable one step at a time.

`generate_images` is built from these pieces and renders exactly what `FluxPipeline.__call__`
renders for the same prompts and per-seed CPU generators (tests/test_generation_service.py proves
it). GRPO drives the same pieces with its own SDE step:

    cond = encode_prompts(pipe, prompts)
    x = initial_latents(pipe, seeds, size)                  # packed (B, tokens, 4 * channels)
    sigmas = sigma_schedule(pipe, steps, size)              # steps + 1 values, 1 -> 0, shifted
    for i in range(steps):
        v = velocity(pipe, x, sigmas[i], cond, guidance_vector(pipe, 3.5, len(x)))
        x = euler_step(x, v, sigmas[i], sigmas[i + 1])      # or an SDE step with a log-prob
    images = decode(pipe, x, size)
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from PIL import Image


class PromptEmbeds(NamedTuple):
    """FLUX's text conditioning: T5 sequence embeddings, CLIP pooled embedding, text position ids."""

    embeds: torch.Tensor  # (B, T, joint_attention_dim)
    pooled: torch.Tensor  # (B, pooled_projection_dim)
    text_ids: torch.Tensor  # (T, 3), zeros

    def select(self, index) -> "PromptEmbeds":
        """Rows `index` (a slice, list or tensor), e.g. to pair each prompt with several seeds."""
        return PromptEmbeds(self.embeds[index], self.pooled[index], self.text_ids)


def sequence_length(pipe: FluxPipeline, cap: int = 512) -> int:
    """T5 tokens per prompt: the tokenizer's own limit (the toy's is 44) or `cap`, whichever is smaller."""
    return int(min(cap, getattr(pipe.tokenizer_2, "model_max_length", cap) or cap))


@torch.no_grad()
def encode_prompts(pipe: FluxPipeline, prompts: Sequence[str], max_sequence_length: int = 512) -> PromptEmbeds:
    """Prompts -> (T5 embeds, CLIP pooled, text ids), through the pipeline's own `encode_prompt`."""
    embeds, pooled, text_ids = pipe.encode_prompt(list(prompts), prompt_2=None, device=pipe._execution_device,
                                                  max_sequence_length=sequence_length(pipe, max_sequence_length))  # fmt: skip
    return PromptEmbeds(embeds, pooled, text_ids)


def latent_side(pipe: FluxPipeline, size: int) -> int:
    """Latent height/width for an image side: VAE downsampling, rounded to FLUX's 2x2 packing."""
    return 2 * (int(size) // (pipe.vae_scale_factor * 2))


def initial_latents(pipe: FluxPipeline, seeds: Sequence[int], size: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Packed initial noise, one CPU generator per seed (so a seed draws the same noise on any device,
    in any batch, for the base and the tuned model): FluxPipeline.prepare_latents with those generators."""
    channels = pipe.transformer.config.in_channels // 4
    dtype = dtype or pipe.text_encoder_2.dtype  # __call__ draws in the prompt embeddings' dtype
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    latents, _ = pipe.prepare_latents(len(generators), channels, size, size, dtype, pipe._execution_device, generators)
    return latents


def image_ids(pipe: FluxPipeline, size: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    side = latent_side(pipe, size) // 2
    return pipe._prepare_latent_image_ids(1, side, side, device or pipe._execution_device, dtype)


def sigma_schedule(pipe: FluxPipeline, steps: int, size: int) -> torch.Tensor:
    """The `steps + 1` sigmas `__call__` walks (1 -> ... -> 0, float32), from the pipeline's own
    scheduler config: FLUX's linspace(1, 1/steps), time-shifted by mu for this image's token count."""
    config = pipe.scheduler.config
    tokens = (latent_side(pipe, size) // 2) ** 2
    mu = calculate_shift(tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)  # a copy: the shared one keeps its state
    sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
    scheduler.set_timesteps(steps if sigmas is None else None, sigmas=sigmas, mu=mu, device=pipe._execution_device)
    return scheduler.sigmas


def guidance_vector(pipe: FluxPipeline, scale: float, batch: int) -> torch.Tensor | None:
    """FLUX.1-dev's distilled guidance as the transformer takes it (None for models without the embedding)."""
    if not pipe.transformer.config.guidance_embeds:
        return None
    return torch.full([1], float(scale), device=pipe._execution_device, dtype=torch.float32).expand(batch)


def velocity(pipe: FluxPipeline, latents: torch.Tensor, sigma, cond: PromptEmbeds, guidance: torch.Tensor | None,
             img_ids: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """One transformer evaluation: the flow velocity (noise - data) at noise level `sigma`.

    The timestep goes in as `__call__` sends it: sigma * 1000 in float32, cast to the latents' dtype, / 1000.
    Gradients flow when the caller enables them (GRPO's training pass).
    """
    if img_ids is None:
        side = int(round(latents.shape[1] ** 0.5))
        img_ids = pipe._prepare_latent_image_ids(1, side, side, latents.device, latents.dtype)
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device)
    t = (sigma * pipe.scheduler.config.num_train_timesteps).expand(latents.shape[0]).to(latents.dtype)
    with pipe.transformer.cache_context("cond"):
        return pipe.transformer(hidden_states=latents, timestep=t / 1000, guidance=guidance,
                                pooled_projections=cond.pooled, encoder_hidden_states=cond.embeds,
                                txt_ids=cond.text_ids, img_ids=img_ids, joint_attention_kwargs={},
                                return_dict=False)[0]  # fmt: skip


def euler_step(latents: torch.Tensor, v: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """x_{next} = x + (sigma_next - sigma) * v, in float32, cast back like FlowMatchEulerDiscreteScheduler.step."""
    return (latents.to(torch.float32) + (sigma_next - sigma) * v).to(v.dtype)


@torch.no_grad()
def denoise(pipe: FluxPipeline, latents: torch.Tensor, cond: PromptEmbeds, sigmas: torch.Tensor, guidance: float,
            callback: Callable[[int, int], None] | None = None) -> torch.Tensor:  # fmt: skip
    """Deterministic (ODE) sampling from `latents` along `sigmas`; `callback(step, total)` after each step."""
    g = guidance_vector(pipe, guidance, latents.shape[0])
    ids = pipe._prepare_latent_image_ids(1, *(2 * [int(round(latents.shape[1] ** 0.5))]), latents.device, latents.dtype)
    steps = len(sigmas) - 1
    for i in range(steps):
        v = velocity(pipe, latents, sigmas[i], cond, g, ids)
        latents = euler_step(latents, v, sigmas[i], sigmas[i + 1])
        if callback is not None:
            callback(i + 1, steps)
    return latents


@torch.no_grad()
def decode(pipe: FluxPipeline, latents: torch.Tensor, size: int) -> list[Image.Image]:
    """Packed latents -> PIL images: unpack, undo the VAE's scaling and shift, decode, postprocess."""
    vae = pipe.vae
    x = pipe._unpack_latents(latents, size, size, pipe.vae_scale_factor)
    x = (x / vae.config.scaling_factor) + vae.config.shift_factor
    image = vae.decode(x.to(vae.device), return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")


@torch.no_grad()
def generate_images(pipe: FluxPipeline, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance: float,
                    size: int, max_sequence_length: int = 512,
                    callback: Callable[[int, int], None] | None = None) -> list[Image.Image]:  # fmt: skip
    """One image per (prompt, seed) pair, in order: encode, noise, schedule, denoise, decode."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
    cond = encode_prompts(pipe, prompts, max_sequence_length)
    latents = initial_latents(pipe, seeds, size, cond.embeds.dtype)
    latents = denoise(pipe, latents, cond, sigma_schedule(pipe, steps, size), guidance, callback)
    return decode(pipe, latents, size)
