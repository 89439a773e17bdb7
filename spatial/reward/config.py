"""Configuration of SpatialScore (the model) and of its training run (TRL-style dataclasses)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

INSTRUCTION = "Does this image follow the spatial relations of the prompt: {prompt}?"
"""What SpatialScore is asked before the reward token; `{prompt}` is replaced by the prompt."""

JUDGE_QUESTION = "Does this image follow the prompt: {prompt}? Answer yes or no."
"""What the zero-shot judge asks; its score is P(yes). The toy backbone is pretrained on it."""

# LoRA on the language model's attention and MLP projections, never on the vision tower
# (its modules live under `visual.`) unless `lora_vision` is set.
LM_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
VISION_TARGETS = r".*visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj)"


@dataclass
class SpatialScoreConfig:
    """What a SpatialScore checkpoint needs to be rebuilt (saved as spatialscore_config.json)."""

    backbone: str = "assets/toy/vlm"
    """Base Qwen2.5-VL (folder or Hub id); a folder is stored relative to the checkpoint when possible."""
    instruction: str = INSTRUCTION
    """Instruction text; must contain `{prompt}`."""
    image_first: bool = True
    """Image before the instruction in the user turn (as Qwen2.5-VL is usually prompted), so every
    instruction token can look at the image."""
    head_hidden: int = 0
    """Width of the MLP head's hidden layer (0: the backbone's hidden size)."""
    lora_rank: int = 16
    """LoRA rank on the language model."""
    lora_alpha: int = 32
    """LoRA alpha (scale = alpha / rank)."""
    lora_dropout: float = 0.0
    """LoRA dropout (0 keeps 1-process and N-process runs identical)."""
    lora_vision: bool = False
    """Also put LoRA on the vision tower's attention and MLP."""
    max_pixels: int = 448 * 448
    """Largest image area fed to the vision tower (the toy processor fixes its own, smaller size)."""
    preference: str = "bradley-terry"
    """How P(A preferred over B) is read off two scores: the likelihood the model was trained with.
    `bradley-terry`: E[sigmoid(s_a - s_b)] (the `mc` loss); `thurstone`: P(s_a > s_b) (the `closed` loss)."""

    def validate(self) -> None:
        from .losses import PREFERENCE_MODELS

        if "{prompt}" not in self.instruction:
            raise ValueError("instruction must contain {prompt}")
        if self.preference not in PREFERENCE_MODELS:
            raise ValueError(f"preference must be one of {', '.join(PREFERENCE_MODELS)}, got {self.preference!r}")
        if self.lora_rank <= 0:
            raise ValueError("lora_rank must be positive")

    def lora_target(self) -> str:
        return f"({LM_TARGETS}|{VISION_TARGETS})" if self.lora_vision else LM_TARGETS

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "SpatialScoreConfig":
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
