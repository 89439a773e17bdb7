"""A FluxPipeline built from tiny configs with random weights, for tests that need the real
diffusers classes but not a trained model (a few hundred thousand parameters, CPU-fast)."""

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from spatial.world import words


def _tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>", ",", ";", ".", *words()])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=max_length)  # fmt: skip


def tiny_flux_pipeline(seed: int = 0) -> FluxPipeline:
    torch.manual_seed(seed)
    tok = _tokenizer(77)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
                                        pad_token_id=0, bos_token_id=2, eos_token_id=3))  # fmt: skip
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16,
                                 pad_token_id=0, eos_token_id=3))  # fmt: skip
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6))  # fmt: skip
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0, scaling_factor=1.0)  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096, shift=3.0)  # fmt: skip
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=tok, text_encoder_2=t5,
                        tokenizer_2=_tokenizer(32), transformer=transformer)  # fmt: skip
    for m in (vae, clip, t5, transformer):
        m.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
