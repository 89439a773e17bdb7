"""Scoring throughput of SpatialScore or the zero-shot judge: images/s batched vs one image at a
time, in the same run.

    # toy checkpoint on CPU (docs/BENCHMARKS.md, "SpatialScore scoring"):
    python -m bench.scoring_throughput --checkpoint assets/toy/spatialscore --batch-sizes 1,32 --n 128
    # the zero-shot judge (the toy VLM asked "does this image follow the prompt?"):
    python -m bench.scoring_throughput --scorer judge --checkpoint assets/toy/vlm --batch-sizes 1,32 --n 128
    # Qwen2.5-VL-7B architecture, random weights, bf16 on CUDA ("Full size (H100)"):
    python -m bench.scoring_throughput --full-size --batch-sizes 1,8,32 --n 64 --resolution 448

Full size builds Qwen2.5-VL-7B-Instruct's published architecture (config values below) with
random bf16 weights on the GPU: no download. Its prompts are tokenised by the toy word-level
tokenizer (one token per word, about what Qwen's BPE gives for these plain English prompts); the
image side sets the image tokens: (side / 28)^2. Prints one JSON object per batch size and a last
line with every result; each rate is the median of --repeats timed passes after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

# Qwen/Qwen2.5-VL-7B-Instruct config.json (text and vision towers), as published on the Hub.
QWEN25_VL_7B = dict(
    text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
              num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000, rms_norm_eps=1e-6,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=3584,
                fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
)  # fmt: skip


def full_size_model(resolution: int, device: torch.device):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from spatial.reward.config import SpatialScoreConfig
    from spatial.reward.model import SpatialScore
    from spatial.reward.processing import ImageProcessor
    from spatial.reward.toy import CHAT_TEMPLATE, SPECIAL, build_tokenizer

    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    config = Qwen2_5_VLConfig(
        text_config=dict(**QWEN25_VL_7B["text"], pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"]),
        vision_config=QWEN25_VL_7B["vision"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    with torch.device(device):
        base = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    side = resolution * resolution
    image_processor = Qwen2VLImageProcessorPil(min_pixels=side, max_pixels=side)
    processor = ImageProcessor(image_processor=image_processor, tokenizer=tok, chat_template=CHAT_TEMPLATE)
    model = SpatialScore.build(base, processor, SpatialScoreConfig(backbone="(random Qwen2.5-VL-7B)"))
    return model.to(device).eval().requires_grad_(False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scoring_throughput")
    ap.add_argument("--scorer", choices=["spatialscore", "judge"], default="spatialscore")
    ap.add_argument("--checkpoint", default=None,
                    help="SpatialScore checkpoint or judge backbone (default: the toy one of --scorer)")
    ap.add_argument("--full-size", action="store_true", help="random Qwen2.5-VL-7B architecture (needs a GPU)")
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--n", type=int, default=128, help="images scored per timed pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--resolution", type=int, default=64, help="image side in pixels")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from spatial.reward.model import SpatialScore, pick_device
    from spatial.world import example_seed, render, sample_example

    from spatial.scorers import ZeroShotJudge

    device = pick_device(args.device)
    if args.full_size and args.scorer == "judge":
        ap.error("--full-size builds SpatialScore only")
    checkpoint = args.checkpoint or {"spatialscore": "assets/toy/spatialscore", "judge": "assets/toy/vlm"}[args.scorer]
    if args.full_size:
        model = full_size_model(args.resolution, device)
    elif args.scorer == "judge":
        judge = ZeroShotJudge(checkpoint, device=device)
    else:
        model = SpatialScore.from_pretrained(checkpoint, device=device)

    def score(prompts, images, batch_size):
        if args.scorer == "judge":
            judge.batch_size = batch_size
            return judge.score(prompts, images)
        return model.score(prompts, images, batch_size=batch_size)

    examples = [sample_example(example_seed(4242, i)) for i in range(args.n)]
    prompts = [e.prompt for e in examples]
    images = [render(e.scene, args.resolution) for e in examples]
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()  # each row's peak is its own batch size's
        score(prompts[: max(bs, 2)], images[: max(bs, 2)], bs)  # warm-up
        rates = []
        for _ in range(args.repeats):
            sync(device)
            t = time.perf_counter()
            score(prompts, images, bs)
            sync(device)
            rates.append(args.n / (time.perf_counter() - t))
        row = {"batch_size": bs, "images_per_s": round(statistics.median(rates), 2),
               "runs": [round(r, 2) for r in rates]}  # fmt: skip
        if device.type == "cuda":
            row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["images_per_s"]
    summary = {
        "scorer": args.scorer,
        "model": "Qwen2.5-VL-7B architecture, random bf16 weights" if args.full_size else checkpoint,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "resolution": args.resolution, "n": args.n, "repeats": args.repeats,
        "results": rows, "speedup_vs_first": {r["batch_size"]: round(r["images_per_s"] / base, 2) for r in rows},
    }  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
