"""The GRPO maths, checked numerically against the formulas in their docstrings."""

import math

import pytest
import torch

from spatial.rl import gaussian_kl, group_advantages, grpo_loss, sde_step_with_logprob


def _case(seed=0, shape=(3, 16, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_sde_mean_and_std_follow_the_flow_grpo_formula():
    x, v = _case()
    sigma, sigma_next, a = 0.6, 0.45, 0.7
    out = sde_step_with_logprob(v, sigma, sigma_next, x, noise_level=a, prev_sample=x)
    dt = sigma_next - sigma
    std = a * math.sqrt(sigma / (1 - sigma))
    mean = x.double() + (v.double() + std**2 / (2 * sigma) * (x.double() + (1 - sigma) * v.double())) * dt
    assert torch.allclose(out.mean.double(), mean, atol=1e-5)
    assert out.std.item() == pytest.approx(std * math.sqrt(-dt), rel=1e-5)


def test_log_prob_is_the_gaussian_density_averaged_over_dimensions():
    x, v = _case(1)
    first = sde_step_with_logprob(v, 0.8, 0.7, x, generator=torch.Generator().manual_seed(3))
    again = sde_step_with_logprob(v, 0.8, 0.7, x, prev_sample=first.sample)
    ref = torch.distributions.Normal(again.mean.double(), again.std.double()).log_prob(first.sample.double())
    assert torch.allclose(again.log_prob.double(), ref.mean(dim=(1, 2)), atol=1e-5)
    assert torch.allclose(first.log_prob, again.log_prob)  # sampling and re-evaluation agree


def test_samples_have_the_stated_mean_and_variance():
    x, v = torch.zeros(20000, 1), torch.ones(20000, 1)
    out = sde_step_with_logprob(v, 0.5, 0.4, x, generator=torch.Generator().manual_seed(0))
    assert out.sample.mean().item() == pytest.approx(out.mean.mean().item(), abs=0.01)
    assert out.sample.std().item() == pytest.approx(out.std.item(), rel=0.03)


def test_sigma_one_endpoint_is_guarded_by_the_cap():
    x, v = _case(2)
    out = sde_step_with_logprob(v, 1.0, 0.9, x, sigma_cap=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.sample).all() and torch.isfinite(out.log_prob).all()
    capped = sde_step_with_logprob(v, 1.0, 0.9, x, sigma_cap=0.9, prev_sample=out.sample)
    # Flow-GRPO caps only the denominator: std = a sqrt(1 / (1 - cap)); the mean uses sigma = 1 itself.
    std = 0.7 * math.sqrt(1.0 / 0.1)
    assert out.std.item() == pytest.approx(std * math.sqrt(0.1), rel=1e-5)
    mean = x.double() + (v.double() + std**2 / 2 * x.double()) * (0.9 - 1.0)
    assert torch.allclose(out.mean.double(), mean, atol=1e-5)
    assert torch.allclose(capped.log_prob, out.log_prob)


def test_zero_noise_level_is_the_euler_ode_step():
    x, v = _case(3)
    out = sde_step_with_logprob(v, 0.5, 0.3, x, noise_level=1e-8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out.sample, x + v * (0.3 - 0.5), atol=1e-5)


def test_log_prob_is_float32_and_differentiable_in_the_velocity_even_from_bf16():
    x, v = _case(4)
    v = v.bfloat16().requires_grad_(True)
    first = sde_step_with_logprob(v.detach(), 0.7, 0.6, x.bfloat16(), generator=torch.Generator().manual_seed(1))
    out = sde_step_with_logprob(v, 0.7, 0.6, x.bfloat16(), prev_sample=first.sample)
    assert out.log_prob.dtype == torch.float32
    out.log_prob.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_gaussian_kl_matches_torch_distributions():
    m1, m2 = _case(5)
    std = torch.tensor(0.3)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, std), torch.distributions.Normal(m2, std))
    assert torch.allclose(gaussian_kl(m1, m2, std), ref.mean(dim=(1, 2)), atol=1e-6)


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv, keep = group_advantages(rewards, groups)
    std = math.sqrt(1.25)
    assert torch.allclose(adv[:4], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / (std + 1e-4))
    assert torch.equal(adv[4:], torch.zeros(4)) and keep.all()


def test_top_k_keeps_only_the_best_and_worst_and_they_set_the_statistics():
    rewards = torch.tensor([0.9, 0.1, 0.5, 0.4, 0.6, 0.2])
    adv, keep = group_advantages(rewards, torch.zeros(6, dtype=torch.long), top_k=2)
    assert keep.tolist() == [True, True, False, False, True, True]
    sel = torch.tensor([0.9, 0.1, 0.6, 0.2])
    expected = (sel - sel.mean()) / (sel.std(unbiased=False) + 1e-4)
    assert torch.allclose(adv[keep], expected)
    assert torch.equal(adv[~keep], torch.zeros(2))


def test_top_k_of_half_the_group_or_more_keeps_everything():
    rewards = torch.tensor([0.3, 0.1, 0.2, 0.4])
    _, keep = group_advantages(rewards, torch.zeros(4, dtype=torch.long), top_k=2)
    assert keep.all()


def test_on_policy_the_loss_is_minus_the_mean_advantage_with_no_clipping():
    lp = torch.randn(8)
    adv = torch.randn(8)
    out = grpo_loss(lp, lp.clone(), adv, clip_range=0.2)
    assert out.policy_loss.item() == pytest.approx(-adv.mean().item(), abs=1e-6)
    assert out.clip_fraction.item() == 0 and out.ratio_mean.item() == pytest.approx(1.0)


def test_clipping_stops_the_gradient_once_the_ratio_leaves_the_trust_region():
    old = torch.zeros(2)
    new = torch.tensor([0.5, -0.5], requires_grad=True)  # ratios e^0.5 and e^-0.5
    adv = torch.tensor([1.0, -1.0])
    out = grpo_loss(new, old, adv, clip_range=0.2)
    out.loss.backward()
    assert torch.equal(new.grad, torch.zeros(2))
    assert out.clip_fraction.item() == 1.0


def test_advantages_are_clipped_and_kl_is_weighted_by_beta():
    lp = torch.zeros(2)
    out = grpo_loss(lp, lp, torch.tensor([100.0, -100.0]), kl=torch.tensor([0.2, 0.4]), adv_clip=5.0, beta=0.5)
    assert out.policy_loss.item() == pytest.approx(0.0)
    assert out.kl.item() == pytest.approx(0.3) and out.loss.item() == pytest.approx(0.15)
    one = grpo_loss(lp[:1], lp[:1], torch.tensor([100.0]), adv_clip=5.0)
    assert one.policy_loss.item() == pytest.approx(-5.0)
