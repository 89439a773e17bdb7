"""Generation presets and settings: model ids and paths come from config or environment, never code."""

import pytest

from spatial.generation import PRESETS, ConfigError, GenerationConfig
from spatial.generation.config import TOY_BASE, TOY_LORA


def test_the_toy_preset_is_the_default_and_points_at_the_bundled_checkpoint():
    config = GenerationConfig.from_env({})
    assert config.preset == "toy" and config.base_model == str(TOY_BASE)
    assert config.lora == str(TOY_LORA) and config.size == 32


def test_flux_dev_preset_is_flux1_dev_in_bf16_with_its_published_sampling_defaults():
    config = GenerationConfig.for_preset("flux-dev")
    assert config.base_model == "black-forest-labs/FLUX.1-dev"
    assert (config.dtype, config.steps, config.guidance, config.size) == ("bfloat16", 28, 3.5, 1024)
    assert config.lora is None


def test_environment_picks_the_preset_the_base_model_and_the_adapter():
    env = {"SPATIAL_PRESET": "flux-dev", "SPATIAL_BASE_MODEL": "/models/flux", "SPATIAL_LORA": "me/spatial-lora"}
    config = GenerationConfig.from_env(env)
    assert (config.preset, config.base_model, config.lora) == ("flux-dev", "/models/flux", "me/spatial-lora")
    assert config.steps == 28  # the rest stays the preset's


def test_spatial_lora_none_switches_the_tuned_adapter_off():
    assert GenerationConfig.from_env({"SPATIAL_LORA": "none"}).lora is None


def test_overrides_left_empty_keep_the_preset_values():
    config = GenerationConfig.for_preset("flux-dev", steps=None, size=512)
    assert (config.steps, config.size) == (28, 512)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"name": "flux-schnell"}, "toy, flux-dev"),
        ({"size": 100}, "multiple of 16"),
        ({"steps": 0}, "steps"),
        ({"dtype": "float16"}, "bfloat16"),
        ({"device": "tpu"}, "cuda"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_settings_are_refused_with_a_message_naming_the_setting(kwargs, words):
    name = kwargs.pop("name", "toy")
    with pytest.raises(ConfigError, match=words):
        GenerationConfig.for_preset(name, **kwargs)


def test_an_unknown_preset_in_the_environment_names_the_choices():
    with pytest.raises(ConfigError, match="flux-dev"):
        GenerationConfig.from_env({"SPATIAL_PRESET": "sdxl"})


def test_every_preset_validates():
    for name in PRESETS:
        GenerationConfig.for_preset(name).validate()


def test_compiling_the_transformer_is_an_opt_in_setting():
    assert GenerationConfig.from_env({}).compile is False
    assert GenerationConfig.from_env({"SPATIAL_COMPILE": "1"}).compile is True
    assert GenerationConfig.from_env({"SPATIAL_COMPILE": "off"}).compile is False
    with pytest.raises(ConfigError, match="SPATIAL_COMPILE"):
        GenerationConfig.from_env({"SPATIAL_COMPILE": "fast"})
