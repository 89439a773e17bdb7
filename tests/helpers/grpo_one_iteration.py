"""One GRPO iteration on the tiny random FLUX, run by tests under 1 or 2 accelerate processes.

    python -m tests.helpers.grpo_one_iteration OUT PROMPTS_PER_PROCESS
"""

import sys
from types import SimpleNamespace

import numpy as np
import torch
from accelerate import Accelerator

from spatial.rl.config import GRPOConfig
from spatial.rl.flux_policy import FluxPolicy
from spatial.rl.trainer import GRPOTrainer
from tests.helpers.tiny_flux import tiny_flux_pipeline


class Brightness:
    def score(self, prompts, images):
        mu = np.array([np.asarray(im, dtype=np.float32).mean() / 255 for im in images])
        return SimpleNamespace(mu=mu, sigma=np.zeros_like(mu))


def main():
    out, per = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    cfg = GRPOConfig(output_dir=out, group_size=4, top_k=1, prompts_per_iteration=per, iterations=1, sample_steps=3,
                     resolution=32, lora_rank=4, lora_alpha=8, save_every=1, eval_every=100, learning_rate=1e-2,
                     clip_range=0.2, beta=0.01)  # fmt: skip
    policy = FluxPolicy(tiny_flux_pipeline(seed=0), rank=4, alpha=8)
    prompts = ["a red circle above a blue square", "a green triangle left of a purple diamond"]
    trainer = GRPOTrainer(cfg, policy, Brightness(), prompts, accelerator=acc)
    trainer.train()
    if acc.is_main_process:  # the (averaged, clipped) gradient of the last optimizer step
        names = [n for n, p in policy.transformer.named_parameters() if p.requires_grad]
        torch.save({n: p.grad for n, p in zip(names, trainer.params)}, f"{out}/grads.pt")


if __name__ == "__main__":
    main()
