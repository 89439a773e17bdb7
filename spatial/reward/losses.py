"""Bradley-Terry losses on Gaussian scores, and the closed-form preference probability.

SpatialScore predicts a Gaussian score s ~ N(mu, sigma^2) per (prompt, image). For a pair where
image w is preferred over image l:

    MC loss      L = 1/N sum_n -log sigmoid(s_w^n - s_l^n),  s^n = mu + sigma * eps^n   (paper, N = 1000)
    closed form  L = -log Phi((mu_w - mu_l) / sqrt(sigma_w^2 + sigma_l^2))            (Thurstone)

-log sigmoid is convex, so by Jensen the MC loss's expectation grows with sigma: it rewards every
sigma shrinking to 0, on easy and ambiguous pairs alike. `sigma_prior_kl` is the regulariser we
add against that: the KL divergence from N(mu, sigma^2) to N(mu, sigma0^2),

    KL = log(sigma0 / sigma) + sigma^2 / (2 sigma0^2) - 1/2,

a log barrier at sigma -> 0 that is flat near sigma0. With a small weight, sigma settles where the
BT pressure and the barrier balance, which is larger for pairs the model still gets wrong (their
BT gradient on sigma is weaker than the barrier's) than for pairs it separates by a wide margin.
The closed form is no different in this respect: its sigma gradient has the sign of the error, so
sigma grows on mis-ordered pairs and still shrinks towards 0 on every pair it orders right; it gets
the same prior term.

log sigma is bounded to [LOG_SIGMA_MIN, LOG_SIGMA_MAX] with a straight-through clamp: the value is
clamped (no overflow, no zero variance), the gradient passes as if it were not, so a head that
overshoots the bound is still pulled back by the loss instead of sitting in a flat region.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 4.0


def bounded_log_sigma(log_sigma: torch.Tensor) -> torch.Tensor:
    """The clamped value with the identity's gradient (straight-through)."""
    return log_sigma + (log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX) - log_sigma).detach()


def sigma_from_log(log_sigma: torch.Tensor) -> torch.Tensor:
    return bounded_log_sigma(log_sigma).exp()


def bt_mc_loss(mu_w, log_sigma_w, mu_l, log_sigma_l, eps_w: torch.Tensor, eps_l: torch.Tensor) -> torch.Tensor:
    """Per-pair MC Bradley-Terry loss. eps_*: (pairs, N) standard normal draws (reparameterised)."""
    s_w = mu_w[:, None] + sigma_from_log(log_sigma_w)[:, None] * eps_w
    s_l = mu_l[:, None] + sigma_from_log(log_sigma_l)[:, None] * eps_l
    return -F.logsigmoid(s_w - s_l).mean(dim=1)


def bt_closed_loss(mu_w, log_sigma_w, mu_l, log_sigma_l) -> torch.Tensor:
    """Per-pair -log P(s_w > s_l) for independent Gaussian scores."""
    z = (mu_w - mu_l) / torch.sqrt(sigma_from_log(log_sigma_w) ** 2 + sigma_from_log(log_sigma_l) ** 2)
    return -torch.special.log_ndtr(z)


def sigma_prior_kl(log_sigma: torch.Tensor, sigma0: float = 1.0) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(mu, sigma0^2)) per score."""
    ls = bounded_log_sigma(log_sigma)
    return math.log(sigma0) - ls + torch.exp(2 * ls) / (2 * sigma0**2) - 0.5


def prob_prefer(mu_a, sigma_a, mu_b, sigma_b):
    """P(s_a > s_b) = Phi((mu_a - mu_b) / sqrt(sigma_a^2 + sigma_b^2)); a step function at sigma = 0."""
    mu_a, sigma_a, mu_b, sigma_b = (torch.as_tensor(x, dtype=torch.float64) for x in (mu_a, sigma_a, mu_b, sigma_b))
    scale = torch.sqrt(sigma_a**2 + sigma_b**2)
    diff = mu_a - mu_b
    point = torch.where(diff > 0, 1.0, torch.where(diff < 0, 0.0, 0.5)).to(torch.float64)
    return torch.where(scale > 0, torch.special.ndtr(diff / scale.clamp_min(1e-12)), point)
