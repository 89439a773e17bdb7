"""SpatialScore: a Qwen2.5-VL backbone, a reward token, and a Gaussian head.

    <user> instruction(prompt) <image> <assistant> <|reward|>  ->  Qwen2.5-VL  ->  h[<|reward|>]
    h (last layer, at the reward token)  ->  MLP in fp32  ->  (mu, log sigma)

The backbone is always called with input_ids, pixel_values, image_grid_thw, attention_mask and
mm_token_type_ids, so Qwen2.5-VL computes its own 3-D M-RoPE positions (image tokens keep their
height/width positions). The reward token's embedding is a separate trained vector written into
the embedding output by a forward hook, which keeps that call unchanged. Scores are pooled by the
reward-token mask, so padding side and batch order cannot change them.

A checkpoint folder holds: adapter/ (peft LoRA), head.safetensors (head + reward embedding), the
processor files (tokenizer with the reward token, image processor, chat template) and
spatialscore_config.json (including the backbone to load the adapter onto).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration

from .config import SpatialScoreConfig
from .data import load_image
from .losses import prob_prefer, sigma_from_log
from .processing import REWARD_TOKEN, add_reward_token, load_processor, reserved_token_in, user_turn

CONFIG_NAME = "spatialscore_config.json"
HEAD_NAME = "head.safetensors"
ADAPTER_DIR = "adapter"


class ScoringInputError(ValueError):
    """Prompts and images that cannot be scored (mismatched lengths, empty prompt); one line."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU, unless told otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
            "float32": torch.float32, "fp32": torch.float32}[dtype]  # fmt: skip


def resolve_backbone(stored: str, checkpoint: Path | None) -> str:
    """A backbone path saved relative to its checkpoint, an existing folder, or a Hub id. A path that
    is not there (a checkpoint copied without the backbone beside it) is named, not sent to the Hub."""
    if checkpoint is not None and not os.path.isabs(stored) and (checkpoint / stored).is_dir():
        return str((checkpoint / stored).resolve())
    if Path(stored).is_dir() or not (stored.startswith((".", "/", "~")) or stored.count("/") != 1):
        return stored
    where = (checkpoint / stored).resolve() if checkpoint is not None and not os.path.isabs(stored) else Path(stored)
    raise FileNotFoundError(f"the SpatialScore checkpoint {checkpoint} needs its backbone {stored!r}, which is not at "
                            f"{where}: copy the backbone with the checkpoint, or set `backbone` in its {CONFIG_NAME} "
                            "to the backbone's folder or Hub id")  # fmt: skip


class GaussianHead(nn.Module):
    """h -> (mu, log sigma); runs in fp32 whatever the backbone's dtype."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, inner), nn.SiLU(), nn.Linear(inner, 2))
        nn.init.normal_(self.net[2].weight, std=0.01)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=h.device.type, enabled=False):  # fp32 even under bf16 autocast
            mu, log_sigma = self.net(h.float()).unbind(-1)
        return mu, log_sigma


class SpatialScore(nn.Module):
    def __init__(self, vlm: PeftModel, processor, config: SpatialScoreConfig):
        super().__init__()
        self.config = config
        self.processor = processor
        self.vlm = vlm
        self.reward_token_id = processor.tokenizer.convert_tokens_to_ids(REWARD_TOKEN)
        base = vlm.get_base_model()
        hidden = base.config.text_config.hidden_size
        emb = base.get_input_embeddings()
        # Start the reward token at the mean embedding: a neutral point in the backbone's input space.
        self.reward_embedding = nn.Parameter(emb.weight.detach().float().mean(0).clone())
        self.head = GaussianHead(hidden, config.head_hidden or hidden)
        self._hook = emb.register_forward_hook(self._inject_reward_embedding)

    # ---- construction -----------------------------------------------------------------------------

    @classmethod
    def from_backbone(cls, config: SpatialScoreConfig, device=None, dtype=None, hub_kwargs: dict | None = None):
        """A fresh SpatialScore (new LoRA, head and reward token) on a Qwen2.5-VL backbone."""
        config.validate()
        device = pick_device(device)
        hub_kwargs = hub_kwargs or {}
        processor = load_processor(config.backbone, max_pixels=config.max_pixels, **hub_kwargs)
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(config.backbone, dtype=pick_dtype(device, dtype), **hub_kwargs)
        return cls.build(base, processor, config).to(device)

    @classmethod
    def build(cls, base: Qwen2_5_VLForConditionalGeneration, processor, config: SpatialScoreConfig) -> "SpatialScore":
        """A fresh SpatialScore around an already loaded backbone (e.g. one built from a config)."""
        add_reward_token(processor)
        if len(processor.tokenizer) > base.get_input_embeddings().num_embeddings:
            base.resize_token_embeddings(len(processor.tokenizer))
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.lora_target(), bias="none")  # fmt: skip
        return cls(get_peft_model(base, lora), processor, config)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, dtype=None, trainable: bool = False,
                        hub_kwargs: dict | None = None) -> "SpatialScore":  # fmt: skip
        """Load a checkpoint folder written by `save_pretrained`."""
        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is not a SpatialScore checkpoint (no {CONFIG_NAME})")
        device = pick_device(device)
        hub_kwargs = hub_kwargs or {}
        config = SpatialScoreConfig.load(path / CONFIG_NAME)
        backbone = resolve_backbone(config.backbone, path)
        processor = load_processor(str(path))
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(backbone, dtype=pick_dtype(device, dtype), **hub_kwargs)
        if len(processor.tokenizer) > base.get_input_embeddings().num_embeddings:
            base.resize_token_embeddings(len(processor.tokenizer))
        vlm = PeftModel.from_pretrained(base, str(path / ADAPTER_DIR), is_trainable=trainable)
        config.backbone = backbone
        model = cls(vlm, processor, config)
        model.load_head(path)
        model.to(device)
        if not trainable:
            model.eval().requires_grad_(False)
        return model

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.vlm.save_pretrained(str(path / ADAPTER_DIR))
        tensors = {f"head.{k}": v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()}
        tensors["reward_embedding"] = self.reward_embedding.detach().float().cpu().contiguous()
        save_file(tensors, str(path / HEAD_NAME))
        self.processor.save_pretrained(str(path))
        cfg = SpatialScoreConfig(**vars(self.config))
        if Path(cfg.backbone).is_dir():  # keep the checkpoint movable together with its backbone
            cfg.backbone = os.path.relpath(Path(cfg.backbone).resolve(), path.resolve())
        cfg.save(path / CONFIG_NAME)
        return path

    def load_head(self, path: Path) -> None:
        tensors = load_file(str(Path(path) / HEAD_NAME))
        self.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        with torch.no_grad():
            self.reward_embedding.copy_(tensors["reward_embedding"])

    # ---- forward ----------------------------------------------------------------------------------

    def _inject_reward_embedding(self, module, args, output):
        mask = (args[0] == self.reward_token_id).unsqueeze(-1)
        return torch.where(mask, self.reward_embedding.to(output.dtype), output)

    @property
    def device(self) -> torch.device:
        return self.reward_embedding.device

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def texts(self, prompts: list[str]) -> list[str]:
        chat = self.processor.apply_chat_template
        return [chat(user_turn(self.config.instruction.format(prompt=p), self.config.image_first),
                     add_generation_prompt=True, tokenize=False) + REWARD_TOKEN for p in prompts]  # fmt: skip

    def reserved_token_in(self, prompt: str) -> str | None:
        """The first special token written out in `prompt` (such a prompt cannot be scored), or None."""
        return reserved_token_in(self.processor.tokenizer, prompt, (REWARD_TOKEN,))

    def encode(self, prompts: list[str], images: list, padding_side: str = "right") -> dict:
        """Processor outputs for a batch (on the model's device)."""
        if len(prompts) != len(images):
            raise ScoringInputError(f"got {len(prompts)} prompts but {len(images)} images")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ScoringInputError(f"prompt {i} is empty")
            # A special token typed into a prompt would be read as markup (a second reward position,
            # an image placeholder with no image), so it is refused rather than scored wrongly.
            found = self.reserved_token_in(p)
            if found:
                raise ScoringInputError(f"prompt {i} contains the reserved token {found!r}")
        pil = [load_image(im, f"image {i}") for i, im in enumerate(images)]
        batch = self.processor(text=self.texts(prompts), images=pil, return_tensors="pt", padding=True,
                               padding_side=padding_side)  # fmt: skip
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, **_):
        """(mu, log_sigma), one per row, each of shape (batch,)."""
        out = self.vlm.get_base_model().model(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
            image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids, use_cache=False,
        )  # fmt: skip
        mask = input_ids == self.reward_token_id
        if not torch.equal(mask.sum(1), torch.ones_like(mask.sum(1))):
            raise ValueError("every row must contain exactly one reward token")
        return self.head(out.last_hidden_state[mask])

    @torch.no_grad()
    def score(self, prompts: list[str], images: list, batch_size: int = 32):
        """Gaussian scores (mu, sigma) as numpy arrays, in input order; images are PIL or paths."""
        from spatial.scorers import ScoreResult

        prompts, images = list(prompts), list(images)
        was_training = self.training
        self.eval()
        mus, sigmas = [], []
        try:
            for k in range(0, len(prompts), batch_size):
                mu, log_sigma = self(**self.encode(prompts[k : k + batch_size], images[k : k + batch_size]))
                mus.append(mu.float().cpu())
                sigmas.append(sigma_from_log(log_sigma).float().cpu())
        finally:
            self.train(was_training)
        if not mus:
            return ScoreResult(np.zeros(0, np.float32), np.zeros(0, np.float32))
        return ScoreResult(torch.cat(mus).numpy(), torch.cat(sigmas).numpy())

    def prob_prefer(self, prompt: str, a, b) -> float:
        """P(a preferred over b for prompt) from the two Gaussians, under the likelihood this model was
        trained with (`config.preference`)."""
        r = self.score([prompt, prompt], [a, b])
        return float(prob_prefer(r.mu[0], r.sigma[0], r.mu[1], r.sigma[1], self.config.preference))
