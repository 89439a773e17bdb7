"""The flow-matching SDE step with log-probabilities (Flow-GRPO's sampler).

Rectified flow moves x from noise (sigma = 1) to data (sigma = 0) along dx = v dsigma. Flow-GRPO
turns this ODE into an SDE with the same marginals, so each step is a Gaussian whose log-density
can be evaluated and differentiated. With noise level a, step dt = sigma_next - sigma < 0:

    std  = a * sqrt(sigma / (1 - sigma))
    mean = x + [v + std^2 / (2 sigma) * (x + (1 - sigma) v)] dt
    x'   = mean + std * sqrt(-dt) * eps,                 eps ~ N(0, I)
    log p(x' | x) = log N(x'; mean, (std sqrt(-dt))^2), averaged over the non-batch dimensions.

sigma / (1 - sigma) is infinite at sigma = 1, the first step of every schedule, so there the
denominator takes `sigma_cap` (the largest sigma below 1 in the schedule) instead: std =
a * sqrt(sigma / (1 - cap)), everything else at the true sigma, as Flow-GRPO does.
Source for the formula: yifan123/flow_grpo, flow_grpo/diffusers_patch/sd3_sde_with_logprob.py.
Everything is computed in float32 whatever the model's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SDEStep:
    sample: torch.Tensor  # x' (float32)
    log_prob: torch.Tensor  # (batch,)
    mean: torch.Tensor  # the Gaussian's mean, for the KL to a reference policy
    std: torch.Tensor  # std * sqrt(-dt), a scalar tensor


def sde_step_with_logprob(
    velocity: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_next: float | torch.Tensor,
    sample: torch.Tensor,
    noise_level: float = 0.7,
    sigma_cap: float | None = None,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> SDEStep:
    """One SDE step from `sample` at `sigma` to `sigma_next`.

    Pass `prev_sample` to evaluate the log-probability of a known transition (training) instead
    of drawing a new one (sampling); pass `noise` to draw with given standard-normal noise.
    `sigma_cap` guards the sigma = 1 endpoint.
    """
    v = velocity.float()
    x = sample.float()
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    sigma_next = torch.as_tensor(sigma_next, dtype=torch.float32, device=x.device)
    dt = sigma_next - sigma
    s = sigma if sigma_cap is None else torch.clamp(sigma, max=sigma_cap)
    s = torch.clamp(s, max=1.0 - 1e-6)  # never divide by zero, even without a cap
    std = noise_level * torch.sqrt(sigma / (1 - s))
    mean = x + (v + std**2 / (2 * sigma) * (x + (1 - sigma) * v)) * dt
    step_std = std * torch.sqrt(-dt)
    if prev_sample is None:
        eps = noise.float() if noise is not None else torch.randn(x.shape, generator=generator, device=x.device)
        prev_sample = mean + step_std * eps
    prev_sample = prev_sample.float()
    log_prob = (
        -((prev_sample.detach() - mean) ** 2) / (2 * step_std**2)
        - torch.log(step_std)
        - 0.5 * math.log(2 * math.pi)
    )
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
    return SDEStep(prev_sample, log_prob, mean, step_std)


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(mean_ref, std^2)) per sample, averaged over non-batch dimensions."""
    kl = (mean.float() - mean_ref.float()) ** 2 / (2 * std.float() ** 2)
    return kl.mean(dim=tuple(range(1, kl.ndim)))
