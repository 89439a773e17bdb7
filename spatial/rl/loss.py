"""The GRPO objective: a PPO-style clipped surrogate plus a KL penalty to the reference policy.

Per kept sample and trained timestep, with ratio = exp(logp - logp_old) and A clipped to
[-adv_clip, adv_clip]:

    policy = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))
    loss   = mean(policy) + beta * mean(KL(pi_theta || pi_ref))

The reference policy is the same transformer with its LoRA disabled; its KL term is the Gaussian
KL between the two step distributions (sde.gaussian_kl).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GRPOLoss:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor
    ratio_mean: torch.Tensor


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    kl: torch.Tensor | None = None,
    clip_range: float = 1e-4,
    adv_clip: float = 5.0,
    beta: float = 0.0,
) -> GRPOLoss:
    adv = torch.clamp(advantages.float(), -adv_clip, adv_clip)
    ratio = torch.exp(log_prob.float() - old_log_prob.float())
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy = torch.maximum(unclipped, clipped).mean()
    kl_mean = kl.float().mean() if kl is not None else torch.zeros((), device=policy.device)
    loss = policy + beta * kl_mean
    clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
    return GRPOLoss(loss, policy.detach(), kl_mean.detach(), clip_fraction.detach(), ratio.mean().detach())
