"""Full-size FLUX.1-dev generation cost on one GPU, through the generation service's own code path.

    python bench/generation_full_size.py --size 1024 --steps 28          # on a CUDA machine
    python bench/generation_full_size.py --tiny --size 64 --steps 4      # checks the script on a CPU

The transformer (19 double + 38 single blocks, 24 heads x 128, in 64, joint 4096, pooled 768,
guidance embedding, RoPE (16, 56, 56)) and the VAE (FLUX's published AutoencoderKL config) are
built with random weights in bf16 directly on the device: no download, same cost as the real
weights. The text encoders are one-layer random stand-ins with FLUX's output widths (T5: 512 x 4096,
CLIP pooled: 768); only their output shapes matter to the transformer. Reported:

* seconds per image for the 28-step transformer loop (median of 10 timed steps x 28),
  under each attention backend that works here (PyTorch SDPA's flash / cuDNN / efficient / math),
* achieved TFLOP/s: FLOPs of one transformer forward counted by torch.utils.flop_counter
  (every matmul, and attention as 4 * L^2 * d per head), divided by the median step time,
* the full-size VAE decode and an end-to-end `generate` (encode + 28 steps + decode),
* base + tuned side by side: a rank-32 LoRA on one transformer switched off/on per call, against
  both sides in one mixed-adapter batch of two (`adapter_per_row`) and against two transformers in
  memory; peak CUDA memory and seconds per pair.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel  # noqa: E402

from spatial.generation import sampling  # noqa: E402
from spatial.generation.config import GenerationConfig  # noqa: E402
from spatial.generation.lora import adapter_per_row, add_lora  # noqa: E402
from spatial.generation.service import GenerationService  # noqa: E402
from spatial.generation.toy import build_tokenizer  # noqa: E402

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
PROMPT = "a red circle to the left of a blue square"


def build(tiny: bool, device: torch.device, dtype: torch.dtype) -> FluxPipeline:
    tr = TINY_TRANSFORMER if tiny else FLUX_DEV_TRANSFORMER
    clip_tok, t5_tok = build_tokenizer(77), build_tokenizer(512)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in bf16 on the device: no 48 GB fp32 copy on the host
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**tr)
            vae = AutoencoderKL(**(TINY_VAE if tiny else FLUX_DEV_VAE))
            clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(clip_tok), hidden_size=tr["pooled_projection_dim"],
                                                intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                                max_position_embeddings=77, eos_token_id=3, pad_token_id=0))  # fmt: skip
            t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=tr["joint_attention_dim"], d_ff=64,
                                         num_layers=1, num_heads=2, d_kv=16, pad_token_id=0, eos_token_id=3))  # fmt: skip
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096, shift=3.0)  # fmt: skip
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5,
                        tokenizer_2=t5_tok, transformer=transformer)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    for m in (vae, clip, t5, transformer):
        m.eval().requires_grad_(False)
    return pipe


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(pipe, size: int, steps: int, device, cond, ctx=None) -> list[float]:
    """Per-step wall times of the denoising loop (batch 1), after one warm-up step. Only the transformer
    runs inside `ctx` (an attention-backend choice): T5's attention takes a position bias as a mask,
    which the flash and cuDNN kernels refuse."""
    x = sampling.initial_latents(pipe, [0], size, cond.embeds.dtype)
    sigmas = sampling.sigma_schedule(pipe, steps, size)
    g = sampling.guidance_vector(pipe, 3.5, 1)
    times = []
    with torch.no_grad(), (ctx or contextlib.nullcontext()):
        for i in range(-1, steps):
            k = max(i, 0)
            sync(device)
            t = time.perf_counter()
            v = sampling.velocity(pipe, x, sigmas[k], cond, g)
            if i >= 0:
                x = sampling.euler_step(x, v, sigmas[k], sigmas[k + 1])
            sync(device)
            if i >= 0:
                times.append(time.perf_counter() - t)
    return times


def forward_flops(pipe, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    cond = sampling.encode_prompts(pipe, [PROMPT])
    x = sampling.initial_latents(pipe, [0], size, cond.embeds.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        sampling.velocity(pipe, x, 1.0, cond, sampling.guidance_vector(pipe, 3.5, 1))
    return counter.get_total_flops()


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=5, help="end-to-end runs (median reported)")
    ap.add_argument("--backend_steps", type=int, default=10, help="timed steps per attention backend")
    ap.add_argument("--pair_repeats", type=int, default=2, help="base+tuned pairs timed per layout")
    ap.add_argument("--tiny", action="store_true", help="small config: check the script on a CPU")
    ap.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "size": args.size, "steps": args.steps, "dtype": "bfloat16"}  # fmt: skip

    t = time.perf_counter()
    pipe = build(args.tiny, device, dtype)
    sync(device)
    result["build_seconds"] = round(time.perf_counter() - t, 1)
    result["transformer_params_billion"] = round(sum(p.numel() for p in pipe.transformer.parameters()) / 1e9, 3)
    result["weights_gib"] = peak_gib(device)
    flops = forward_flops(pipe, args.size)
    result["forward_tflop"] = round(flops / 1e12, 2)

    # 1. The transformer loop under each SDPA backend that runs here.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"sdpa_default": None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}  # fmt: skip
    result["backends"] = {}
    cond = sampling.encode_prompts(pipe, [PROMPT])
    for name, backend in backends.items():
        ctx = sdpa_kernel([backend]) if backend is not None else None
        try:
            times = step_times(pipe, args.size, args.backend_steps, device, cond, ctx)
        except Exception as e:  # noqa: BLE001 - a backend unsupported here is reported, not fatal
            result["backends"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
            continue
        med = statistics.median(times)
        result["backends"][name] = {"step_median_s": round(med, 4), "seconds_per_image": round(med * args.steps, 2),
                                    "tflops": round(flops / med / 1e12, 1),
                                    "mfu": round(flops / med / 1e12 / args.peak_tflops, 3)}  # fmt: skip
        print(name, result["backends"][name], flush=True)

    # 2. VAE decode and end-to-end generate through the service (one pipeline, no adapter).
    service = GenerationService(GenerationConfig.for_preset("flux-dev", base_model="(built in memory)", lora=None,
                                                            steps=args.steps, size=args.size), pipeline=pipe)  # fmt: skip
    service.config.lora = None
    x = sampling.initial_latents(pipe, [0], args.size, dtype)
    decode_times = []
    for _ in range(args.repeats):
        sync(device)
        t = time.perf_counter()
        sampling.decode(pipe, x, args.size)
        sync(device)
        decode_times.append(time.perf_counter() - t)
    result["vae_decode_s"] = round(statistics.median(decode_times), 3)
    service.generate(PROMPT, [0], steps=2)  # warm-up
    peak_reset(device)
    e2e = []
    for r in range(args.repeats):
        sync(device)
        t = time.perf_counter()
        service.generate(PROMPT, [r])
        sync(device)
        e2e.append(time.perf_counter() - t)
    result["generate_s"] = {"runs": [round(v, 2) for v in e2e], "median": round(statistics.median(e2e), 2)}
    result["generate_peak_gib"] = peak_gib(device)
    print("generate", result["generate_s"], flush=True)

    # 3. Base + tuned: one transformer with a LoRA switched per call, vs two transformers.
    add_lora(pipe.transformer, rank=32, alpha=64, adapter_name="tuned")
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1e-3)  # a trained-looking adapter (B = 0 would be a no-op)
    service.adopt_adapter("tuned", "random rank-32 adapter")
    service.compare(PROMPT, 0, steps=2)  # warm-up
    peak_reset(device)
    pairs = []
    for r in range(args.pair_repeats):
        sync(device)
        t = time.perf_counter()
        service.compare(PROMPT, r)
        sync(device)
        pairs.append(time.perf_counter() - t)
    result["one_pipeline_pair"] = {"seconds": round(statistics.median(pairs), 2), "runs": [round(v, 2) for v in pairs],
                                   "peak_gib": peak_gib(device)}  # fmt: skip
    print("one pipeline", result["one_pipeline_pair"], flush=True)
    try:  # both sides as one batch of two: the same transformer, the LoRA on the tuned row only
        peak_reset(device)
        mixed = []
        for r in range(args.pair_repeats + 1):  # the first is a warm-up for the batch of two
            sync(device)
            t = time.perf_counter()
            with adapter_per_row(pipe.transformer, [None, "tuned"]):
                sampling.generate_images(pipe, [PROMPT] * 2, [r] * 2, args.steps, 3.5, args.size)
            sync(device)
            mixed.append(time.perf_counter() - t)
        mixed = mixed[1:]
        result["mixed_batch_pair"] = {"seconds": round(statistics.median(mixed), 2), "runs": [round(v, 2) for v in mixed],
                                      "peak_gib": peak_gib(device)}  # fmt: skip
    except torch.OutOfMemoryError as e:
        result["mixed_batch_pair"] = {"error": f"out of memory: {str(e).splitlines()[0][:100]}"}
    print("mixed batch", result["mixed_batch_pair"], flush=True)
    try:
        second = copy.deepcopy(pipe.transformer)  # the layout the service avoids: a merged copy per side
        second.disable_adapters()
        twin = FluxPipeline(**{**pipe.components, "transformer": second})
        twin.set_progress_bar_config(disable=True)
        peak_reset(device)
        twins = []
        for r in range(args.pair_repeats):
            sync(device)
            t = time.perf_counter()
            with torch.no_grad():
                pipe.transformer.enable_adapters()
                pipe.transformer.set_adapter("tuned")
                sampling.generate_images(pipe, [PROMPT], [r], args.steps, 3.5, args.size)
                sampling.generate_images(twin, [PROMPT], [r], args.steps, 3.5, args.size)
            sync(device)
            twins.append(time.perf_counter() - t)
        result["two_pipelines_pair"] = {"seconds": round(statistics.median(twins), 2),
                                        "runs": [round(v, 2) for v in twins], "peak_gib": peak_gib(device)}  # fmt: skip
        del second, twin
    except torch.OutOfMemoryError as e:
        result["two_pipelines_pair"] = {"error": f"out of memory: {str(e).splitlines()[0][:100]}"}
    print("two pipelines", result.get("two_pipelines_pair"), flush=True)

    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
