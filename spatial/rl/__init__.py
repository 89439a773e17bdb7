"""Spatial-RL: GRPO on a flow-matching transformer with a LoRA (sampling, advantages, loss, trainer)."""

from .advantages import group_advantages
from .loss import GRPOLoss, grpo_loss
from .sde import SDEStep, gaussian_kl, sde_step_with_logprob

__all__ = ["GRPOLoss", "SDEStep", "gaussian_kl", "group_advantages", "grpo_loss", "sde_step_with_logprob"]
