"""Train the toy FLUX from scratch on SpatialWorld: the autoencoder, then the transformer (with its
text encoders) under the rectified-flow objective FLUX uses.

Stage 1 fits the AutoencoderKL to renders, then sets its `scaling_factor`/`shift_factor` so latents
have zero mean and unit variance (FLUX.1-dev ships 0.3611 / 0.1159 for the same purpose).
Stage 2 trains on (prompt, latent) pairs: x_s = (1 - s) x0 + s eps, target v = eps - x0, with s
drawn logit-normal and shifted exactly as the sampler shifts its schedule at this resolution.
An exponential moving average of the weights is what gets saved.

Runs on one process or, under `accelerate launch`, on several: every process draws the same global
batch (indices, noise levels and noise from one seeded generator) and trains on its slice, and the
gradients are averaged, so N processes take the same steps as one up to float rounding.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor, _get_qkv_projections
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from tqdm.auto import tqdm

from spatial.runlog import stop_on_sigterm, trim_jsonl
from spatial.world import WorldConfig, check, example_seed, render, sample_example, sample_prompts

from . import sampling
from .config import PretrainConfig
from .toy import CLIP_MAX_LENGTH, ToyFluxConfig, build_toy_pipeline, eval_all

PROBE_SEED = 8001  # probe prompts; evaluation uses 9001, training data `data_seed`


def render_dataset(n: int, data_seed: int, size: int, world: WorldConfig) -> tuple[torch.Tensor, list[str], list[dict]]:
    """n renders (uint8, N x 3 x size x size), their prompts, and where each named object sits
    ("<colour> <shape>" -> its box, x0 y0 x1 y1 in [0, 1])."""
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    prompts, boxes = [], []
    for i in tqdm(range(n), desc="render", mininterval=5):
        ex = sample_example(example_seed(data_seed, i), world)
        images[i] = np.asarray(render(ex.scene, size))
        prompts.append(ex.prompt)
        boxes.append({o.name: o.box for o in ex.scene.objects if o.named})
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), prompts, boxes


def layout_targets(t5_ids: torch.Tensor, boxes: list[dict], tokenizer, grid: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every T5 position holding an object token: that object's centre in the render, as offsets
    from the image centre in [-1, 1] (N x L x 2), and which of the grid x grid image tokens (row-major,
    as FluxPipeline packs latents) have their centre inside its box (N x L x grid^2); and a mask of the
    object positions (N x L)."""
    centre = torch.zeros(*t5_ids.shape, 2)
    cover = torch.zeros(*t5_ids.shape, grid * grid)
    mask = torch.zeros(t5_ids.shape, dtype=torch.bool)
    cells = (torch.arange(grid) + 0.5) / grid
    cy, cx = torch.meshgrid(cells, cells, indexing="ij")
    for n, row in enumerate(boxes):
        ids = dict(zip(tokenizer.convert_tokens_to_ids(list(row)), row.values()))
        for l, tok in enumerate(t5_ids[n].tolist()):
            if tok in ids:
                x0, y0, x1, y1 = ids[tok]
                centre[n, l] = torch.tensor([x0 + x1 - 1, y0 + y1 - 1])  # 2 * centre - 1
                cover[n, l] = ((cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)).flatten().float()
                mask[n, l] = True
    return centre, cover, mask


class TextAttentionRecorder(FluxAttnProcessor):
    """FLUX's joint attention, unchanged, that also keeps (while `active`) how much each image token
    attends to each text token: B x heads x image tokens x text tokens, softmax over every key, with
    the gradient. Training-only, for `PretrainConfig.attention_weight`; processors are not saved."""

    def __init__(self):
        super().__init__()
        self.active, self.maps = False, None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if self.active and encoder_hidden_states is not None:
            q, k, _, eq, ek, _ = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
            split = lambda t: t.unflatten(-1, (-1, attn.head_dim))  # noqa: E731
            query = torch.cat([attn.norm_added_q(split(eq)), attn.norm_q(split(q))], dim=1)
            key = torch.cat([attn.norm_added_k(split(ek)), attn.norm_k(split(k))], dim=1)
            if image_rotary_emb is not None:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
            text = encoder_hidden_states.shape[1]
            logits = torch.einsum("bnhd,bmhd->bhnm", query[:, text:], key) / attn.head_dim**0.5
            self.maps = logits.softmax(-1)[..., :text]
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)


def attention_loss(maps: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """The idea of TokenCompose's token loss (Wang et al., CVPR 2024; github.com/mlpc-ucsd/TokenCompose)
    on FLUX's joint attention: of the attention an object token receives from image tokens (maps:
    B x N x L, averaged over heads), the share that falls outside its object, per object token
    (cover: B x L x N)."""
    received = maps.transpose(1, 2)
    inside = (received * cover).sum(-1) / received.sum(-1).clamp_min(1e-8)
    return 1 - inside


def training_world(c: PretrainConfig) -> WorldConfig:
    """The SpatialWorld scenes the toy FLUX learns from (evaluation prompts come from the default world)."""
    return WorldConfig(min_size=c.min_size, max_size=c.max_size, snap=c.snap,
                       border=0.0 if c.snap else WorldConfig().border,
                       background=(c.background,) * 3 if c.background else None,
                       distractor_prob=WorldConfig().distractor_prob if c.distractors else 0.0,
                       canonical=c.canonical, mirror_prob=c.mirror_prob,
                       rare_relations=c.rare_relation_words(), rare_relation_prob=c.rare_relation_prob)  # fmt: skip


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float() / 127.5 - 1.0


def cosine(step: int, total: int, peak: float, warmup: int = 0, floor: float = 0.1) -> float:
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return peak * ramp * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


class ToyPretrainer:
    """Stage 1 (autoencoder) then stage 2 (transformer + text encoders); resumable at any checkpoint."""

    def __init__(self, config: PretrainConfig, model: ToyFluxConfig | None = None, accelerator=None):
        from accelerate import Accelerator

        config.validate()
        self.config, self.model_config = config, model or config.toy_config()
        torch.set_num_threads(config.threads)
        # cpu=True makes `accelerate launch` without GPUs join a gloo process group.
        self.acc = accelerator or Accelerator(cpu=config.device == "cpu")
        for name in ("batch", "vae_batch"):
            if getattr(config, name) % self.acc.num_processes:
                raise ValueError(f"{name} {getattr(config, name)} does not divide by {self.acc.num_processes} processes")
        self.main = self.acc.is_main_process
        self.out = Path(config.out)
        self.ckpt = self.out / "checkpoints"
        self.device = self.acc.device
        self.pipe = build_toy_pipeline(self.model_config, seed=config.seed, zero_init=True).to(self.device)
        self.gen = torch.Generator().manual_seed(config.seed)
        self._stop = False
        self.log_path = self.out / "pretrain_log.jsonl"

    def log(self, row: dict) -> None:
        if self.main:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def _mine(self, x: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global batch."""
        n = len(x) // self.acc.num_processes
        return x[self.acc.process_index * n : (self.acc.process_index + 1) * n]

    def _sync(self, params: list[torch.nn.Parameter], loss: torch.Tensor) -> float:
        """Average gradients (and the loss) over processes in one all-reduce; the stop flag rides along,
        so a SIGTERM seen by any process stops all of them at the same step. Returns the mean loss."""
        if self.acc.num_processes == 1:
            return loss.item()
        flat = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                          for p in params] + [loss.detach().reshape(1), torch.tensor([float(self._stop)], device=loss.device)])  # fmt: skip
        flat = self.acc.reduce(flat, reduction="mean")
        i = 0
        for p in params:
            if p.grad is not None:
                p.grad.copy_(flat[i : i + p.numel()].view_as(p))
            i += p.numel()
        self._stop = bool(flat[-1] > 0)
        return flat[-2].item()

    # ---- stage 1: the autoencoder ----------------------------------------------------------------

    def train_vae(self, images: torch.Tensor) -> None:
        c, vae = self.config, self.pipe.vae
        opt = torch.optim.AdamW(vae.parameters(), lr=c.vae_lr, weight_decay=0.0)
        start = self._restore("vae", [vae], opt)
        if start >= c.vae_steps:
            return
        vae.train()
        bar = tqdm(range(start, c.vae_steps), initial=start, total=c.vae_steps, desc="stage 1: autoencoder",
                   disable=not self.main)  # fmt: skip
        params = list(vae.parameters())
        for step in bar:
            idx = torch.randint(len(images), (c.vae_batch,), generator=self.gen)
            x = to_unit(images[self._mine(idx)]).to(self.device)
            post = vae.encode(x).latent_dist
            noise = torch.randn((c.vae_batch, *post.mean.shape[1:]), generator=self.gen)  # the global batch's
            z = post.mean + post.std * self._mine(noise).to(self.device)
            rec = vae.decode(z).sample
            mse = F.mse_loss(rec, x)
            kl = post.kl().mean() / z[0].numel()
            loss = mse + 0.3 * F.l1_loss(rec, x) + 1e-4 * kl  # L1 keeps the flat colours' edges sharp
            for g in opt.param_groups:
                g["lr"] = cosine(step, c.vae_steps, c.vae_lr, warmup=50)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            mean_mse = self._sync(params, mse)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            bar.set_postfix(mse=f"{mean_mse:.4f}")
            if (step + 1) % c.log_every == 0:
                self.log({"stage": "vae", "step": step + 1, "mse": mean_mse, "kl": kl.item()})
            if (step + 1) % c.checkpoint_every == 0 or step + 1 == c.vae_steps or self._stop:
                self._save("vae", [vae], opt, step + 1)
            if self._stop:
                raise KeyboardInterrupt("stopped on SIGTERM (checkpoint saved)")
        vae.eval()

    def load_weights(self, folder: str, parts: tuple[str, ...] = ("vae", "transformer", "text_encoder", "text_encoder_2")) -> None:
        """Start from a saved toy pipeline's weights for `parts` (with the autoencoder comes its latent
        scaling). The architecture must be this run's (`model`), or loading says what differs."""
        from diffusers import FluxTransformer2DModel
        from transformers import CLIPTextModel, T5EncoderModel

        classes = {"vae": AutoencoderKL, "transformer": FluxTransformer2DModel, "text_encoder": CLIPTextModel,
                   "text_encoder_2": T5EncoderModel}  # fmt: skip
        for name in parts:
            saved = classes[name].from_pretrained(Path(folder) / name)
            try:
                getattr(self.pipe, name).load_state_dict(saved.state_dict())
            except RuntimeError as e:
                raise ValueError(f"{folder}: its {name} is not this run's architecture ({str(e).splitlines()[0]})") from None
            if name == "vae":
                self.pipe.vae.register_to_config(shift_factor=saved.config.shift_factor, scaling_factor=saved.config.scaling_factor)

    @torch.no_grad()
    def encode_all(self, images: torch.Tensor, fit_scaling: bool = True) -> torch.Tensor:
        """Latent means of every render, scaled; with `fit_scaling` the VAE's scaling/shift are first
        set from their statistics (otherwise the ones it has are kept)."""
        vae = self.pipe.vae.eval()
        lat = torch.cat([vae.encode(to_unit(images[i : i + 512]).to(self.device)).latent_dist.mean.cpu()
                         for i in range(0, len(images), 512)])  # fmt: skip
        if fit_scaling:
            vae.register_to_config(shift_factor=lat.mean().item(), scaling_factor=1.0 / lat.std().item())
        return (lat - vae.config.shift_factor) * vae.config.scaling_factor

    # ---- stage 2: the transformer ------------------------------------------------------------------

    def sample_sigmas(self, n: int, tokens: int) -> torch.Tensor:
        """Logit-normal s, time-shifted by `config.sigma_shift` or, when that is 0, exactly as the
        sampler shifts its schedule for this many image tokens."""
        shift = self.config.sigma_shift
        if not shift:
            cfg = self.pipe.scheduler.config
            mu = calculate_shift(tokens, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift)
            shift = math.exp(mu)
        s = torch.sigmoid(torch.randn(n, generator=self.gen))
        return shift * s / (1 + (shift - 1) * s)

    def _modules(self) -> list[torch.nn.Module]:
        """What the pipeline saves (EMA, probes and `_use` work on these; the layout head rides along
        in the optimiser and the resumable checkpoint only)."""
        return [self.pipe.transformer, self.pipe.text_encoder, self.pipe.text_encoder_2]

    def train_transformer(self, latents: torch.Tensor, prompts: list[str], boxes: list[dict] | None = None) -> None:
        c, pipe = self.config, self.pipe
        clip_ids, t5_ids = self._tokenize(prompts)
        _, ch, h, w = latents.shape
        # Training-only extras (neither is saved with the pipeline): a readout of layout from the T5
        # output, and attention maps of the double-stream blocks; see PretrainConfig.layout_weight and
        # attention_weight for why the prompt's word order needs them.
        layout_head = torch.nn.Linear(self.model_config.text_dim, 2).to(self.device) if c.layout_weight else None
        recorders = []
        if c.layout_weight or c.attention_weight:
            if not self.model_config.object_tokens or boxes is None:
                raise ValueError("layout_weight and attention_weight need object tokens and the renders' boxes")
            layout_centre, layout_cover, layout_mask = layout_targets(t5_ids, boxes, pipe.tokenizer_2, h // 2)
        modules = self._modules() + ([layout_head] if layout_head is not None else [])
        params = [p for m in modules for p in m.parameters()]
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=0.01, betas=(0.9, 0.99))
        ema = [copy.deepcopy(m).requires_grad_(False) for m in modules]
        start = self._restore("transformer", modules, opt, ema)
        if start >= c.steps:
            self._use(ema)
            return
        for m in modules:
            m.train()
        if c.attention_weight:  # installed only for the steps left; restored after the loop
            for block in pipe.transformer.transformer_blocks:
                block.attn.set_processor(TextAttentionRecorder())
                recorders.append(block.attn.processor)
        tokens = (h // 2) * (w // 2)
        img_ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, torch.float32)
        text_ids = torch.zeros(t5_ids.shape[1], 3, device=self.device)
        bar = tqdm(range(start, c.steps), initial=start, total=c.steps, desc="stage 2: transformer",
                   disable=not self.main)  # fmt: skip
        local = c.batch // self.acc.num_processes
        for step in bar:
            # The global batch's draws, in the same order whatever the process count; this process's slice.
            draws = torch.randint(len(latents), (c.batch,), generator=self.gen)
            idx = self._mine(draws)
            s = self._mine(self.sample_sigmas(c.batch, tokens)).to(self.device)
            eps = self._mine(torch.randn((c.batch, tokens, 4 * ch), generator=self.gen)).to(self.device)
            guidance = self._mine(1.0 + 4.0 * torch.rand(c.batch, generator=self.gen)).to(self.device)
            x0 = pipe._pack_latents(latents[idx], local, ch, h, w).to(self.device)
            pooled = pipe.text_encoder(clip_ids[idx].to(self.device)).pooler_output
            embeds = pipe.text_encoder_2(t5_ids[idx].to(self.device))[0]
            xs = (1 - s[:, None, None]) * x0 + s[:, None, None] * eps
            for r in recorders:
                r.active = True
            pred = pipe.transformer(hidden_states=xs, timestep=s, guidance=guidance, pooled_projections=pooled,
                                    encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=img_ids,
                                    return_dict=False)[0]  # fmt: skip
            loss = flow_loss = F.mse_loss(pred, eps - x0)
            extras = {}
            if c.layout_weight or c.attention_weight:
                where = layout_mask[idx].to(self.device)
                # Means over the global batch's object tokens (each process's sum over that count,
                # times the process count, so the averaged gradient is the one-process gradient).
                share = self.acc.num_processes / max(1, int(layout_mask[draws].sum()))
            if layout_head is not None:
                err = (layout_head(embeds)[where] - layout_centre[idx].to(self.device)[where]) ** 2
                extras["layout_loss"] = err.mean(-1).sum() * share
                loss = loss + c.layout_weight * extras["layout_loss"]
            if recorders:
                maps = torch.stack([r.maps.mean(1) for r in recorders]).mean(0)
                extras["attention_loss"] = attention_loss(maps, layout_cover[idx].to(self.device))[where].sum() * share
                loss = loss + c.attention_weight * extras["attention_loss"]
                for r in recorders:
                    r.active, r.maps = False, None
            lr = cosine(step, c.steps, c.lr, c.warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            mean_loss = self._sync(params, flow_loss)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            self._ema_update(ema, modules, step)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            if (step + 1) % c.log_every == 0:
                # auxiliary losses: this process's part scaled as a global mean (exact on one process); log only
                self.log({"stage": "transformer", "step": step + 1, "loss": mean_loss, "lr": lr,
                          **{k: v.item() for k, v in extras.items()}})  # fmt: skip
            if c.probe_every and self.main and (step + 1) % c.probe_every == 0:
                self.log({"stage": "probe", "step": step + 1, **self.probe(ema)})
                for m in modules:
                    m.train()
            if (step + 1) % c.checkpoint_every == 0 or step + 1 == c.steps or self._stop:
                self._save("transformer", modules, opt, step + 1, ema)
            if self._stop and step + 1 < c.steps:  # a stop during the last step still writes the model
                raise KeyboardInterrupt("stopped on SIGTERM (checkpoint saved)")
        for block in pipe.transformer.transformer_blocks if recorders else ():
            block.attn.set_processor(FluxAttnProcessor())
        self._use(ema)

    def _tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids exactly as FluxPipeline.encode_prompt makes them (CLIP: 77, T5: the tokenizer's max)."""
        pipe = self.pipe
        clip = pipe.tokenizer(prompts, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True,
                              return_tensors="pt").input_ids  # fmt: skip
        t5 = pipe.tokenizer_2(prompts, padding="max_length", max_length=sampling.sequence_length(pipe),
                              truncation=True, return_tensors="pt").input_ids  # fmt: skip
        return clip, t5

    @torch.no_grad()
    def _ema_update(self, ema, modules, step: int) -> None:
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))
        for e, m in zip(ema, modules):
            for pe, pm in zip(e.parameters(), m.parameters()):
                pe.lerp_(pm, 1 - decay)

    def _use(self, ema) -> None:
        """Load the averaged weights into the pipeline (raw weights when ema_decay is 0)."""
        if self.config.ema_decay > 0:
            for e, m in zip(ema, self._modules()):
                m.load_state_dict(e.state_dict())
        eval_all(self.pipe)

    @torch.no_grad()
    def probe(self, ema=None, steps: int = 20) -> dict:
        """The oracle's verdict on `probe_prompts` held-out prompts rendered with the averaged weights."""
        modules = self._modules()
        saved = [copy.deepcopy(m.state_dict()) for m in modules] if ema and self.config.ema_decay > 0 else None
        if saved:
            for e, m in zip(ema, modules):
                m.load_state_dict(e.state_dict())
        eval_all(self.pipe)
        prompts = sample_prompts(self.config.probe_prompts, PROBE_SEED)
        images = sampling.generate_images(self.pipe, prompts, list(range(len(prompts))), steps, 3.5,
                                          self.model_config.image_size)  # fmt: skip
        verdicts = [check(im, p) for im, p in zip(images, prompts)]
        if saved:
            for m, sd in zip(modules, saved):
                m.load_state_dict(sd)
        n, named = len(verdicts), [o["found"] for v in verdicts for o in v.objects]
        judged = [r["verdict"] == "true" for v in verdicts for r in v.relations if r["verdict"] != "unknown"]
        return {"object_accuracy": sum(all(o["found"] for o in v.objects) for v in verdicts) / n,
                "spatial_accuracy": sum(v.satisfied for v in verdicts) / n,
                "objects_found": sum(named) / len(named),
                # about 1/3 for a model that places objects without reading the relation words
                "relations_hold_given_found": sum(judged) / len(judged) if judged else None}  # fmt: skip

    @torch.no_grad()
    def probe_vae(self, world: WorldConfig = WorldConfig(), n: int = 100) -> dict:
        """How often the oracle still accepts a held-out render after an encode/decode round trip."""
        vae, size = self.pipe.vae.eval(), self.model_config.image_size
        examples = [sample_example(example_seed(PROBE_SEED, i), world) for i in range(n)]
        x = torch.stack([torch.from_numpy(np.asarray(render(e.scene, size)).copy()).permute(2, 0, 1) for e in examples])
        rec = vae.decode(vae.encode(to_unit(x).to(self.device)).latent_dist.mean).sample
        images = self.pipe.image_processor.postprocess(rec, output_type="pil")
        ok = [check(im, e.prompt).satisfied for im, e in zip(images, examples)]
        return {"round_trip_accuracy": sum(ok) / n, "mse": F.mse_loss(rec.clamp(-1, 1), to_unit(x).to(self.device)).item()}

    # ---- driver ------------------------------------------------------------------------------------

    def run(self) -> Path:
        c = self.config
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.ckpt.mkdir(exist_ok=True)
            if not c.resume:  # starting over: the old run's checkpoints and log go
                for p in self.ckpt.glob("*.pt"):
                    p.unlink()
                self.log_path.unlink(missing_ok=True)
        self.acc.wait_for_everyone()
        restore_sigterm = stop_on_sigterm(self)
        try:
            t0 = time.perf_counter()
            # Saved weights first: a folder that does not fit is refused before any rendering.
            if c.init_from:
                self.load_weights(c.init_from)
            elif c.vae_from:
                self.load_weights(c.vae_from, ("vae",))
            world = training_world(c)
            images, prompts, boxes = render_dataset(c.examples, c.data_seed, self.model_config.image_size, world)
            if not (c.init_from or c.vae_from):
                self.train_vae(images)
            t1 = time.perf_counter()
            latents = self.encode_all(images, fit_scaling=not c.init_from)
            if c.probe_every and self.main:
                self.log({"stage": "vae_probe", **self.probe_vae(world)})
            self.train_transformer(latents, prompts, boxes)
            t2 = time.perf_counter()
        finally:
            restore_sigterm()
        if not self.main:
            return self.out
        self.pipe.to("cpu").save_pretrained(self.out)
        final = self.probe() if c.probe_every else {}
        summary = {"config": asdict(c), "model": asdict(self.model_config), "final_probe": final,
                   "seconds_this_session": {"data_and_vae": round(t1 - t0, 1), "transformer": round(t2 - t1, 1),
                                            "total": round(t2 - t0, 1)},
                   "processes": self.acc.num_processes}  # fmt: skip
        (self.out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        for p in self.ckpt.glob("*.pt"):
            p.unlink()  # the finished pipeline replaces the resumable state
        self.ckpt.rmdir()
        return self.out

    def _save(self, name: str, modules, opt, step: int, ema=None) -> None:
        if not self.main:
            return
        state = {"models": [m.state_dict() for m in modules], "opt": opt.state_dict(), "step": step,
                 "ema": [e.state_dict() for e in ema] if ema else None, "gen": self.gen.get_state(),
                 "vae_config": dict(self.pipe.vae.config)}  # fmt: skip
        tmp = self.ckpt / f"{name}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.ckpt / f"{name}.pt")  # atomic: a kill mid-save keeps the previous checkpoint

    def _restore(self, name: str, modules, opt, ema=None) -> int:
        path = self.ckpt / f"{name}.pt"
        if not path.exists():
            return 0
        state = torch.load(path, weights_only=False, map_location=self.device)
        for m, sd in zip(modules, state["models"]):
            m.load_state_dict(sd)
        opt.load_state_dict(state["opt"])
        if ema and state["ema"]:
            for e, sd in zip(ema, state["ema"]):
                e.load_state_dict(sd)
        self.gen.set_state(state["gen"].cpu())  # a CPU generator; map_location moved its state to the device
        if self.main:  # the steps after the checkpoint are redone: drop what they logged
            stages = {"vae": ("vae",), "transformer": ("transformer", "probe")}[name]
            trim_jsonl(self.log_path, lambda r: r.get("stage") not in stages or r.get("step", 0) <= state["step"])
        return state["step"]
