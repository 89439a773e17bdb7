"""One GRPO iteration on the tiny random FLUX, run by tests under 1 or 2 accelerate processes.

    python -m tests.helpers.grpo_one_iteration OUT PROMPTS_PER_PROCESS [stop-on-rank-1]

Each process draws its LoRA from a different random state, as separate processes would: the
trainer must start every rank from rank 0's. With `stop-on-rank-1`, SIGTERM reaches only rank 1
during the first of 3 iterations: every rank must save checkpoint-1 and stop.
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
    stop_on_rank_1 = sys.argv[3:] == ["stop-on-rank-1"]
    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    cfg = GRPOConfig(output_dir=out, group_size=4, top_k=1, prompts_per_iteration=per, iterations=1, sample_steps=3,
                     resolution=32, lora_rank=4, lora_alpha=8, save_every=1, eval_every=100, learning_rate=1e-2,
                     clip_range=0.2, beta=0.01)  # fmt: skip
    pipe = tiny_flux_pipeline(seed=0)
    torch.manual_seed(1000 + acc.process_index)
    policy = FluxPolicy(pipe, rank=4, alpha=8)
    prompts = ["a red circle above a blue square", "a green triangle left of a purple diamond"]
    trainer = GRPOTrainer(cfg, policy, Brightness(), prompts, accelerator=acc)
    if stop_on_rank_1:
        trainer.config.iterations = 3
        trainer._stop = acc.process_index == 1
    trainer.train()
    if acc.is_main_process:  # the (averaged, clipped) gradient of the last optimizer step
        names = [n for n, p in policy.transformer.named_parameters() if p.requires_grad]
        torch.save({n: p.grad for n, p in zip(names, trainer.params)}, f"{out}/grads.pt")


if __name__ == "__main__":
    main()
