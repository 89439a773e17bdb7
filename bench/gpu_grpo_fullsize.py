"""One GRPO iteration on the full-size FLUX.1-dev transformer (random weights), with and without
top-k filtering: wall time split into sampling / scoring / training, and peak GPU memory.

    python bench/gpu_grpo_fullsize.py --size 512 --group 24 --k 6 --steps 10

The transformer and VAE are built from FLUX.1-dev's published configs with random weights (no
download). The text encoders are one-layer random stand-ins with FLUX's output widths (T5 4096,
CLIP pooled 768): only their output shapes matter to the transformer's cost, and their own cost is
excluded from the timings. The reward is a cheap image statistic so that this measures the policy;
SpatialScore's own throughput is measured by the scoring benchmark. `--tiny` runs the same code on
a small config (for checking the script on a CPU).
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from spatial.rl.advantages import group_advantages
from spatial.rl.config import GRPOConfig
from spatial.rl.flux_policy import FluxPolicy
from spatial.rl.trainer import GRPOTrainer

FLUX_DEV_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                            guidance_embeds=True, axes_dims_rope=(16, 56, 56))  # fmt: skip
FLUX_DEV_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                    layers_per_block=2, norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False,
                    scaling_factor=0.3611, shift_factor=0.1159)  # fmt: skip
TINY_TRANSFORMER = dict(FLUX_DEV_TRANSFORMER, num_layers=1, num_single_layers=1, attention_head_dim=16,
                        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
TINY_VAE = dict(FLUX_DEV_VAE, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)


def build(tiny: bool, dtype, device) -> FluxPipeline:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", "a", "red", "circle", "left", "of", "blue", "square"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    t = dict(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    tr = TINY_TRANSFORMER if tiny else FLUX_DEV_TRANSFORMER
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=tr["pooled_projection_dim"], intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                        eos_token_id=3, pad_token_id=0))  # fmt: skip
    t5 = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=tr["joint_attention_dim"], d_ff=64, num_layers=1,
                                 num_heads=2, d_kv=16, pad_token_id=0, eos_token_id=3))  # fmt: skip
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                  base_image_seq_len=256, max_image_seq_len=4096, shift=3.0),
        vae=AutoencoderKL(**(TINY_VAE if tiny else FLUX_DEV_VAE)), text_encoder=clip,
        tokenizer=PreTrainedTokenizerFast(**t, model_max_length=77), text_encoder_2=t5,
        tokenizer_2=PreTrainedTokenizerFast(**t, model_max_length=512),
        transformer=FluxTransformer2DModel(**tr),
    )  # fmt: skip
    return pipe.to(device, dtype)


class MeanPixel:
    def score(self, prompts, images):
        mu = np.array([np.asarray(im, dtype=np.float32).mean() / 255 for im in images])
        return SimpleNamespace(mu=mu, sigma=np.zeros_like(mu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--group", type=int, default=24)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--train_fraction", type=float, default=0.6)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)  # build the 12B transformer directly in bf16 on the GPU
    with torch.device(device):
        pipe = build(args.tiny, dtype, device)
    torch.set_default_dtype(torch.float32)
    policy = FluxPolicy(pipe, rank=32, alpha=64, dtype=dtype, gradient_checkpointing=True)
    rows = []
    for n, k in enumerate((args.k, 0)):
        cfg = GRPOConfig(output_dir="/tmp/grpo-bench", group_size=args.group, top_k=k, prompts_per_iteration=1,
                         iterations=1, sample_steps=args.steps, resolution=args.size, lora_rank=32, lora_alpha=64,
                         train_timestep_fraction=args.train_fraction, save_every=100, eval_every=100)  # fmt: skip
        trainer = GRPOTrainer(cfg, policy, MeanPixel(), ["a red circle left of a blue square"])
        if n == 0:
            trainer.sample(0)  # warm-up (allocator, kernels); not timed
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        prompts, groups, cond, guidance, traj, images, rewards, t_sampled = trainer.sample(1)
        adv, keep = group_advantages(rewards, groups, k)
        t_scored = time.perf_counter()
        stats = trainer.train_step(cond, guidance, traj, adv, keep)
        if cuda:
            torch.cuda.synchronize()
        t_end = time.perf_counter()
        rows.append({"top_k": k, "group": args.group, "kept": int(keep.sum()), "sample_s": round(t_sampled - t0, 2),
                     "score_s": round(t_scored - t_sampled, 3), "train_s": round(t_end - t_scored, 2),
                     "iteration_s": round(t_end - t0, 2), "nfe_sampling": args.group * args.steps,
                     "nfe_training": stats["nfe"],
                     "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None})  # fmt: skip
    print(json.dumps({"size": args.size, "steps": args.steps, "dtype": str(dtype), "device": device,
                      "gpu": torch.cuda.get_device_name() if cuda else None, "rows": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
