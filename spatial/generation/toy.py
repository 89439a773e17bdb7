"""The toy FLUX: every component of FLUX.1-dev's architecture at a size that trains on 2 CPU cores.

Built from `ToyFluxConfig`, trained by `python -m training.pretrain_toy`, saved with
`FluxPipeline.save_pretrained`, and loaded like any Hub model with `FluxPipeline.from_pretrained`.

Tokenizers are word-level over the closed SpatialWorld vocabulary, built offline with `tokenizers`
and saved as generic fast tokenizers (model_index.json records `TokenizersBackend`): transformers 5's
`CLIPTokenizer` rebuilds a BPE model from the vocabulary and maps every word to <unk>, and
`T5TokenizerFast` cannot load a word-level model at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AddedToken, CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from spatial.world import words
from spatial.world.vocab import COLOURS, SHAPES

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]
PUNCTUATION = [",", ";", "."]
CLIP_MAX_LENGTH = 77
# Words that carry nothing in SpatialWorld (articles, frames, verbs, connectors, the "of"/"to"/"side"/"than"
# around relations): the normaliser drops them, so "a red circle to the left of the blue square" reads
# "red circle left blue square" and prompts fit in 18 tokens instead of 41, which makes the toy's text
# stream (and so training) about 1.5x cheaper. Every word stays in the vocabulary.
FILLER = ("a", "an", "the", "picture", "image", "scene", "with", "of", "is", "sits", "to", "on", "side", "than",
          "and", "while")  # fmt: skip


@dataclass
class ToyFluxConfig:
    """Sizes of the toy FLUX. The defaults are the shipped checkpoint's."""

    image_size: int = 32
    """Training resolution in pixels (SpatialWorld's oracle reads 32 px renders without loss)."""
    vae_channels: tuple[int, ...] = (32, 64)
    """AutoencoderKL block widths; n blocks downsample 2^(n-1) times (2 blocks: 2x). At 2x a 32 px image is
    8 x 8 = 64 transformer tokens, about 2 x 2 per object, enough to draw a shape; at 4x (16 tokens) one
    token had to hold a whole object and the first toy drew blobs the oracle could not name."""
    latent_channels: int = 8
    """Latent channels (FLUX's VAE has 16; 8 at 2x keeps flat-colour renders almost lossless and leaves
    the small transformer less to predict per token)."""
    double_layers: int = 2
    """Double-stream (separate text and image weights, joint attention) blocks."""
    single_layers: int = 3
    """Single-stream blocks."""
    heads: int = 4
    """Attention heads."""
    head_dim: int = 32
    """Attention head width (= the sum of the RoPE axes dims)."""
    text_dim: int = 128
    """T5 width (the transformer's joint_attention_dim)."""
    text_layers: int = 2
    """T5 encoder layers."""
    pooled_dim: int = 64
    """CLIP width (the transformer's pooled_projection_dim)."""
    t5_max_length: int = 16
    """T5 tokens per prompt (SpatialWorld prompts need at most 12 with object tokens, 18 without, once
    filler words are dropped)."""
    t5_position_heads: int = 2
    """T5 heads (per layer) that start as pure word-order heads, half looking at the previous word and half
    at the next (`position_heads`), of its 4; 0: none. A trained toy T5 attends by content so sharply (T5 does not
    scale its logits) that its learned position bias never matters, and "A left of B" encodes like
    "B left of A"."""
    object_tokens: bool = True
    """One token per "<colour> <shape>" (30 added tokens, as the toy VLM has), so the text encoder need not
    learn to bind a shape word to the colour word before it: 37% vs 27% of named objects found after
    1,000 steps on the grid-aligned renders."""


# A few hundred thousand parameters: the same code paths in milliseconds (tests, CI, script checks).
TINY = ToyFluxConfig(vae_channels=(8, 16, 16), latent_channels=4, double_layers=1, single_layers=1, heads=2,
                     head_dim=16, text_dim=32, text_layers=1, pooled_dim=32)


def build_tokenizer(max_length: int, object_tokens: bool = False) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over SpatialWorld's words: lower-cased, filler dropped, punctuation split off,
    `</s>` appended, and optionally one token per object name. Words outside SpatialWorld become <unk>."""
    vocab = {tok: i for i, tok in enumerate([*SPECIAL, *PUNCTUATION, *words()])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    filler = Regex(r"\b(" + "|".join(FILLER) + r")\b")
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(filler, " ")])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=max_length)  # fmt: skip
    if object_tokens:
        fast.add_tokens([AddedToken(f"{c} {s}", single_word=True, normalized=True) for c in COLOURS for s in SHAPES])
    return fast


def build_toy_pipeline(cfg: ToyFluxConfig = ToyFluxConfig(), seed: int = 0, zero_init: bool = False) -> FluxPipeline:
    """A randomly initialised toy FLUX, every component in eval mode. `zero_init` starts the transformer
    adaLN-Zero style for training (its output is then 0 until trained, useless for anything else)."""
    torch.manual_seed(seed)
    clip_tok = build_tokenizer(CLIP_MAX_LENGTH, cfg.object_tokens)
    t5_tok = build_tokenizer(cfg.t5_max_length, cfg.object_tokens)
    n = len(clip_tok)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=n, hidden_size=cfg.pooled_dim, intermediate_size=2 * cfg.pooled_dim,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=CLIP_MAX_LENGTH,
                                        projection_dim=cfg.pooled_dim, pad_token_id=0, bos_token_id=2,
                                        eos_token_id=3))  # fmt: skip
    t5 = T5EncoderModel(T5Config(vocab_size=n, d_model=cfg.text_dim, d_ff=2 * cfg.text_dim, num_layers=cfg.text_layers,
                                 num_heads=4, d_kv=cfg.text_dim // 4, dropout_rate=0.0, pad_token_id=0,
                                 eos_token_id=3))  # fmt: skip
    a = max(2, (3 * cfg.head_dim // 8) // 2 * 2)  # RoPE axes (head_dim - 2a, a, a), each even, like (16, 56, 56)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * cfg.latent_channels, num_layers=cfg.double_layers,
        num_single_layers=cfg.single_layers, attention_head_dim=cfg.head_dim, num_attention_heads=cfg.heads,
        joint_attention_dim=cfg.text_dim, pooled_projection_dim=cfg.pooled_dim, guidance_embeds=True,
        axes_dims_rope=(cfg.head_dim - 2 * a, a, a),
    )  # fmt: skip
    if zero_init:
        adaln_zero(transformer)
        position_heads(t5, cfg.t5_position_heads)
    if cfg.object_tokens:
        for encoder in (clip, t5):
            compose_object_embeddings(encoder.get_input_embeddings(), t5_tok)
    k = len(cfg.vae_channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * k,
                        up_block_types=("UpDecoderBlock2D",) * k, block_out_channels=cfg.vae_channels,
                        latent_channels=cfg.latent_channels, layers_per_block=1, norm_num_groups=8,
                        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.0, shift_factor=0.0,
                        sample_size=cfg.image_size)  # fmt: skip
    # FLUX.1-dev's scheduler settings (time shift growing with the image's token count).
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096, shift=3.0)  # fmt: skip
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5,
                        tokenizer_2=t5_tok, transformer=transformer)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return eval_all(pipe)


def adaln_zero(transformer: FluxTransformer2DModel) -> None:
    """DiT's adaLN-Zero start for a model trained from scratch: every block begins as the identity
    (modulation shift/scale/gate = 0) and the output projection at 0. diffusers' default init suits
    loading pretrained weights, not training; DiT reports adaLN-Zero clearly ahead of other inits."""
    with torch.no_grad():
        for name, module in transformer.named_modules():
            if name.endswith(("norm1.linear", "norm1_context.linear", "norm.linear", "norm_out.linear")) or name == "proj_out":
                module.weight.zero_()
                module.bias.zero_()


@torch.no_grad()
def position_heads(t5: T5EncoderModel, n: int, strength: float = 6.0) -> None:
    """Start n heads of every T5 layer attending by position alone: their query weights at 0 (no content
    term) and the shared relative-position bias peaked at the previous word (even heads) or the next
    (odd heads). Each token's output then carries its neighbours, so word order reaches the transformer."""
    if not n:
        return
    cfg = t5.config
    bias = t5.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight  # buckets x heads
    half = cfg.relative_attention_num_buckets // 2  # bidirectional: keys after the query use the upper half
    for h in range(n):
        for block in t5.encoder.block:
            block.layer[0].SelfAttention.q.weight[h * cfg.d_kv : (h + 1) * cfg.d_kv] = 0
        bias[:, h] = 0
        bias[1 if h % 2 == 0 else half + 1, h] = strength


@torch.no_grad()
def compose_object_embeddings(embedding: torch.nn.Embedding, tokenizer: PreTrainedTokenizerFast) -> None:
    """Start each "<colour> <shape>" token at the mean of its colour's and its shape's embeddings, so
    that all red objects begin alike (a colour is the first thing the image must agree on) and only
    then learn what sets them apart."""
    for colour in COLOURS:
        for shape in SHAPES:
            ids = tokenizer.convert_tokens_to_ids([f"{colour} {shape}", colour, shape])
            embedding.weight[ids[0]] = (embedding.weight[ids[1]] + embedding.weight[ids[2]]) / 2**0.5


def eval_all(pipe: FluxPipeline) -> FluxPipeline:
    """Every module in eval mode: dropout would otherwise make a pipeline built from configs random."""
    for name in ("vae", "text_encoder", "text_encoder_2", "transformer", "image_encoder"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipe
