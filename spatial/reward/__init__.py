"""SpatialScore: a Qwen2.5-VL reward model with a Gaussian head, its training and evaluation.

Modules: `config` (SpatialScoreConfig), `model` (SpatialScore), `losses` (Bradley-Terry),
`data` (pair folders / Hub datasets), `trainer` (RewardTrainingConfig, RewardTrainer),
`processing` (the Qwen2.5-VL processor without torchvision), `toy` and `pretrain` (the toy
backbone and its SpatialWorld pretraining), `evaluate` (the `training.evaluate reward` command).
Imports are lazy so `import spatial.reward` stays cheap.
"""

from __future__ import annotations

_EXPORTS = {
    "SpatialScoreConfig": "config", "INSTRUCTION": "config", "JUDGE_QUESTION": "config",
    "SpatialScore": "model", "ScoringInputError": "model",
    "bt_mc_loss": "losses", "bt_closed_loss": "losses", "sigma_prior_kl": "losses", "prob_prefer": "losses",
    "BadRowError": "data", "DatasetError": "data", "ImageLoadError": "data", "load_pairs": "data", "load_image": "data",
    "RewardTrainingConfig": "trainer", "RewardTrainer": "trainer",
    "ImageProcessor": "processing", "load_processor": "processing", "REWARD_TOKEN": "processing",
    "ToyVLMConfig": "toy", "build_toy_backbone": "toy",
    "PretrainVLMConfig": "pretrain", "VLMPretrainer": "pretrain",
}  # fmt: skip


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'spatial.reward' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
