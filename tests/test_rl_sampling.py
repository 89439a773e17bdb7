"""Trajectories with log-probs: reproducible per sample, and exactly on-policy when re-evaluated."""

import torch

from spatial.rl.sampling import sample_trajectory, sigma_cap, step_log_prob


class LinearVelocity(torch.nn.Module):
    """A small real network standing in for the transformer: v = W x + b(sigma)."""

    def __init__(self, dim=6, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(dim, dim)
        self.t = torch.nn.Linear(1, dim)

    def forward(self, x, sigma, cond, guidance):
        return self.lin(x) + self.t(sigma.reshape(1, 1).float()) + cond


SIGMAS = torch.tensor([1.0, 0.8, 0.55, 0.3, 0.1, 0.0])


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_a_sample_is_the_same_alone_or_in_a_batch():
    net = LinearVelocity()
    noise = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1))
    batch = sample_trajectory(net, noise, SIGMAS, 0.0, None, 0.7, _gens([10, 11, 12]))
    alone = sample_trajectory(net, noise[1:2], SIGMAS, 0.0, None, 0.7, _gens([11]))
    assert batch.states.shape == (3, 6, 4, 6) and batch.log_probs.shape == (3, 5)
    assert torch.allclose(batch.states[1], alone.states[0], atol=1e-6)
    assert torch.allclose(batch.log_probs[1], alone.log_probs[0], atol=1e-5)


def test_re_evaluating_a_trajectory_under_the_same_weights_gives_ratio_one():
    net = LinearVelocity()
    noise = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(2))
    traj = sample_trajectory(net, noise, SIGMAS, 0.0, None, 0.7, _gens([1, 2]))
    for j in range(len(SIGMAS) - 1):
        lp, kl = step_log_prob(net, traj, j, 0.0, None, 0.7, reference=net)
        assert torch.allclose(torch.exp(lp - traj.log_probs[:, j]), torch.ones(2), atol=1e-5)
        assert torch.allclose(kl, torch.zeros(2), atol=1e-10)


def test_log_probs_carry_gradients_to_the_policy_and_kl_grows_when_it_moves():
    net, ref = LinearVelocity(seed=0), LinearVelocity(seed=0)
    traj = sample_trajectory(net, torch.randn(2, 4, 6), SIGMAS, 0.0, None, 0.7, _gens([3, 4]))
    with torch.no_grad():
        net.lin.bias.add_(0.5)
    lp, kl = step_log_prob(net, traj, 2, 0.0, None, 0.7, reference=ref)
    assert (kl > 0).all()
    lp.sum().backward()
    assert net.lin.weight.grad.abs().sum() > 0


def test_an_sde_window_makes_only_the_first_steps_random_and_the_rest_plain_euler():
    net = LinearVelocity()
    start = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(5)).expand(2, 4, 6)
    traj = sample_trajectory(net, start, SIGMAS, 0.0, None, 0.7, _gens([1, 2]), sde_steps=2)
    assert not torch.allclose(traj.states[0, 2], traj.states[1, 2])  # the window's noise differs
    assert (traj.log_probs[:, :2] != 0).all() and (traj.log_probs[:, 2:] == 0).all()
    with torch.no_grad():  # after the window each step is x + (sigma_next - sigma) v, nothing random
        for j in range(2, len(SIGMAS) - 1):
            v = net(traj.states[:, j], SIGMAS[j], 0.0, None)
            assert torch.allclose(traj.states[:, j + 1], traj.states[:, j] + (SIGMAS[j + 1] - SIGMAS[j]) * v, atol=1e-6)
    for j in range(2):  # the window's steps are still exactly on-policy when re-evaluated
        lp, _ = step_log_prob(net, traj, j, 0.0, None, 0.7)
        assert torch.allclose(torch.exp(lp - traj.log_probs[:, j]), torch.ones(2), atol=1e-5)


def test_the_cap_is_the_largest_sigma_below_one():
    assert abs(sigma_cap(SIGMAS) - 0.8) < 1e-6
