"""Group-normalised advantages with top-k / bottom-k filtering.

GRPO compares each sample with the other samples of its prompt (its group):
A_i = (r_i - mean_G) / (std_G + eps). With top-k filtering (the paper's efficiency study),
only the k best and the k worst samples of each group set the statistics and enter the loss;
the middle of the group is dropped, which saves the training passes on the least informative
samples. k = 0 keeps the whole group.
"""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, top_k: int = 0, eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and a keep-mask for flat `rewards` whose group each `group_ids` names.

    Returns (advantages, keep): advantages are 0 where keep is False. Ties are broken by position,
    so the selection is deterministic.
    """
    rewards = rewards.float()
    adv = torch.zeros_like(rewards)
    keep = torch.zeros_like(rewards, dtype=torch.bool)
    for g in torch.unique(group_ids):
        idx = torch.nonzero(group_ids == g, as_tuple=True)[0]
        r = rewards[idx]
        if top_k and 2 * top_k < len(idx):
            order = torch.argsort(r, stable=True)
            chosen = torch.cat([order[:top_k], order[-top_k:]])
        else:
            chosen = torch.arange(len(idx))
        sel = r[chosen]
        std = sel.std(unbiased=False) if len(sel) > 1 else torch.tensor(0.0)
        adv[idx[chosen]] = (sel - sel.mean()) / (std + eps)
        keep[idx[chosen]] = True
    return adv, keep
