"""The toy Qwen2.5-VL: the real `Qwen2_5_VLForConditionalGeneration` at a size that trains on 2 CPU cores.

Built from `ToyVLMConfig`, pretrained on SpatialWorld by `python -m training.pretrain_toy_vlm`
(see `spatial.reward.pretrain`), saved with `save_pretrained` beside its processor, and loaded by
the same `from_pretrained` / `load_processor` calls as Qwen/Qwen2.5-VL-7B-Instruct. The tokenizer is
word-level over the closed SpatialWorld vocabulary plus the words of the instructions below.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from spatial.world import COLOURS, SHAPES, words

from .processing import REWARD_TOKEN, ImageProcessor

# Qwen2.5-VL's own special tokens, so toy and real checkpoints read the same chat markup.
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>", REWARD_TOKEN]  # fmt: skip
PUNCTUATION = [",", ";", ".", ":", "?"]
# Words of the chat roles, the instructions (spatial.reward.config) and the pretraining tasks.
EXTRA_WORDS = ("system user assistant yes no or answer does this image follow spatial relations prompt "
               "where list objects top middle bottom center").split()  # fmt: skip
# A Qwen-style chat template without the default system turn (every token costs on 2 cores).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class ToyVLMConfig:
    """Sizes of the toy Qwen2.5-VL. The defaults are the shipped checkpoint's."""

    image_size: int = 64
    """Every image is resized to this square side before patching."""
    patch_size: int = 8
    """Vision patch side in pixels (Qwen2.5-VL: 14)."""
    merge_size: int = 2
    """Patches merged per side into one language-model token (Qwen2.5-VL: 2)."""
    vision_hidden: int = 96
    """Vision tower width."""
    vision_depth: int = 3
    """Vision tower blocks (all full attention at this size)."""
    vision_heads: int = 4
    """Vision attention heads."""
    vision_rope_theta: float = 100.0
    """Vision 2-D RoPE base; small so an 8x8 patch grid spans useful angles."""
    hidden: int = 128
    """Language model width."""
    layers: int = 4
    """Language model layers."""
    heads: int = 4
    """Language model attention heads (head width = hidden / heads)."""
    kv_heads: int = 4
    """Key/value heads (grouped-query attention when fewer than `heads`)."""
    intermediate: int = 384
    """Language model MLP width."""
    rope_theta: float = 10000.0
    """M-RoPE base. A text token P positions after the image sees every image token rotated by about
    P times each pair's frequency; only slow pairs keep that rotation steady across a prompt, and a
    question can find "the red circle" in the image only through them. At base 10^4 half the 16 pairs
    turn under 0.01 rad per token: "where is <object>" reached 0.75 held-out accuracy in 1,000 steps,
    against 0.20 at base 100 (0.26 after 3,000 steps). Qwen2.5-VL-7B uses 10^6 with 64 pairs."""
    mrope_section: tuple[int, int, int] = (2, 7, 7)
    """Rotary pairs given to (time, height, width); sums to head width / 2."""
    object_tokens: bool = True
    """One token per "<colour> <shape>" (30 added tokens), so naming an object is one token, not two
    (a real BPE vocabulary also has whole-word tokens for common phrases)."""
    init_std: float = 0.06
    """Std of the initial weights (transformers' 0.02 trains far slower at this width)."""


def build_tokenizer(object_tokens: bool = True) -> PreTrainedTokenizerFast:
    vocab_words = [*SPECIAL, "<unk>", *PUNCTUATION, *sorted(set(words()) | set(EXTRA_WORDS))]
    vocab = {w: i for i, w in enumerate(vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>", additional_special_tokens=SPECIAL[1:],
                                   model_max_length=512)  # fmt: skip
    if object_tokens:
        fast.add_tokens([AddedToken(name, single_word=True, normalized=True) for name in object_names()])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def object_names() -> list[str]:
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def build_processor(cfg: ToyVLMConfig = ToyVLMConfig()) -> ImageProcessor:
    side = cfg.image_size
    if side % (cfg.patch_size * cfg.merge_size):
        raise ValueError("image_size must be a multiple of patch_size * merge_size")
    image_processor = Qwen2VLImageProcessorPil(patch_size=cfg.patch_size, merge_size=cfg.merge_size,
                                               temporal_patch_size=2, min_pixels=side * side, max_pixels=side * side)  # fmt: skip
    return ImageProcessor(image_processor=image_processor, tokenizer=build_tokenizer(cfg.object_tokens),
                          chat_template=CHAT_TEMPLATE)  # fmt: skip


def build_toy_backbone(cfg: ToyVLMConfig = ToyVLMConfig(), seed: int = 0):
    """(randomly initialised toy Qwen2.5-VL, its processor)."""
    processor = build_processor(cfg)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    if sum(cfg.mrope_section) * 2 != cfg.hidden // cfg.heads:
        raise ValueError("mrope_section must sum to half the head width")
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
            max_position_embeddings=512, pad_token_id=ids["<|endoftext|>"], bos_token_id=None,
            eos_token_id=ids["<|im_end|>"], initializer_range=cfg.init_std,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta, "mrope_section": list(cfg.mrope_section)},
        ),
        vision_config=dict(
            depth=cfg.vision_depth, hidden_size=cfg.vision_hidden, intermediate_size=2 * cfg.vision_hidden,
            num_heads=cfg.vision_heads, patch_size=cfg.patch_size, spatial_merge_size=cfg.merge_size,
            temporal_patch_size=2, window_size=cfg.image_size, out_hidden_size=cfg.hidden,
            fullatt_block_indexes=list(range(cfg.vision_depth)), initializer_range=cfg.init_std,
            rope_parameters={"rope_type": "axial", "rope_theta": cfg.vision_rope_theta},
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False, initializer_range=cfg.init_std,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    return model, processor
