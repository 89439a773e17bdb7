"""Bradley-Terry losses on Gaussian scores, checked against values computed independently."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from spatial.reward.losses import LOG_SIGMA_MAX, LOG_SIGMA_MIN, bt_closed_loss, bt_mc_loss, prob_prefer, sigma_prior_kl


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def expected_bt(delta: float, scale: float) -> float:
    """E[-log sigmoid(delta + scale * z)], z ~ N(0, 1), by Gauss-Hermite quadrature (reference)."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    return float(np.sum(w * np.logaddexp(0.0, -(delta + scale * x))) / np.sqrt(2 * np.pi))


def test_mc_loss_without_noise_is_the_plain_bradley_terry_loss():
    zeros = torch.zeros(3, 5, dtype=torch.float64)
    got = bt_mc_loss(t(0.0, 2.0, -1.0), t(-7, -7, -7), t(0.0, 0.0, 0.0), t(-7, -7, -7), zeros, zeros)
    want = [math.log(2), math.log1p(math.exp(-2)), math.log1p(math.exp(1))]
    assert got.tolist() == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("mu_w,sigma_w,mu_l,sigma_l", [(1.0, 0.5, 0.0, 1.0), (-0.5, 2.0, 0.3, 0.1), (0.0, 1.0, 0.0, 1.0)])
def test_mc_loss_converges_to_the_expected_bradley_terry_loss(mu_w, sigma_w, mu_l, sigma_l):
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(2, 1, 400_000, generator=g, dtype=torch.float64)
    got = bt_mc_loss(t(mu_w), t(math.log(sigma_w)), t(mu_l), t(math.log(sigma_l)), eps[0], eps[1]).item()
    want = expected_bt(mu_w - mu_l, math.hypot(sigma_w, sigma_l))
    assert got == pytest.approx(want, abs=4e-3)


def test_closed_form_is_minus_log_probability_that_the_chosen_score_is_higher():
    got = bt_closed_loss(t(1.0, -0.5), t(math.log(0.5), math.log(2.0)), t(0.0, 0.3), t(0.0, math.log(0.1)))
    want = [-stats.norm.logcdf(1.0 / math.hypot(0.5, 1.0)), -stats.norm.logcdf(-0.8 / math.hypot(2.0, 0.1))]
    assert got.tolist() == pytest.approx(want, rel=1e-9)


def test_the_mc_loss_always_pushes_sigma_down_and_the_prior_term_stops_the_collapse():
    def fit(reg: float) -> float:
        log_sigma = torch.zeros(2, requires_grad=True)
        opt = torch.optim.Adam([log_sigma], lr=0.05)
        g = torch.Generator().manual_seed(1)
        for _ in range(400):
            eps = torch.randn(2, 1, 256, generator=g)
            # A pair the model gets wrong (mu_w < mu_l) and one it gets right.
            loss = (bt_mc_loss(torch.tensor([-0.5]), log_sigma[:1], torch.tensor([0.0]), log_sigma[1:], eps[0], eps[1])
                    + reg * sigma_prior_kl(log_sigma).sum()).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return log_sigma.exp().mean().item()

    assert fit(0.0) < 0.1  # without the regulariser sigma heads for zero even on a mis-ordered pair
    assert 0.3 < fit(0.05) < 1.0


def test_sigma_prior_kl_is_zero_at_the_prior_and_positive_elsewhere():
    kl = sigma_prior_kl(torch.log(t(1.0, 0.1, 3.0)), sigma0=1.0)
    assert kl[0].item() == pytest.approx(0.0, abs=1e-12)
    assert kl[1].item() == pytest.approx(math.log(10) + 0.01 / 2 - 0.5)
    assert kl[2].item() > 0


def test_prob_prefer_is_the_gaussian_comparison_and_is_symmetric():
    p = prob_prefer(1.0, 0.5, 0.0, 1.0).item()
    assert p == pytest.approx(stats.norm.cdf(1.0 / math.hypot(0.5, 1.0)))
    assert p + prob_prefer(0.0, 1.0, 1.0, 0.5).item() == pytest.approx(1.0)
    # Point scores (sigma = 0): a step function, 0.5 on a tie.
    assert prob_prefer(2.0, 0.0, 1.0, 0.0).item() == 1.0
    assert prob_prefer(1.0, 0.0, 2.0, 0.0).item() == 0.0
    assert prob_prefer(1.0, 0.0, 1.0, 0.0).item() == 0.5


def test_the_bradley_terry_preference_is_the_mean_sigmoid_of_sampled_scores_and_never_surer_than_the_means():
    torch.manual_seed(0)
    for mu_a, sigma_a, mu_b, sigma_b in [(0.85, 0.34, 0.0, 0.34), (2.0, 3.0, -1.0, 5.0), (-0.3, 60.0, 0.2, 40.0)]:
        diff = mu_a - mu_b + math.hypot(sigma_a, sigma_b) * torch.randn(2_000_000, dtype=torch.float64)
        p = prob_prefer(mu_a, sigma_a, mu_b, sigma_b, "bradley-terry").item()
        assert p == pytest.approx(torch.sigmoid(diff).mean().item(), abs=1e-3)
        assert abs(p - 0.5) <= abs(torch.sigmoid(torch.tensor(mu_a - mu_b)).item() - 0.5)
        assert p + prob_prefer(mu_b, sigma_b, mu_a, sigma_a, "bradley-terry").item() == pytest.approx(1.0)
    # The case that made this matter: Thurstone reads a margin of 0.85 at sigma 0.34 as near-certain,
    # where the likelihood the MC loss trained says 0.69.
    assert prob_prefer(0.85, 0.34, 0.0, 0.34).item() == pytest.approx(0.961, abs=1e-3)
    assert prob_prefer(0.85, 0.34, 0.0, 0.34, "bradley-terry").item() == pytest.approx(0.692, abs=1e-3)
    with pytest.raises(ValueError, match="preference model must be one of"):
        prob_prefer(1.0, 1.0, 0.0, 1.0, "plackett")


def test_the_closed_form_also_shrinks_sigma_on_pairs_it_orders_right_and_grows_it_on_the_others():
    log_sigma = torch.zeros(2, requires_grad=True, dtype=torch.float64)
    bt_closed_loss(t(1.0, -1.0), log_sigma, t(0.0, 0.0), log_sigma.detach()).sum().backward()
    assert log_sigma.grad[0] > 0 > log_sigma.grad[1]  # descent: right pair's sigma down, wrong pair's up


def test_log_sigma_beyond_its_bounds_is_clamped_in_value_but_still_gets_a_gradient():
    log_sigma = t(LOG_SIGMA_MIN - 3, LOG_SIGMA_MAX + 3).requires_grad_()
    kl = sigma_prior_kl(log_sigma)
    assert kl.tolist() == pytest.approx(sigma_prior_kl(t(LOG_SIGMA_MIN, LOG_SIGMA_MAX)).tolist())
    kl.sum().backward()
    # The prior pulls both back towards sigma0 = 1: up from below, down from above.
    assert log_sigma.grad[0] < 0 < log_sigma.grad[1]
    closed = t(0.0).requires_grad_()
    bt_closed_loss(t(-1.0), closed - 20, t(0.0), t(0.0)).backward()
    assert closed.grad.item() != 0.0
