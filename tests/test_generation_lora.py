"""LoRA adapters in the diffusers format: what is saved is what renders after a reload."""

import json

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from spatial.generation import (
    AdapterUnavailableError, adapter_per_row, add_lora, build_toy_pipeline, load_lora, sampling, save_lora,
)  # fmt: skip
from spatial.generation.lora import WEIGHTS_NAME
from spatial.generation.toy import TINY

PROMPT = "a yellow square below an orange circle"


def render(pipe, adapter: str | None):
    if adapter is None:
        pipe.transformer.disable_adapters()
    else:
        pipe.transformer.enable_adapters()
        pipe.transformer.set_adapter(adapter)
    return np.asarray(sampling.generate_images(pipe, [PROMPT], [0], 3, 3.5, 32)[0], dtype=np.int16)


def trained_looking(pipe, rank: int, alpha: float, name: str = "default"):
    add_lora(pipe.transformer, rank=rank, alpha=alpha, adapter_name=name)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    build_toy_pipeline(TINY, seed=2).save_pretrained(path)
    return path


def test_save_then_load_renders_the_identical_image(base_dir, tmp_path):
    pipe = FluxPipeline.from_pretrained(base_dir)
    trained_looking(pipe, rank=4, alpha=12)
    before = render(pipe, "default")
    save_lora(pipe, tmp_path / "lora")

    fresh = FluxPipeline.from_pretrained(base_dir)
    load_lora(fresh, tmp_path / "lora", "tuned")
    assert np.array_equal(render(fresh, "tuned"), before)
    assert not np.array_equal(render(fresh, None), before)  # the adapter is what changed the image


def test_lora_alpha_different_from_rank_survives_the_round_trip(base_dir, tmp_path):
    pipe = FluxPipeline.from_pretrained(base_dir)
    trained_looking(pipe, rank=4, alpha=12)
    save_lora(pipe, tmp_path / "lora")
    with safe_open(str(tmp_path / "lora" / WEIGHTS_NAME), "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert (meta["transformer.r"], meta["transformer.lora_alpha"]) == (4, 12)
    fresh = FluxPipeline.from_pretrained(base_dir)
    config = load_lora(fresh, tmp_path / "lora", "tuned")
    assert (config.r, config.lora_alpha) == (4, 12)


def test_without_the_metadata_the_same_weights_render_differently(base_dir, tmp_path):
    # Why the metadata matters: diffusers then assumes alpha = rank, a 3x smaller update here.
    pipe = FluxPipeline.from_pretrained(base_dir)
    trained_looking(pipe, rank=4, alpha=12)
    before = render(pipe, "default")
    save_lora(pipe, tmp_path / "lora")
    (tmp_path / "bare").mkdir()
    save_file(load_file(str(tmp_path / "lora" / WEIGHTS_NAME)), str(tmp_path / "bare" / WEIGHTS_NAME))
    fresh = FluxPipeline.from_pretrained(base_dir)
    config = load_lora(fresh, tmp_path / "bare", "tuned")
    assert config.lora_alpha != 12
    assert not np.array_equal(render(fresh, "tuned"), before)


def test_saved_keys_are_in_the_diffusers_transformer_namespace(base_dir, tmp_path):
    pipe = FluxPipeline.from_pretrained(base_dir)
    trained_looking(pipe, rank=2, alpha=2)
    save_lora(pipe, tmp_path / "lora")
    keys = load_file(str(tmp_path / "lora" / WEIGHTS_NAME)).keys()
    assert keys and all(k.startswith("transformer.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    assert any("single_transformer_blocks" in k for k in keys) and any("ff_context" in k for k in keys)


def test_loading_under_an_existing_name_replaces_that_adapter(base_dir, tmp_path):
    pipe = FluxPipeline.from_pretrained(base_dir)
    trained_looking(pipe, rank=4, alpha=4)
    save_lora(pipe, tmp_path / "a")
    fresh = FluxPipeline.from_pretrained(base_dir)
    load_lora(fresh, tmp_path / "a", "tuned")
    load_lora(fresh, tmp_path / "a", "tuned")
    assert list(fresh.transformer.peft_config) == ["tuned"]


def test_a_missing_adapter_folder_names_the_file_it_expected(base_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = FluxPipeline.from_pretrained(base_dir)
    with pytest.raises(AdapterUnavailableError, match=WEIGHTS_NAME):
        load_lora(pipe, tmp_path / "nothing-here", "tuned")
    # `folder/name` is also how Hub ids look: under a folder that exists here it is a missing path.
    (tmp_path / "runs").mkdir()
    with pytest.raises(AdapterUnavailableError, match="no LoRA adapter at runs/nothere"):
        load_lora(pipe, "runs/nothere", "tuned")


def test_saving_an_adapter_that_does_not_exist_is_refused(base_dir, tmp_path):
    pipe = FluxPipeline.from_pretrained(base_dir)
    with pytest.raises(AdapterUnavailableError, match="nope"):
        save_lora(pipe, tmp_path / "x", adapter_name="nope")


def test_a_lora_saved_with_dropout_renders_deterministically_once_loaded(base_dir, tmp_path):
    from peft import LoraConfig

    pipe = FluxPipeline.from_pretrained(base_dir)
    targets = sorted({n.rsplit(".", 1)[-1] for n, _ in pipe.transformer.named_modules() if n.endswith(("to_q", "to_v"))})
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, lora_dropout=0.5, target_modules=targets))
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    save_lora(pipe, tmp_path / "lora")
    fresh = FluxPipeline.from_pretrained(base_dir)
    load_lora(fresh, tmp_path / "lora", "tuned")
    assert fresh.transformer.peft_config["tuned"].lora_dropout == 0.5
    assert np.array_equal(render(fresh, "tuned"), render(fresh, "tuned"))  # dropout off at inference


def test_a_lora_file_with_nothing_for_the_transformer_is_refused_by_name(base_dir, tmp_path):
    (tmp_path / "te-only").mkdir()
    save_file({"vae.decoder.conv_in.lora_A.weight": torch.zeros(4, 32)},
              str(tmp_path / "te-only" / WEIGHTS_NAME))  # fmt: skip
    pipe = FluxPipeline.from_pretrained(base_dir)
    with pytest.raises(AdapterUnavailableError, match="no weights for the FLUX transformer"):
        load_lora(pipe, tmp_path / "te-only", "tuned")


def test_a_replacement_that_fails_to_load_leaves_the_working_adapter_in_place(base_dir, tmp_path):
    pipe = FluxPipeline.from_pretrained(base_dir)
    trained_looking(pipe, rank=4, alpha=8)
    save_lora(pipe, tmp_path / "good")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    fresh = FluxPipeline.from_pretrained(base_dir)
    load_lora(fresh, tmp_path / "good", "tuned")
    before = render(fresh, "tuned")
    with pytest.raises(AdapterUnavailableError, match="could not load"):
        load_lora(fresh, tmp_path / "corrupt", "tuned")
    assert list(fresh.transformer.peft_config) == ["tuned"]  # no trial adapter left behind
    assert np.array_equal(render(fresh, "tuned"), before)


def test_a_mixed_adapter_batch_renders_each_row_as_its_adapter_alone(base_dir):
    pipe = FluxPipeline.from_pretrained(base_dir)
    trained_looking(pipe, rank=4, alpha=8, name="a")
    trained_looking(pipe, rank=2, alpha=2, name="b")
    alone = {name: render(pipe, name) for name in (None, "a", "b")}
    pipe.transformer.disable_adapters()

    with adapter_per_row(pipe.transformer, [None, "a", "b"]):
        rows = sampling.generate_images(pipe, [PROMPT] * 3, [0] * 3, 3, 3.5, 32)
    # Float sums may round differently with the batch shape; one 8-bit level is the most it may move.
    for name, image in zip((None, "a", "b"), rows):
        assert np.abs(np.asarray(image, dtype=np.int16) - alone[name]).max() <= 1
    assert not np.array_equal(alone[None], alone["a"]) and not np.array_equal(alone["a"], alone["b"])
    # Afterwards the adapters are off again and the hooks are gone: a plain render is the base model.
    after = sampling.generate_images(pipe, [PROMPT], [0], 3, 3.5, 32)[0]
    assert np.array_equal(np.asarray(after, dtype=np.int16), alone[None])


def test_a_mixed_adapter_batch_refuses_an_adapter_that_is_not_loaded(base_dir):
    pipe = FluxPipeline.from_pretrained(base_dir)
    trained_looking(pipe, rank=4, alpha=8, name="a")
    with pytest.raises(AdapterUnavailableError, match="'tuned'"):
        with adapter_per_row(pipe.transformer, [None, "tuned"]):
            pass
