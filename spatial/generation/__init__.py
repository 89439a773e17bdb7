"""Generation: FLUX presets, one pipeline for base and RL-tuned renders, LoRA I/O, the toy FLUX.

No UI code here; the Generate tab (ui/) and GRPO (spatial/rl/) build on this package. Names are
imported on first use, so that reading a config (e.g. a command line's --help or a bad flag) does not
pay for importing diffusers.
"""

import importlib

_EXPORTS = {
    "config": ["PRESETS", "TUNED", "AdapterUnavailableError", "ConfigError", "GenerationConfig", "ModelUnavailableError",
               "PretrainConfig"],
    "lora": ["LORA_TARGETS", "adapter_per_row", "add_lora", "load_lora", "save_lora"],
    "sampling": ["PromptEmbeds", "decode", "denoise", "encode_prompts", "euler_step", "generate_images",
                 "guidance_vector", "initial_latents", "sigma_schedule", "velocity"],
    "service": ["GenerationService", "load_pipeline"],
    "toy": ["ToyFluxConfig", "build_toy_pipeline", "build_tokenizer", "eval_all"],
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    if name in _EXPORTS:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
