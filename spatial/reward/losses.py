"""Bradley-Terry losses on Gaussian scores, and the preference probability each of them implies.

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

import numpy as np
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


PREFERENCE_MODELS = ("bradley-terry", "thurstone")

# E[sigmoid(X)], X ~ N(m, s^2), by 64-node quadrature over whichever of the two densities is the wider
# one (then the other factor is smooth on its scale): Gauss-Hermite over X while s <= 2; beyond, it is
# P(L < X) for a standard logistic L, i.e. the mean of Phi((m - L) / s), by Gauss-Legendre over L's
# quantile. Within 1e-4 of a fine grid for s up to 80 (SpatialScore's sigma is at most e^4).
_GH_NODES, _GH_WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.hermite.hermgauss(64))
_GL_NODES, _GL_WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(64))
_LOGISTIC_QUANTILES = torch.logit((_GL_NODES + 1) / 2)


def expected_sigmoid(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[sigmoid(X)] for X ~ N(mean, std^2), elementwise (float64)."""
    m, s = mean[..., None], std[..., None]
    narrow = (torch.sigmoid(m + math.sqrt(2) * s * _GH_NODES) * _GH_WEIGHTS).sum(-1) / math.sqrt(math.pi)
    wide = (torch.special.ndtr((m - _LOGISTIC_QUANTILES) / s.clamp_min(1e-12)) * _GL_WEIGHTS).sum(-1) / 2
    return torch.where(std <= 2, narrow, wide)


def prob_prefer(mu_a, sigma_a, mu_b, sigma_b, model: str = "thurstone"):
    """P(A preferred over B) for Gaussian scores, under the likelihood a model was trained with:

        bradley-terry  E[sigmoid(s_a - s_b)],  s_a - s_b ~ N(mu_a - mu_b, sigma_a^2 + sigma_b^2)  (the MC loss)
        thurstone      P(s_a > s_b) = Phi((mu_a - mu_b) / sqrt(sigma_a^2 + sigma_b^2))         (the closed form)

    The Bradley-Terry value is never more certain than sigmoid(mu_a - mu_b): the sampled scores' own
    noise is part of that likelihood. Thurstone at sigma = 0 is a step (1, 0 or 0.5 on a tie), which is
    how point scorers (oracle, judge) rank."""
    if model not in PREFERENCE_MODELS:
        raise ValueError(f"preference model must be one of {', '.join(PREFERENCE_MODELS)}, got {model!r}")
    mu_a, sigma_a, mu_b, sigma_b = (torch.as_tensor(x, dtype=torch.float64) for x in (mu_a, sigma_a, mu_b, sigma_b))
    scale = torch.sqrt(sigma_a**2 + sigma_b**2)
    diff = mu_a - mu_b
    if model == "bradley-terry":
        return expected_sigmoid(diff, scale)
    point = torch.where(diff > 0, 1.0, torch.where(diff < 0, 0.0, 0.5)).to(torch.float64)
    return torch.where(scale > 0, torch.special.ndtr(diff / scale.clamp_min(1e-12)), point)
