"""Sampling trajectories with log-probabilities, and re-evaluating them for training.

The policy is anything with `velocity(latents, sigma, cond, guidance) -> v` (the FLUX transformer
behind the generation service's step functions). A trajectory keeps every state x_0..x_T so that
the training pass can recompute log p(x_{j+1} | x_j) under the current weights, and under the
reference weights (the same transformer with its LoRA disabled) for the KL term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .sde import gaussian_kl, sde_step_with_logprob

Velocity = Callable[[torch.Tensor, torch.Tensor, Any, torch.Tensor | None], torch.Tensor]


@dataclass
class Trajectory:
    states: torch.Tensor  # (B, T + 1, ...) float32: x_0 (noise) ... x_T (final latents)
    log_probs: torch.Tensor  # (B, T) float32, log p(x_{j+1} | x_j) when sampled
    sigmas: torch.Tensor  # (T + 1,) from 1 down to 0

    @property
    def final(self) -> torch.Tensor:
        return self.states[:, -1]


def sigma_cap(sigmas: torch.Tensor) -> float | None:
    """The guard for the sigma = 1 endpoint: the largest schedule value below 1."""
    below = sigmas[(sigmas < 1.0) & (sigmas > 0)]
    return float(below.max()) if len(below) else None


@torch.no_grad()
def sample_trajectory(
    velocity: Velocity,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    cond: Any,
    guidance: torch.Tensor | None,
    noise_level: float,
    generators: list[torch.Generator] | None = None,
    sde_steps: int | None = None,
) -> Trajectory:
    """Run the SDE sampler from `noise` through `sigmas`, recording states and log-probs.

    `generators` (one per sample) make each sample's step noise independent of batching, so the
    same sample is drawn whether it is generated alone, in a batch, or on another process.
    `sde_steps` = w makes only the first w steps stochastic and the rest plain Euler (ODE) steps,
    whose log-prob is recorded as 0 and which are never trained: every difference between two
    samples from the same start then comes from the steps that are trained (Flow-GRPO-Fast's window).
    """
    x = noise.float()
    cap = sigma_cap(sigmas)
    states, log_probs = [x], []
    for j in range(len(sigmas) - 1):
        v = velocity(x, sigmas[j], cond, guidance)
        if sde_steps is not None and j >= sde_steps:
            x = x + (sigmas[j + 1] - sigmas[j]).float() * v.float()
            states.append(x)
            log_probs.append(torch.zeros(x.shape[0], device=x.device))
            continue
        eps = None
        if generators is not None:
            eps = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators]).to(x.device)
        step = sde_step_with_logprob(v, sigmas[j], sigmas[j + 1], x, noise_level, cap, noise=eps)
        x = step.sample
        states.append(x)
        log_probs.append(step.log_prob)
    return Trajectory(torch.stack(states, 1), torch.stack(log_probs, 1), sigmas.float())


def step_log_prob(
    velocity: Velocity,
    traj: Trajectory,
    j: int,
    cond: Any,
    guidance: torch.Tensor | None,
    noise_level: float,
    reference: Velocity | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(x_{j+1} | x_j) under `velocity` (with gradients), and the KL to `reference` if given."""
    x = traj.states[:, j]
    cap = sigma_cap(traj.sigmas)
    v = velocity(x, traj.sigmas[j], cond, guidance)
    step = sde_step_with_logprob(v, traj.sigmas[j], traj.sigmas[j + 1], x, noise_level, cap, prev_sample=traj.states[:, j + 1])
    kl = None
    if reference is not None:
        with torch.no_grad():
            v_ref = reference(x, traj.sigmas[j], cond, guidance)
            ref = sde_step_with_logprob(v_ref, traj.sigmas[j], traj.sigmas[j + 1], x, noise_level, cap,
                                        prev_sample=traj.states[:, j + 1])  # fmt: skip
        kl = gaussian_kl(step.mean, ref.mean, step.std)
    return step.log_prob, kl
