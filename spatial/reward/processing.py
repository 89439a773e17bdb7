"""The Qwen2.5-VL processor without its video half, and the messages SpatialScore and the judge send.

transformers 5 builds `Qwen2_5_VLProcessor` with a video processor that imports torchvision, and
no torchvision wheel on PyPI imports beside the torch this project pins. Images are all we score,
so `ImageProcessor` keeps the Qwen2.5-VL processor's text/image behaviour (placeholder expansion,
`mm_token_type_ids` for M-RoPE) and drops the video part. `load_processor` reads the same files
from a real Qwen2.5-VL repo (preprocessor_config.json, tokenizer, chat template) or a toy folder,
always through the PIL image processor, so every machine takes one path.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.image_utils import SizeDict
from transformers.processing_utils import ProcessorMixin

REWARD_TOKEN = "<|reward|>"


class ImageProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` for images and text only (no video processor, so no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        # Skip Qwen2_5_VLProcessor.__init__: it insists on a video processor.
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def _read_chat_template(path: Path, tokenizer) -> str | None:
    for name in ("chat_template.jinja", "chat_template.json"):
        f = path / name
        if f.is_file():
            text = f.read_text()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return getattr(tokenizer, "chat_template", None)


def load_processor(name_or_path: str, max_pixels: int | None = None, **hub_kwargs) -> ImageProcessor:
    """The image+text processor of a Qwen2.5-VL folder or Hub repo (toy or real).

    `max_pixels` lowers the cap on the resized image area (e.g. 448 * 448 for speed on a Space).
    """
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(name_or_path, **hub_kwargs)
    if max_pixels is not None:  # only ever lowers the folder's own cap
        size = image_processor.size
        longest = min(size.longest_edge, int(max_pixels))
        image_processor.size = SizeDict(longest_edge=longest, shortest_edge=min(size.shortest_edge, longest))
    local = Path(name_or_path)
    if local.is_dir():
        template = _read_chat_template(local, tokenizer)
    else:
        from huggingface_hub import hf_hub_download

        template = None
        for name in ("chat_template.jinja", "chat_template.json"):
            try:
                f = Path(hf_hub_download(name_or_path, name, **hub_kwargs))
            except Exception:  # noqa: BLE001 - repos keep the template in one of several files
                continue
            template = _read_chat_template(f.parent, tokenizer)
            break
        template = template or getattr(tokenizer, "chat_template", None)
    if template is None:
        raise ValueError(f"{name_or_path} has no chat template; is it an instruct model?")
    return ImageProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def add_reward_token(processor: ImageProcessor) -> int:
    """Register the reward token as a special token (idempotent); return its id."""
    tok = processor.tokenizer
    if REWARD_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [REWARD_TOKEN]}, replace_extra_special_tokens=False)
    return tok.convert_tokens_to_ids(REWARD_TOKEN)


def user_turn(text: str, image_first: bool) -> list[dict]:
    """One user message holding an image and a text, in the chosen order."""
    parts = [{"type": "image"}, {"type": "text", "text": text}]
    return [{"role": "user", "content": parts if image_first else parts[::-1]}]


def reserved_token_in(tokenizer, prompt: str, extra: tuple[str, ...] = ()) -> str | None:
    """The first special token (chat markup such as <|im_end|>, or one of `extra`) written out in
    `prompt`, or None. Such a prompt cannot be scored: the tokenizer would read it as markup."""
    reserved = {*extra, *(t for t in tokenizer.all_special_tokens if len(t) > 1)}
    return next((t for t in sorted(reserved) if t in prompt), None)
