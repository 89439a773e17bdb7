"""The toy FLUX: real FLUX components from configs, SpatialWorld tokenizers, a resumable trainer,
and the shipped checkpoint in assets/toy/flux."""

import json
import math
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

from spatial.generation import GenerationConfig, GenerationService, build_tokenizer, build_toy_pipeline, sampling
from spatial.generation.config import TOY_BASE
from spatial.generation.pretrain import PretrainConfig, TextAttentionRecorder, ToyPretrainer, attention_loss, layout_targets
from spatial.generation.toy import TINY, ToyFluxConfig
from spatial.world import COLOURS, SHAPES, sample_prompts, words

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def test_every_spatialworld_word_has_its_own_token():
    tok = build_tokenizer(24)
    unk = tok.unk_token_id
    ids = [tok.convert_tokens_to_ids(w) for w in words()]
    assert unk not in ids and len(set(ids)) == len(ids)
    assert tok("A Red Circle").input_ids == tok("a red circle").input_ids  # case does not matter


def test_tokenizers_pad_and_never_truncate_a_spatialworld_prompt():
    clip, t5 = build_tokenizer(77, object_tokens=True), build_tokenizer(ToyFluxConfig().t5_max_length, object_tokens=True)
    assert clip.model_max_length == 77 and clip.pad_token == "<pad>" and t5.pad_token == "<pad>"
    longest = max(len(t5(p).input_ids) for p in sample_prompts(2000, seed=5))
    assert longest <= t5.model_max_length
    ids = t5("a red circle left of a blue square", padding="max_length", max_length=16).input_ids
    assert len(ids) == 16 and ids[-1] == t5.pad_token_id and t5.eos_token_id in ids


def test_filler_words_are_dropped_and_unknown_words_marked():
    tok = build_tokenizer(24)
    read = tok.convert_ids_to_tokens(tok("A picture of a red circle to the left of the blue cat").input_ids)
    assert read == ["red", "circle", "left", "blue", "<unk>", "</s>"]


def test_object_tokens_name_each_object_in_one_token_and_survive_a_save(tmp_path):
    tok = build_tokenizer(16, object_tokens=True)
    read = tok.convert_ids_to_tokens(tok("A red circle to the left of the blue square, and a red square above it").input_ids)
    assert read[:4] == ["red circle", "left", "blue square", ","] and "red square" in read
    ids = [tok.convert_tokens_to_ids(f"{c} {s}") for c in COLOURS for s in SHAPES]
    assert tok.unk_token_id not in ids and len(set(ids)) == 30
    longest = max(len(tok(p).input_ids) for p in sample_prompts(2000, seed=5))
    assert longest <= 16
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("a green diamond below a red circle").input_ids == tok(
        "a green diamond below a red circle").input_ids


def test_object_tokens_start_between_their_colour_and_their_shape():
    pipe = build_toy_pipeline(replace(TINY, object_tokens=True))
    tok = pipe.tokenizer_2
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        table = encoder.get_input_embeddings().weight
        obj, colour, shape = tok.convert_tokens_to_ids(["purple triangle", "purple", "triangle"])
        assert torch.allclose(table[obj], (table[colour] + table[shape]) / 2**0.5)


def test_position_heads_start_on_the_neighbouring_words_so_roles_differ():
    pipe = build_toy_pipeline(replace(TINY, text_layers=2, t5_position_heads=2), zero_init=True)
    t5, tok = pipe.text_encoder_2, pipe.tokenizer_2
    t5.config._attn_implementation = "eager"  # sdpa returns no attention weights
    ids = tok(["a red circle left of a blue square", "a blue square left of a red circle"], padding="max_length",
              max_length=16, return_tensors="pt").input_ids  # fmt: skip
    out = t5(ids, output_attentions=True)
    for layer in out.attentions:  # token 2 ("blue square"): head 0 looks back, head 1 forward, in every layer
        assert layer[0, :2, 2].argmax(-1).tolist() == [1, 3] and (layer[0, :2, 2].max(-1).values > 0.9).all()
    first, second = tok.convert_ids_to_tokens(ids[0]), tok.convert_ids_to_tokens(ids[1])
    h = out.last_hidden_state
    role = torch.nn.functional.cosine_similarity(h[0, first.index("red circle")], h[1, second.index("red circle")], dim=0)
    assert role < 0.95  # subject and object no longer encode alike
    plain = build_toy_pipeline(replace(TINY, t5_position_heads=0), zero_init=True).text_encoder_2
    assert plain.encoder.block[0].layer[0].SelfAttention.q.weight.abs().sum(-1).min() > 0
    loaded = build_toy_pipeline(TINY).text_encoder_2  # only a from-scratch start is changed
    assert loaded.encoder.block[0].layer[0].SelfAttention.q.weight.abs().sum(-1).min() > 0


def test_the_toy_is_built_from_flux_classes_in_eval_mode():
    pipe = build_toy_pipeline(TINY)
    assert isinstance(pipe.transformer, FluxTransformer2DModel) and pipe.transformer.config.guidance_embeds
    assert isinstance(pipe.vae, AutoencoderKL) and pipe.vae.config.latent_channels == TINY.latent_channels
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.text_encoder_2, T5EncoderModel)
    modules = [pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.transformer]
    assert not any(m.training for top in modules for m in top.modules())


def test_a_saved_toy_loads_with_flux_pipeline_from_pretrained_and_renders_the_same(tmp_path):
    pipe = build_toy_pipeline(TINY, seed=4)
    pipe.save_pretrained(tmp_path)
    loaded = FluxPipeline.from_pretrained(tmp_path)
    a = sampling.generate_images(pipe, ["a blue circle above a red square"], [0], 3, 3.5, 32)[0]
    b = sampling.generate_images(loaded, ["a blue circle above a red square"], [0], 3, 3.5, 32)[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert loaded.tokenizer.model_max_length == 77 and loaded.tokenizer_2.model_max_length == TINY.t5_max_length


def tiny_training(out: Path, **kw) -> PretrainConfig:
    defaults = dict(examples=64, vae_steps=4, vae_batch=4, steps=6, batch=4, warmup=2, checkpoint_every=2, probe_every=0,
                    log_every=1)
    return PretrainConfig(out=str(out), **{**defaults, **kw})


def test_pretraining_writes_a_pipeline_folder_and_resumes_to_the_same_weights(tmp_path):
    straight = ToyPretrainer(tiny_training(tmp_path / "straight"), TINY).run()

    stopped = ToyPretrainer(tiny_training(tmp_path / "resumed"), TINY)
    update = stopped._ema_update

    def stop_after_step_3(ema, modules, step):  # what SIGTERM does: finish the step, checkpoint, exit
        update(ema, modules, step)
        stopped._stop = step == 3

    stopped._ema_update = stop_after_step_3
    with pytest.raises(KeyboardInterrupt):
        stopped.run()
    assert (tmp_path / "resumed" / "checkpoints" / "transformer.pt").is_file()
    with open(tmp_path / "resumed" / "pretrain_log.jsonl", "a") as f:  # as if logged after the checkpoint
        f.write(json.dumps({"stage": "transformer", "step": 5, "loss": 99.0}) + "\n" + '{"stage": "tra')
    resumed = ToyPretrainer(tiny_training(tmp_path / "resumed"), TINY).run()

    a = FluxPipeline.from_pretrained(straight).transformer.state_dict()
    b = FluxPipeline.from_pretrained(resumed).transformer.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (resumed / "checkpoints").exists()
    # The log holds each step once, as a run that never stopped writes it.
    def logged(folder):
        return [(r["stage"], r.get("step")) for r in map(json.loads, (folder / "pretrain_log.jsonl").read_text().splitlines())]

    assert logged(resumed) == logged(straight) and ("transformer", 4) in logged(straight)
    assert json.loads((resumed / "pretrain_summary.json").read_text())["config"]["steps"] == 6
    # Starting over (no resume) in a used folder starts the log over too, instead of appending to it.
    again = ToyPretrainer(tiny_training(tmp_path / "straight", resume=False), TINY).run()
    assert logged(again) == logged(resumed)


def test_training_noise_levels_follow_the_configured_shift(tmp_path):
    def draws(shift: float) -> torch.Tensor:
        trainer = ToyPretrainer(tiny_training(tmp_path, sigma_shift=shift), TINY)
        return trainer.sample_sigmas(4000, tokens=64)

    # shift 0 is the sampler's own: exp(mu) for 64 tokens under FLUX.1-dev's scheduler settings
    mu = 64 * (1.15 - 0.5) / (4096 - 256) + 0.5 - 256 * (1.15 - 0.5) / (4096 - 256)
    s = torch.sigmoid(torch.randn(4000, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(draws(0.0), math.exp(mu) / (math.exp(mu) + (1 / s - 1)), atol=1e-6)
    assert torch.allclose(draws(1.0), s, atol=1e-6)  # no shift: plain logit-normal
    assert draws(3.0).median() > 0.7 > draws(1.0).median()  # weight moves towards noise, where layout is set


def test_layout_targets_mark_each_object_token_with_where_that_object_sits():
    tok = build_tokenizer(16, object_tokens=True)
    ids = tok(["a red circle left of a blue square"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    boxes = [{"red circle": (0.0, 0.25, 0.25, 0.5), "blue square": (0.5, 0.5, 0.75, 0.75)}]
    centre, cover, mask = layout_targets(ids, boxes, tok, grid=4)
    read = tok.convert_ids_to_tokens(ids[0])
    red, blue = read.index("red circle"), read.index("blue square")
    assert mask[0].tolist() == [i in (red, blue) for i in range(16)]
    assert centre[0, red].tolist() == [-0.75, -0.25] and centre[0, blue].tolist() == [0.25, 0.25]  # in [-1, 1]
    # image tokens row-major, as FluxPipeline packs them: the red circle covers row 1, column 0 of 4 x 4
    assert cover[0, red].view(4, 4).nonzero().tolist() == [[1, 0]]
    assert cover[0, blue].view(4, 4).nonzero().tolist() == [[2, 2]]
    assert not centre[0][~mask[0]].any() and not cover[0][~mask[0]].any()


def test_attention_loss_is_the_share_of_an_object_tokens_attention_outside_its_object():
    cover = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])  # one text token whose object covers image tokens 0 and 1
    inside = torch.tensor([[[0.5], [0.3], [0.0], [0.0]]])  # B x image tokens x text tokens
    spread = torch.tensor([[[0.2], [0.2], [0.2], [0.2]]])
    assert attention_loss(inside, cover).item() == pytest.approx(0.0)
    assert attention_loss(spread, cover).item() == pytest.approx(0.5)


def test_the_attention_recorder_changes_nothing_the_transformer_computes():
    pipe = build_toy_pipeline(TINY, seed=3)
    before = sampling.generate_images(pipe, ["a blue circle above a red square"], [0], 3, 3.5, 32)[0]
    recorders = [TextAttentionRecorder() for _ in pipe.transformer.transformer_blocks]
    for block, r in zip(pipe.transformer.transformer_blocks, recorders):
        block.attn.set_processor(r)
        r.active = True
    after = sampling.generate_images(pipe, ["a blue circle above a red square"], [0], 3, 3.5, 32)[0]
    assert np.array_equal(np.asarray(before), np.asarray(after))
    # B x heads x image tokens (TINY packs 32 px into 4 x 4) x text tokens; rows of a softmax over all keys
    maps = recorders[0].maps
    assert maps.shape == (1, TINY.heads, 16, TINY.t5_max_length) and (maps.sum(-1) < 1).all()


@pytest.mark.parametrize("extra", ["layout_weight", "attention_weight"])
def test_auxiliary_losses_change_what_is_learned_and_save_no_extra_weights(tmp_path, extra):
    off = dict(layout_weight=0.0, attention_weight=0.0, steps=50)
    plain = ToyPretrainer(tiny_training(tmp_path / "plain", **off), TINY).run()
    aux = ToyPretrainer(tiny_training(tmp_path / "aux", vae_from=str(plain), **{**off, extra: 1.0}), TINY).run()
    row = [json.loads(line) for line in (aux / "pretrain_log.jsonl").read_text().splitlines()][-1]
    assert row["step"] == 50 and 0 <= row[extra.replace("weight", "loss")] < 2
    # same seed and draws: the only difference is the auxiliary gradient
    a, b = FluxPipeline.from_pretrained(plain), FluxPipeline.from_pretrained(aux)
    sa, sb = a.text_encoder_2.state_dict(), b.text_encoder_2.state_dict()
    assert sa.keys() == sb.keys() and not all(torch.equal(sa[k], sb[k]) for k in sa)
    # the readout and the recorders are training-only: the saved folder is the same FluxPipeline layout
    assert sorted(p.name for p in plain.iterdir()) == sorted(p.name for p in aux.iterdir())
    with pytest.raises(ValueError, match=extra):
        PretrainConfig(**{extra: -1}).validate()


def test_a_pilot_reuses_a_saved_autoencoder_and_changes_the_model_from_the_command_line(tmp_path):
    first = ToyPretrainer(tiny_training(tmp_path / "first"), TINY).run()
    # another seed: an autoencoder trained here would differ, the reused one is the first's to the bit
    pilot = ToyPretrainer(tiny_training(tmp_path / "pilot", vae_from=str(first), seed=1), TINY).run()
    a, b = AutoencoderKL.from_pretrained(first / "vae"), AutoencoderKL.from_pretrained(pilot / "vae")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    assert PretrainConfig(model='{"heads": 3, "vae_channels": [8, 16]}').toy_config() == replace(
        ToyFluxConfig(), heads=3, vae_channels=(8, 16))
    with pytest.raises(ValueError, match="JSON object of ToyFluxConfig fields"):
        PretrainConfig(model='{"layers": 3}').validate()
    with pytest.raises(ValueError, match="not a pipeline folder"):
        PretrainConfig(vae_from=str(tmp_path / "missing")).validate()
    with pytest.raises(ValueError, match="mirror_prob must be in"):
        PretrainConfig(mirror_prob=0.5).validate()  # a coin flip: the words would not decide the layout
    assert PretrainConfig(rare_relations=" below, right of ").rare_relation_words() == ("below", "right of")
    with pytest.raises(ValueError, match="rare_relations must name relations"):
        PretrainConfig(rare_relations="below,under").validate()
    with pytest.raises(ValueError, match="rare_relations must name relations"):
        PretrainConfig(rare_relations="below", rare_relation_prob=1.5).validate()


def test_continuing_from_a_saved_pipeline_starts_from_its_weights_and_keeps_its_latent_scale(tmp_path):
    first = ToyPretrainer(tiny_training(tmp_path / "first"), TINY).run()
    # zero steps' worth of change would be the first pipeline itself: one step moves it a little
    more = ToyPretrainer(tiny_training(tmp_path / "more", init_from=str(first), steps=1, warmup=1, lr=1e-5,
                                       mirror_prob=0.3), TINY).run()  # fmt: skip
    a, b = FluxPipeline.from_pretrained(first), FluxPipeline.from_pretrained(more)
    assert (a.vae.config.scaling_factor, a.vae.config.shift_factor) == (b.vae.config.scaling_factor, b.vae.config.shift_factor)
    assert all(torch.equal(x, y) for x, y in zip(a.vae.state_dict().values(), b.vae.state_dict().values()))
    ta, tb = a.transformer.state_dict(), b.transformer.state_dict()
    moved = max((ta[k] - tb[k]).abs().max().item() for k in ta)
    assert 0 < moved < 1e-3  # one small step away from the saved weights, not a fresh initialisation
    scratch = FluxPipeline.from_pretrained(ToyPretrainer(tiny_training(tmp_path / "scratch", steps=1, warmup=1, lr=1e-5,
                                                                       seed=1), TINY).run())  # fmt: skip
    assert max((ta[k] - scratch.transformer.state_dict()[k]).abs().max().item() for k in ta) > 1e-2

    with pytest.raises(ValueError, match="not a saved toy pipeline folder"):
        PretrainConfig(init_from=str(first / "vae")).validate()
    with pytest.raises(ValueError, match="leave vae_from empty"):
        PretrainConfig(init_from=str(first), vae_from=str(first)).validate()
    wider = replace(TINY, heads=TINY.heads * 2)
    with pytest.raises(ValueError, match="not this run's architecture"):
        ToyPretrainer(tiny_training(tmp_path / "wider", init_from=str(first)), wider).run()


def test_the_training_command_refuses_bad_settings_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "training.pretrain_toy", "--out", str(tmp_path), "--steps", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["error: steps must be positive, got 0"]


# ---- the shipped checkpoint ------------------------------------------------------------------------


def test_the_shipped_toy_is_small():
    files = [p for p in TOY_BASE.rglob("*") if p.is_file()]
    assert (TOY_BASE / "model_index.json").is_file()
    assert all(p.stat().st_size < 30 * MB for p in files)
    assert sum(p.stat().st_size for p in files) < 20 * MB


@pytest.mark.slow
def test_the_shipped_toy_draws_named_objects_far_above_chance():
    # A regression guard on the bundled weights, set from what they do (docs/TRAINING.md: 73% of named
    # objects found and 34% of images with every object over 200 x 4 held-out images), not from the
    # target they still miss (issue: 0.80 of images with every object found). Chance is far below 10%.
    from spatial.generation.evaluate import HELD_OUT_SEED, judge

    config = GenerationConfig.for_preset("toy", device="cpu")
    config.lora = None
    service = GenerationService(config)
    prompts = sample_prompts(24, HELD_OUT_SEED)
    rows = judge(service.generate(prompts, [0]), prompts)["rows"]
    found = [o["found"] for row in rows for o in row["objects"]]
    assert sum(found) / len(found) >= 0.6
    assert sum(row["objects_ok"] for row in rows) / len(rows) >= 0.2


TINY_JSON = json.dumps({"vae_channels": [8, 16, 16], "latent_channels": 4, "double_layers": 1, "single_layers": 1,
                        "heads": 2, "head_dim": 16, "text_dim": 32, "text_layers": 1, "pooled_dim": 32})  # fmt: skip


def _pretrain(out: Path, processes: int) -> dict:
    args = ["--out", str(out), "--examples", "64", "--vae_steps", "3", "--vae_batch", "4", "--steps", "3", "--batch", "4",
            "--warmup", "1", "--probe_every", "0", "--threads", "1", "--model", TINY_JSON]  # fmt: skip
    cmd = [sys.executable, "-m", "training.pretrain_toy", *args]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/cpu_2proc.yaml",
               "--num_processes", str(processes), "-m", "training.pretrain_toy", *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pipe = FluxPipeline.from_pretrained(out)
    return {f"{name}.{k}": v for name in ("vae", "transformer", "text_encoder_2")
            for k, v in getattr(pipe, name).state_dict().items()}  # fmt: skip


@pytest.mark.slow
def test_two_processes_pretrain_like_one_on_the_same_global_batch(tmp_path):
    # Each process trains on its half of the same global draws and gradients are averaged, so the
    # autoencoder, the transformer and the text encoders end where one process ends.
    one, two = _pretrain(tmp_path / "one", 1), _pretrain(tmp_path / "two", 2)
    assert one.keys() == two.keys()
    close = torch.cat([torch.isclose(one[k], two[k], rtol=1e-3, atol=1e-5).flatten() for k in one])
    assert close.float().mean() > 0.995
    summary = json.loads((tmp_path / "two" / "pretrain_summary.json").read_text())
    assert summary["processes"] == 2 and not (tmp_path / "two" / "checkpoints").exists()


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
    from accelerate import Accelerator

    class TwoProcesses:  # what a 2-process Accelerator reports; only the count matters before training
        num_processes, is_main_process, process_index, device = 2, True, 0, torch.device("cpu")

    with pytest.raises(ValueError, match="batch 5 does not divide by 2 processes"):
        ToyPretrainer(tiny_training(tmp_path, batch=5), TINY, accelerator=TwoProcesses())
    assert ToyPretrainer(tiny_training(tmp_path), TINY, accelerator=Accelerator(cpu=True)).acc.num_processes == 1
