"""The toy FLUX: real FLUX components from configs, SpatialWorld tokenizers, a resumable trainer,
and the shipped checkpoint in assets/toy/flux."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextModel, T5EncoderModel

from spatial.generation import GenerationConfig, GenerationService, build_tokenizer, build_toy_pipeline, sampling
from spatial.generation.config import TOY_BASE
from spatial.generation.pretrain import PretrainConfig, ToyPretrainer
from spatial.generation.toy import TINY, ToyFluxConfig
from spatial.world import sample_prompts, words

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def test_every_spatialworld_word_has_its_own_token():
    tok = build_tokenizer(24)
    unk = tok.unk_token_id
    ids = [tok.convert_tokens_to_ids(w) for w in words()]
    assert unk not in ids and len(set(ids)) == len(ids)
    assert tok("A Red Circle").input_ids == tok("a red circle").input_ids  # case does not matter


def test_tokenizers_pad_and_never_truncate_a_spatialworld_prompt():
    clip, t5 = build_tokenizer(77), build_tokenizer(ToyFluxConfig().t5_max_length)
    assert clip.model_max_length == 77 and clip.pad_token == "<pad>" and t5.pad_token == "<pad>"
    longest = max(len(t5(p).input_ids) for p in sample_prompts(2000, seed=5))
    assert longest <= t5.model_max_length
    ids = t5("a red circle left of a blue square", padding="max_length", max_length=24).input_ids
    assert len(ids) == 24 and ids[-1] == t5.pad_token_id and t5.eos_token_id in ids


def test_filler_words_are_dropped_and_unknown_words_marked():
    tok = build_tokenizer(24)
    read = tok.convert_ids_to_tokens(tok("A picture of a red circle to the left of the blue cat").input_ids)
    assert read == ["red", "circle", "left", "blue", "<unk>", "</s>"]


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
    return PretrainConfig(out=str(out), examples=64, vae_steps=4, vae_batch=4, steps=6, batch=4, warmup=2,
                          checkpoint_every=2, probe_every=0, **kw)  # fmt: skip


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
    resumed = ToyPretrainer(tiny_training(tmp_path / "resumed"), TINY).run()

    a = FluxPipeline.from_pretrained(straight).transformer.state_dict()
    b = FluxPipeline.from_pretrained(resumed).transformer.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (resumed / "checkpoints").exists()
    assert json.loads((resumed / "pretrain_summary.json").read_text())["config"]["steps"] == 6


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
    # A regression guard on the bundled weights, set from what they do (docs/TRAINING.md: 32% of named
    # objects found over 200 x 4 held-out images), not from the target they still miss (issue: 0.80
    # of images with every object found).
    from spatial.generation.evaluate import HELD_OUT_SEED, judge

    config = GenerationConfig.for_preset("toy", device="cpu")
    config.lora = None
    service = GenerationService(config)
    prompts = sample_prompts(24, HELD_OUT_SEED)
    rows = judge(service.generate(prompts, [0]), prompts)["rows"]
    found = [o["found"] for row in rows for o in row["objects"]]
    assert sum(found) / len(found) >= 0.2
