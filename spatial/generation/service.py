"""GenerationService: one FluxPipeline in memory, base and RL-tuned renders through it.

The RL LoRA is a named peft adapter on the pipeline's one transformer, switched on or off per call;
the transformer is never copied. Every render goes through `sampling.generate_images`'s pieces with
one CPU generator per seed, so (prompt, seed, steps, guidance, size, adapter) fixes the image and
the base and tuned sides of a comparison start from the same noise.

    service = GenerationService(GenerationConfig.from_env())
    images = service.generate(["a red circle left of a blue square"], seeds=[0, 1])
    base, tuned = service.compare("a red circle left of a blue square", seed=0)
"""

from __future__ import annotations

import itertools
import os
import threading
from contextlib import contextmanager
import weakref
from pathlib import Path
from typing import Callable, Sequence

import torch
from diffusers import FluxPipeline
from PIL import Image

from . import sampling
from .config import TUNED, GenerationConfig, ModelUnavailableError
from .lora import AdapterUnavailableError, _looks_local, _reason, load_lora
from .toy import eval_all

try:  # ZeroGPU's decorator; a no-op off ZeroGPU, and absent outside a Space's requirements
    from spaces import GPU as _spaces_gpu
except ImportError:  # pragma: no cover - spaces is in requirements.txt

    def _spaces_gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"device {name!r} was asked for but this machine has no CUDA GPU; use device=cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def _how_to_supply(config: GenerationConfig) -> str:
    hint = "Set SPATIAL_BASE_MODEL to a FluxPipeline folder (with model_index.json) or a Hub repo id"
    if config.preset == "toy":
        hint += ", or train the toy model: python -m training.pretrain_toy --out assets/toy/flux"
    elif not _looks_local(config.base_model):
        hint += f"; {config.base_model} may be gated: accept its licence on the Hub and set HF_TOKEN"
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on") or config.local_files_only:
            hint += " (offline mode is on, so only the local Hugging Face cache was searched)"
    return hint + "."


def load_pipeline(config: GenerationConfig) -> FluxPipeline:
    """`FluxPipeline.from_pretrained(config.base_model)` for every preset, in eval mode, on the config's
    device and dtype. Raises ModelUnavailableError (one readable message) when it cannot."""
    config.validate()
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    source = config.base_model
    what = f"the {config.preset} base model"
    if _looks_local(source) and not (Path(source).expanduser() / "model_index.json").is_file():
        raise ModelUnavailableError(f"Could not find {what}: no FluxPipeline folder at {source} "
                                    f"(model_index.json missing). {_how_to_supply(config)}")  # fmt: skip
    try:
        pipe = FluxPipeline.from_pretrained(str(Path(source).expanduser()) if _looks_local(source) else source,
                                            dtype=dtype, local_files_only=config.local_files_only,
                                            cache_dir=config.cache_dir)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - network, auth, cache and format errors all mean "unavailable"
        raise ModelUnavailableError(f"Could not load {what} from {source!r} ({_reason(e)}). "
                                    f"{_how_to_supply(config)}") from e  # fmt: skip
    eval_all(pipe).to(device)
    pipe.set_progress_bar_config(disable=True)
    if config.compile:
        # In place, so parameter names (and LoRA loading into them) stay as they are; adapters
        # attached later or switched per call only trigger a recompile, never a stale graph.
        pipe.transformer.compile()
    return pipe


_SERVICES: "weakref.WeakValueDictionary[int, GenerationService]" = weakref.WeakValueDictionary()


def _gpu_seconds(service_id: int, jobs: list, steps: int, guidance: float, size: int, callback=None) -> int:
    """The ZeroGPU reservation for one render call: 1 s per denoising step of a 1024 px image,
    scaled by pixels (a generous allowance for FLUX.1-dev, not a measurement), plus 20 s."""
    return int(min(600, 20 + len(jobs) * steps * (size / 1024) ** 2))


@_spaces_gpu(duration=_gpu_seconds)
def _render_on_gpu(service_id: int, jobs: list[tuple[str, int, str | None]], steps: int, guidance: float,
                   size: int, callback=None) -> list[Image.Image]:  # fmt: skip
    """The GPU entry point. On ZeroGPU it runs in a worker forked from the app, so it takes a
    service id (the forked worker shares the loaded pipeline) and plain values, and returns images."""
    return _SERVICES[service_id]._render(jobs, steps, guidance, size, callback)


class GenerationService:
    """Base and RL-tuned FLUX renders from one pipeline. Loads lazily on first use."""

    def __init__(self, config: GenerationConfig | None = None, pipeline: FluxPipeline | None = None):
        """`pipeline` (already built) skips loading `config.base_model`; tests and GRPO pass one."""
        self.config = config or GenerationConfig.from_env()
        self.config.validate()
        self._pipe = eval_all(pipeline) if pipeline is not None else None
        self._lock = threading.RLock()
        self._adapters: dict[str, str] = {}
        self._active: str = TUNED
        self._tuned_error: str | None = None
        self._tuned_tried = False
        _SERVICES[id(self)] = self

    # ---- loading --------------------------------------------------------------------------------

    @property
    def pipeline(self) -> FluxPipeline:
        """The one FluxPipeline (loaded on first access; ModelUnavailableError if it cannot be)."""
        with self._lock:
            if self._pipe is None:
                self._pipe = load_pipeline(self.config)
            if not self._tuned_tried:
                self._tuned_tried = True
                self._load_configured_lora()
            return self._pipe

    def _load_configured_lora(self) -> None:
        lora = self.config.lora
        if not lora:
            self._tuned_error = ("No RL-tuned adapter is configured: set SPATIAL_LORA to a LoRA folder or Hub id "
                                 "(e.g. a finished run's final LoRA), or pick one with load_adapter().")  # fmt: skip
            return
        try:
            self.load_adapter(lora, TUNED)
        except AdapterUnavailableError as e:
            self._tuned_error = (f"The RL-tuned model is unavailable: {e}. Train one (python -m training.train_grpo) "
                                 "and set SPATIAL_LORA to its final LoRA folder.")  # fmt: skip

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded LoRA adapters: name -> where it was loaded from."""
        self.pipeline
        return dict(self._adapters)

    @property
    def active_adapter(self) -> str:
        """The adapter `compare` shows as the tuned side (`tuned` unless set_adapter chose another)."""
        return self._active

    def tuned_status(self) -> str | None:
        """None when the active adapter is loaded; otherwise why not and how to supply one."""
        self.pipeline
        if self._active in self._adapters:
            return None
        if self._active == TUNED and self._tuned_error:
            return self._tuned_error
        return f"No adapter named {self._active!r} is loaded; load one with load_adapter()."

    @contextmanager
    def exclusive(self):
        """Hold the one pipeline for a sequence of calls (load an adapter, then render with it), so no
        other request switches or replaces adapters in between. Re-entrant: the calls inside lock too."""
        with self._lock:
            yield self

    def load_adapter(self, path_or_id: str | Path, name: str = TUNED) -> str:
        """Load a diffusers-format LoRA (folder or Hub id) onto the one transformer as `name`
        (replacing one of that name). Raises AdapterUnavailableError with a readable message."""
        if not name or name == "base":
            raise ValueError("adapter name must be non-empty and not 'base'")
        pipe = self.pipeline
        if hasattr(torch.nn.ModuleDict(), name):
            # peft keeps each adapter as a ModuleDict entry, which cannot be named like a Module method.
            raise ValueError(f"adapter name {name!r} clashes with an attribute of the transformer; choose another")
        with self._lock:
            try:
                load_lora(pipe, path_or_id, name)
            finally:
                names = set(getattr(pipe.transformer, "peft_config", None) or {})
                self._adapters = {k: v for k, v in self._adapters.items() if k in names}
            self._adapters[name] = str(path_or_id)
            if name == TUNED:
                self._tuned_error = None
            return name

    def unload_adapter(self, name: str) -> None:
        """Delete a loaded adapter from the transformer (its memory is freed); unknown names are ignored."""
        with self._lock:
            if self._pipe is not None and name in (getattr(self._pipe.transformer, "peft_config", None) or {}):
                self._pipe.transformer.delete_adapters(name)
            self._adapters.pop(name, None)

    def adopt_adapter(self, name: str, source: str = "in memory") -> None:
        """Serve an adapter already attached to the transformer (e.g. the LoRA a GRPO run is training)."""
        with self._lock:
            if name not in (getattr(self.pipeline.transformer, "peft_config", None) or {}):
                raise AdapterUnavailableError(f"the transformer has no adapter named {name!r}")
            self._adapters[name] = source

    def set_adapter(self, name: str) -> None:
        """Choose which loaded adapter `compare` (and `generate(adapter="tuned")`) uses."""
        with self._lock:
            if name not in self.adapters:
                raise AdapterUnavailableError(f"no adapter named {name!r} is loaded (loaded: {', '.join(self._adapters) or 'none'})")
            self._active = name

    # ---- rendering ------------------------------------------------------------------------------

    def generate(self, prompts: str | Sequence[str], seeds: int | Sequence[int] = (0,), steps: int | None = None,
                 guidance: float | None = None, size: int | None = None, adapter: str | None = None,
                 callback: Callable[[int, int], None] | None = None) -> list[Image.Image]:  # fmt: skip
        """One image per (prompt, seed), prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...].

        adapter: None renders the base model; `"tuned"` the active RL adapter; any other loaded
        adapter's name renders with that adapter. Unset steps/guidance/size take the config's.
        `callback(done, total)` reports denoising steps across the whole request.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        seeds = [seeds] if isinstance(seeds, int) else [int(s) for s in seeds]
        if not prompts or not seeds or any(not str(p).strip() for p in prompts):
            raise ValueError("give at least one non-empty prompt and one seed")
        self.pipeline  # loaded here, not inside the GPU call (on ZeroGPU a forked worker's load is lost)
        name = self._resolve(adapter)
        steps, guidance, size = self._settings(steps, guidance, size)
        jobs = [(p, s, name) for p, s in itertools.product(prompts, seeds)]
        return _render_on_gpu(id(self), jobs, steps, guidance, size, callback)

    def compare(self, prompt: str, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                size: int | None = None, adapter: str | None = None) -> tuple[Image.Image, Image.Image]:  # fmt: skip
        """(base image, tuned image) for one prompt and seed: same noise, same transformer, the
        adapter (`adapter` or the active one) off for the first and on for the second."""
        name = self._resolve(adapter or TUNED)
        steps, guidance, size = self._settings(steps, guidance, size)
        base, tuned = _render_on_gpu(id(self), [(prompt, seed, None), (prompt, seed, name)], steps, guidance, size)
        return base, tuned

    def _resolve(self, adapter: str | None) -> str | None:
        if adapter in (None, "", "base"):
            return None
        self.pipeline
        name = self._active if adapter == TUNED else adapter
        if name not in self._adapters:
            raise AdapterUnavailableError(self.tuned_status() if adapter == TUNED else
                                          f"no adapter named {adapter!r} is loaded; load it with load_adapter()")  # fmt: skip
        return name

    def _settings(self, steps, guidance, size) -> tuple[int, float, int]:
        c = self.config
        # None means "the config's"; 0 is a value, and refused below.
        steps = c.steps if steps is None else steps
        guidance = c.guidance if guidance is None else guidance
        size = c.size if size is None else size
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if size % 16 or not 16 <= size <= 2048:
            raise ValueError(f"size must be a multiple of 16 in [16, 2048], got {size}")
        return int(steps), float(guidance), int(size)

    def _render(self, jobs, steps, guidance, size, callback=None) -> list[Image.Image]:
        """Render (prompt, seed, adapter) jobs: grouped by adapter, batched by config.batch_size."""
        pipe = self.pipeline
        out: list[Image.Image | None] = [None] * len(jobs)
        order = sorted(range(len(jobs)), key=lambda i: (jobs[i][2] or "",))
        done, total = 0, len(jobs) * steps
        with self._lock:
            try:
                for name, group in itertools.groupby(order, key=lambda i: jobs[i][2]):
                    group = list(group)
                    self._switch(name)
                    for start in range(0, len(group), self.config.batch_size):
                        idx = group[start : start + self.config.batch_size]

                        def progress(step, n, k=len(idx), base=done):
                            if callback is not None:
                                callback(base + step * k, total)

                        images = sampling.generate_images(pipe, [jobs[i][0] for i in idx], [jobs[i][1] for i in idx],
                                                          steps, guidance, size, self.config.max_sequence_length,
                                                          progress)  # fmt: skip
                        done += len(idx) * steps
                        for i, image in zip(idx, images):
                            out[i] = image
            finally:
                self._switch(None)  # an error mid-render (e.g. out of memory) leaves the base model on
        return out  # type: ignore[return-value]

    def _switch(self, name: str | None) -> None:
        transformer = self._pipe.transformer
        if not getattr(transformer, "peft_config", None):
            return
        if name is None:
            transformer.disable_adapters()
        else:
            transformer.enable_adapters()
            transformer.set_adapter(name)
