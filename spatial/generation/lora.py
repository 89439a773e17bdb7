"""peft LoRA on a FLUX transformer, saved and loaded in the diffusers LoRA format.

The folder holds `pytorch_lora_weights.safetensors` with keys `transformer.<module>.lora_A/B.weight`
and the adapter's LoraConfig in the safetensors header (`lora_adapter_metadata`). Without that
header diffusers infers `lora_alpha` from the rank, so an adapter trained with alpha != rank
would reload at the wrong scale and render differently.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict

from .config import AdapterUnavailableError

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"

# FLUX's attention and feed-forward projections, in both double- and single-stream blocks.
LORA_TARGETS = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    "proj_mlp", "proj_out",
)  # fmt: skip


def _transformer(pipeline_or_transformer) -> FluxTransformer2DModel:
    return getattr(pipeline_or_transformer, "transformer", pipeline_or_transformer)


def add_lora(transformer: FluxTransformer2DModel, rank: int = 16, alpha: float = 32,
             target_modules: tuple[str, ...] | list[str] = LORA_TARGETS, adapter_name: str = "default",
             init: str | bool = "gaussian") -> LoraConfig:  # fmt: skip
    """Attach a new LoRA adapter (scale alpha / rank) to the projections in `target_modules` that
    this transformer has, and make it the active one. With the default init, B = 0: a no-op at first."""
    present = [t for t in target_modules if any(name.endswith(t) for name, _ in transformer.named_modules())]
    if not present:
        raise ValueError(f"none of the LoRA target modules {list(target_modules)} exist in this transformer")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=present, init_lora_weights=init)
    transformer.add_adapter(config, adapter_name=adapter_name)
    transformer.set_adapter(adapter_name)
    return config


def adapter_metadata(transformer: FluxTransformer2DModel, adapter_name: str = "default") -> dict:
    """The adapter's LoraConfig as a JSON-able dict (what diffusers stores in the safetensors header)."""
    meta = transformer.peft_config[adapter_name].to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in meta.items()}


def save_lora(pipeline_or_transformer, directory: str | Path, adapter_name: str = "default",
              dtype: torch.dtype | None = torch.float32) -> Path:  # fmt: skip
    """Write one adapter as a diffusers LoRA folder (weights + metadata); returns the folder.
    Weights are stored in `dtype` (fp32 by default, so a bf16 run's adapter reloads anywhere)."""
    transformer = _transformer(pipeline_or_transformer)
    if adapter_name not in (getattr(transformer, "peft_config", None) or {}):
        raise AdapterUnavailableError(f"the transformer has no LoRA adapter named {adapter_name!r}")
    layers = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    if dtype is not None:
        layers = {k: v.detach().to(dtype).contiguous() for k, v in layers.items()}
    FluxPipeline.save_lora_weights(str(directory), transformer_lora_layers=layers,
                                   transformer_lora_adapter_metadata=adapter_metadata(transformer, adapter_name))  # fmt: skip
    return Path(directory)


def load_lora(pipeline: FluxPipeline, path_or_id: str | Path, adapter_name: str = "default") -> LoraConfig:
    """Load a diffusers LoRA folder or Hub repo into the pipeline's transformer as `adapter_name`
    (replacing an adapter of that name) and make it active. Returns the adapter's LoraConfig."""
    transformer = pipeline.transformer
    source = str(path_or_id)
    local = Path(source).expanduser()
    if _looks_local(source) and not (local / WEIGHTS_NAME).is_file():
        raise AdapterUnavailableError(f"no LoRA adapter at {source}: expected {local / WEIGHTS_NAME} "
                                      "(a folder written by save_lora / FluxPipeline.save_lora_weights)")  # fmt: skip
    where = str(local) if _looks_local(source) else source
    if adapter_name in _adapter_names(transformer):
        # Replacing: the new file must load first (as a trial name), so a bad one leaves the old adapter
        # working. peft cannot rename adapters, so after the trial the file is loaded again under the
        # real name (from the local or Hub cache: cheap for a LoRA).
        trial = f"{adapter_name}--trial"
        _load_as(pipeline, where, source, trial)
        transformer.delete_adapters([adapter_name, trial])
    _load_as(pipeline, where, source, adapter_name)
    transformer.set_adapter(adapter_name)
    # peft builds each new adapter's dropout in training mode: a LoRA saved with dropout would
    # otherwise make renders random.
    transformer.eval()
    return transformer.peft_config[adapter_name]


@contextlib.contextmanager
def adapter_per_row(transformer: FluxTransformer2DModel, names: Sequence[str | None]) -> Iterator[None]:
    """Inside the block, each forward applies adapter `names[i]` to batch row i (None: the base model).

    A mixed-adapter batch: base and tuned rows share one pass through the transformer, and peft
    runs each LoRA on its own rows only. Batches must have len(names) rows. The adapters' on/off
    state is restored on exit. bench/generation_memory.py measures what it buys (docs/BENCHMARKS.md).
    """
    unknown = sorted({n for n in names if n is not None} - _adapter_names(transformer))
    if unknown:
        loaded = sorted(_adapter_names(transformer))
        raise AdapterUnavailableError(f"no adapter named {unknown[0]!r} is loaded (loaded: {loaded})")
    layers = [m for m in transformer.modules() if isinstance(m, LoraLayer)]
    rows = [n or "__base__" for n in names]  # peft's name for "no adapter" in a mixed batch
    was_off = bool(layers) and layers[0].disable_adapters

    def hook(module, args, kwargs):
        return args, {**kwargs, "adapter_names": rows}

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in layers]
    if was_off:
        transformer.enable_adapters()  # disabled layers ignore adapter_names and run the base only
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        if was_off:
            transformer.disable_adapters()


def _adapter_names(transformer) -> set[str]:
    return set(getattr(transformer, "peft_config", None) or {})


def _load_as(pipeline: FluxPipeline, where: str, source: str, adapter_name: str) -> None:
    transformer = pipeline.transformer
    if adapter_name in _adapter_names(transformer):
        transformer.delete_adapters(adapter_name)
    try:
        pipeline.load_lora_weights(where, adapter_name=adapter_name)
    except Exception as e:  # noqa: BLE001 - hub, file and format errors all mean "cannot use this adapter"
        if adapter_name in _adapter_names(transformer):
            transformer.delete_adapters(adapter_name)  # half-injected layers must not linger
        raise AdapterUnavailableError(f"could not load the LoRA adapter {source!r}: {_reason(e)}") from e
    if adapter_name not in _adapter_names(transformer):
        # diffusers only warns when a file holds no weights for this transformer (e.g. a text-encoder LoRA).
        raise AdapterUnavailableError(f"the LoRA adapter {source!r} has no weights for the FLUX transformer")


def _looks_local(source: str) -> bool:
    """A path rather than a Hub id: it exists, or it is absolute/relative/home-based, or has >1 slash,
    or its first part is a local folder (`runs/nothere` is a missing run, not the Hub repo of "runs")."""
    return (Path(source).expanduser().exists() or source.startswith(("/", ".", "~")) or source.count("/") != 1
            or Path(source.split("/")[0]).is_dir())  # fmt: skip


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
