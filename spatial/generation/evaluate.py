"""Judge a generator with the SpatialWorld oracle.

    python -m training.evaluate generator --preset toy [--lora PATH] --prompts FILE --seeds K

Renders K images per prompt (seeds 0..K-1) and prints, as its last line, a JSON object with
`object_accuracy` (every named object found), `spatial_accuracy` (every relation holds, which needs
its objects found) and `n` (images judged). Exit codes: 0 done, 1 model unavailable, 2 bad input.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from spatial.cli import parse_config
from spatial.world import PromptError, check, parse_prompt, sample_prompts

from .config import PRESETS, AdapterUnavailableError, ConfigError, GenerationConfig, ModelUnavailableError

HELD_OUT_SEED = 9001  # SpatialWorld prompt seed reserved for evaluation (training uses others)


@dataclass
class GeneratorEvalConfig:
    """Evaluate a FLUX preset (optionally with a LoRA) against the SpatialWorld oracle."""

    preset: str = "toy"
    """Generation preset: `toy` or `flux-dev`."""
    base_model: str | None = None
    """Base FluxPipeline folder or Hub id; empty: the preset's."""
    lora: str | None = None
    """LoRA folder or Hub id to evaluate instead of the base model; empty: the base model."""
    prompts: str | None = None
    """Prompt file, one per line; empty: `num_prompts` held-out SpatialWorld prompts (seed 9001)."""
    num_prompts: int = 200
    """How many held-out prompts to draw when `prompts` is empty."""
    seeds: int = 4
    """Images per prompt (seeds 0..K-1)."""
    steps: int | None = None
    """Denoising steps; empty: the preset's."""
    guidance: float | None = None
    """Guidance scale; empty: the preset's."""
    size: int | None = None
    """Image side; empty: the preset's."""
    batch_size: int | None = None
    """Images per forward pass; empty: the preset's."""
    device: str = "auto"
    """`auto`, `cpu` or `cuda`."""
    out: str | None = None
    """Optional folder for the images and a per-image `results.jsonl`."""

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.seeds < 1 or self.num_prompts < 1:
            raise ValueError("seeds and num_prompts must be at least 1")


def read_prompts(path: str | Path) -> list[str]:
    """Non-empty lines of a prompt file; every one must be readable by the oracle (else PromptError)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"prompt file not found: {file}")
    prompts = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {file} has no prompts")
    return prompts


def check_prompts(prompts: Sequence[str]) -> None:
    for i, p in enumerate(prompts, 1):
        try:
            parse_prompt(p)
        except PromptError as e:
            raise PromptError(f"prompt {i} ({p!r}) is outside SpatialWorld, so the oracle cannot judge it: {e}") from None


def judge(images, prompts: Sequence[str]) -> dict:
    """Oracle verdicts -> accuracies. An image counts for object accuracy when every named object is
    found, for spatial accuracy when every relation is judged true (which needs both its objects)."""
    rows = []
    for image, prompt in zip(images, prompts, strict=True):
        v = check(image, prompt)
        rows.append({"prompt": prompt, "objects_ok": all(o["found"] for o in v.objects), "spatial_ok": v.satisfied,
                     "objects": v.objects, "relations": v.relations, "extras": v.extras})  # fmt: skip
    n = len(rows)
    relations = [r["verdict"] == "true" for row in rows for r in row["relations"]]
    summary = {
        "object_accuracy": round(sum(r["objects_ok"] for r in rows) / n, 4),
        "spatial_accuracy": round(sum(r["spatial_ok"] for r in rows) / n, 4),
        "relation_accuracy": round(sum(relations) / len(relations), 4) if relations else None,
        # Unrequested objects: the reward-hacking guard the two accuracies cannot be (docs/TRAINING.md).
        "extra_objects": round(sum(len(r["extras"]) for r in rows) / n, 4),
        "images_with_extras": round(sum(bool(r["extras"]) for r in rows) / n, 4),
        "n": n,
    }
    return {"summary": summary, "rows": rows}


def evaluate(config: GeneratorEvalConfig) -> dict:
    prompts = read_prompts(config.prompts) if config.prompts else sample_prompts(config.num_prompts, HELD_OUT_SEED)
    check_prompts(prompts)
    from .service import GenerationService  # diffusers loads once the inputs are known to be good

    gen = GenerationConfig.for_preset(config.preset, base_model=config.base_model, steps=config.steps,
                                      guidance=config.guidance, size=config.size, batch_size=config.batch_size,
                                      device=config.device)  # fmt: skip
    gen.lora = None  # the preset's default adapter is not what is being evaluated
    service = GenerationService(gen)
    adapter = None
    if config.lora:
        service.load_adapter(config.lora, "candidate")
        adapter = "candidate"
    seeds = list(range(config.seeds))
    t0 = time.perf_counter()
    images = service.generate(prompts, seeds, adapter=adapter)
    seconds = time.perf_counter() - t0
    flat_prompts = [p for p in prompts for _ in seeds]
    result = judge(images, flat_prompts)
    if config.out:
        out = Path(config.out)
        (out / "images").mkdir(parents=True, exist_ok=True)
        with open(out / "results.jsonl", "w") as f:
            for k, (image, row) in enumerate(zip(images, result["rows"])):
                name = f"images/{k // len(seeds):04d}_s{k % len(seeds)}.png"
                image.save(out / name)
                f.write(json.dumps({"file_name": name, "seed": k % len(seeds), **row}) + "\n")
    return {**result["summary"], "prompts": len(prompts), "seeds": len(seeds), "preset": gen.preset,
            "base_model": gen.base_model, "lora": config.lora, "steps": gen.steps, "guidance": gen.guidance,
            "size": gen.size, "generate_seconds": round(seconds, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    config = parse_config(GeneratorEvalConfig, argv, prog="python -m training.evaluate generator")
    try:
        summary = evaluate(config)
    except (ValueError, PromptError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ModelUnavailableError, AdapterUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0
