"""FluxPolicy: a diffusers FluxPipeline with a LoRA adapter, seen step by step as a GRPO policy.

One transformer serves both the policy (adapter on) and the KL reference (adapter off); nothing
is copied. Every piece is the generation service's (`spatial.generation.sampling`), so a policy
samples exactly what the Generate tab renders, and `generate` is the service's deterministic path.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from diffusers import FluxPipeline
from peft.utils import set_peft_model_state_dict
from safetensors.torch import load_file

from spatial.generation import sampling
from spatial.generation.lora import WEIGHTS_NAME, add_lora, save_lora


class FluxPolicy:
    def __init__(self, pipe: FluxPipeline, adapter_name: str = "rl", rank: int = 16, alpha: int = 32,
                 dtype: torch.dtype = torch.float32, gradient_checkpointing: bool = False):  # fmt: skip
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.adapter_name = adapter_name
        self.dtype = dtype
        self.device = self.transformer.device
        for module in (pipe.vae, pipe.text_encoder, pipe.text_encoder_2, self.transformer):
            module.requires_grad_(False)
            module.eval()
        if adapter_name not in (getattr(self.transformer, "peft_config", None) or {}):
            add_lora(self.transformer, rank=rank, alpha=alpha, adapter_name=adapter_name)
        self.transformer.set_adapter(adapter_name)
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        # LoRA weights train in fp32 even when the frozen base runs in bf16.
        for p in self.trainable_parameters():
            p.data = p.data.float()
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.transformer.named_parameters() if "lora_" in n and f".{self.adapter_name}." in n]

    # ---- conditioning, noise, schedule: the service's own pieces ----------------------------------

    def encode(self, prompts: list[str]) -> sampling.PromptEmbeds:
        return sampling.encode_prompts(self.pipe, prompts)

    @staticmethod
    def select(cond: sampling.PromptEmbeds, index: torch.Tensor) -> sampling.PromptEmbeds:
        return cond.select(index)

    def initial_noise(self, seeds: list[int], size: int) -> torch.Tensor:
        return sampling.initial_latents(self.pipe, seeds, size).float()

    def sigmas(self, steps: int, size: int) -> torch.Tensor:
        return sampling.sigma_schedule(self.pipe, steps, size).float().cpu()

    def guidance(self, scale: float, batch: int) -> torch.Tensor | None:
        return sampling.guidance_vector(self.pipe, scale, batch)

    # ---- the network ---------------------------------------------------------------------------

    def velocity(self, x: torch.Tensor, sigma, cond: sampling.PromptEmbeds, guidance) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return sampling.velocity(self.pipe, x.to(self.dtype), sigma, cond, guidance).float()

    @contextlib.contextmanager
    def adapter_disabled(self):
        self.transformer.disable_adapters()
        try:
            yield
        finally:
            self.transformer.enable_adapters()
            self.transformer.set_adapter(self.adapter_name)

    def reference_velocity(self, x, sigma, cond, guidance) -> torch.Tensor:
        with torch.no_grad(), self.adapter_disabled():
            return self.velocity(x, sigma, cond, guidance)

    def decode(self, latents: torch.Tensor, size: int) -> list:
        return sampling.decode(self.pipe, latents.to(self.pipe.vae.dtype), size)

    def generate(self, prompts, seeds, steps, size, guidance) -> list:
        """Deterministic (ODE) sampling with the adapter on: what the Generate tab renders."""
        return sampling.generate_images(self.pipe, prompts, seeds, steps, guidance, size)

    # ---- persistence ---------------------------------------------------------------------------

    def save_lora(self, path: Path) -> None:
        """diffusers LoRA format, with the adapter metadata so lora_alpha survives a reload."""
        save_lora(self.transformer, path, adapter_name=self.adapter_name)

    def load_lora_weights(self, path: Path) -> None:
        """Load saved weights into the existing adapter in place (the optimizer keeps its parameters)."""
        state = load_file(str(Path(path) / WEIGHTS_NAME))
        state = {k.removeprefix("transformer."): v for k, v in state.items()}
        set_peft_model_state_dict(self.transformer, state, adapter_name=self.adapter_name)
