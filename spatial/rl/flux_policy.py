"""FluxPolicy: a diffusers FluxPipeline with a LoRA adapter, seen step by step as a GRPO policy.

One transformer serves both the policy (adapter on) and the KL reference (adapter off); nothing
is copied. The pieces mirror `FluxPipeline.__call__` (encode, initial latents, shifted sigma
schedule, transformer velocity, decode) so that `generate` with deterministic steps renders what
the pipeline renders.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

# FLUX's attention and feed-forward projections, in both double- and single-stream blocks.
LORA_TARGETS = [
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    "proj_mlp", "proj_out",
]  # fmt: skip


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
        targets = [n for n in LORA_TARGETS if any(name.endswith(n) for name, _ in self.transformer.named_modules())]
        self.lora_config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian")
        if adapter_name not in (getattr(self.transformer, "peft_config", None) or {}):
            self.transformer.add_adapter(self.lora_config, adapter_name=adapter_name)
        self.transformer.set_adapter(adapter_name)
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        # LoRA weights train in fp32 even when the frozen base runs in bf16.
        for p in self.trainable_parameters():
            p.data = p.data.float()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.transformer.named_parameters() if "lora_" in n and self.adapter_name in n]

    # ---- conditioning and noise -------------------------------------------------------------

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict:
        embeds, pooled, text_ids = self.pipe.encode_prompt(prompts, prompt_2=None, device=self.device,
                                                           max_sequence_length=self._max_len())  # fmt: skip
        return {"embeds": embeds, "pooled": pooled, "text_ids": text_ids}

    def _max_len(self) -> int:
        return min(512, getattr(self.pipe.tokenizer_2, "model_max_length", 512))

    @staticmethod
    def select(cond: dict, index: torch.Tensor) -> dict:
        return {"embeds": cond["embeds"][index], "pooled": cond["pooled"][index], "text_ids": cond["text_ids"]}

    def latent_side(self, size: int) -> int:
        return 2 * (int(size) // (self.pipe.vae_scale_factor * 2))

    def initial_noise(self, seeds: list[int], size: int) -> torch.Tensor:
        """Packed initial latents, one generator per seed: the same noise `generate` starts from."""
        channels = self.transformer.config.in_channels // 4
        side = self.latent_side(size)
        noise = [torch.randn((1, channels, side, side), generator=torch.Generator().manual_seed(s)) for s in seeds]
        noise = torch.cat(noise).to(self.device)
        return self.pipe._pack_latents(noise, len(seeds), channels, side, side).float()

    def sigmas(self, steps: int, size: int) -> torch.Tensor:
        """FLUX's shifted schedule for this resolution, ending at 0 (steps + 1 values)."""
        seq_len = (self.latent_side(size) // 2) ** 2
        cfg = self.pipe.scheduler.config
        mu = calculate_shift(seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))  # fmt: skip
        self.pipe.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device=self.device)
        return self.pipe.scheduler.sigmas.float().cpu()

    def guidance(self, scale: float, batch: int) -> torch.Tensor | None:
        if not self.transformer.config.guidance_embeds:
            return None
        return torch.full((batch,), float(scale), device=self.device, dtype=torch.float32)

    # ---- the network ---------------------------------------------------------------------------

    def velocity(self, x: torch.Tensor, sigma, cond: dict, guidance) -> torch.Tensor:
        side = int(round(x.shape[1] ** 0.5))
        img_ids = self.pipe._prepare_latent_image_ids(x.shape[0], side, side, self.device, self.dtype)
        t = torch.as_tensor(sigma, dtype=self.dtype, device=self.device).reshape(1).expand(x.shape[0])
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.transformer(
                hidden_states=x.to(self.dtype), timestep=t, guidance=guidance, pooled_projections=cond["pooled"],
                encoder_hidden_states=cond["embeds"], txt_ids=cond["text_ids"], img_ids=img_ids, return_dict=False,
            )[0]  # fmt: skip
        return out.float()

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

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, size: int) -> list:
        vae = self.pipe.vae
        lat = self.pipe._unpack_latents(latents.to(vae.dtype), size, size, self.pipe.vae_scale_factor)
        lat = lat / vae.config.scaling_factor + vae.config.shift_factor
        image = vae.decode(lat, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pil")

    @torch.no_grad()
    def generate(self, prompts, seeds, steps, size, guidance) -> list:
        """Deterministic (ODE) sampling through the pipeline itself, from `initial_noise`."""
        latents = self.initial_noise(seeds, size).to(self.dtype)
        return self.pipe(prompts, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                         latents=latents, max_sequence_length=self._max_len()).images  # fmt: skip

    # ---- persistence ---------------------------------------------------------------------------

    def save_lora(self, path: Path) -> None:
        """diffusers LoRA format, with the adapter metadata so lora_alpha survives a reload."""
        layers = get_peft_model_state_dict(self.transformer, adapter_name=self.adapter_name)
        metadata = self.transformer.peft_config[self.adapter_name].to_dict()
        metadata = {k: (list(v) if isinstance(v, set) else v) for k, v in metadata.items()}
        FluxPipeline.save_lora_weights(str(path), transformer_lora_layers=layers,
                                       transformer_lora_adapter_metadata=metadata)  # fmt: skip

    def load_lora_weights(self, path: Path) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = load_file(str(Path(path) / "pytorch_lora_weights.safetensors"))
        state = {k.removeprefix("transformer."): v for k, v in state.items()}
        set_peft_model_state_dict(self.transformer, state, adapter_name=self.adapter_name)
