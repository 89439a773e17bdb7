"""Hostile input across tabs gets a clear message, and the app stays up afterwards."""

import pytest
from gradio_client import Client, handle_file

from spatial.rl.config import PRESETS, GRPOConfig
from ui.forms import DataclassForm


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url[0], verbose=False)


def generate(client, prompt="a red circle left of a blue square", seed=0, adapter="bundled"):
    return client.predict(prompt, seed, 2, 3.5, 32, adapter, api_name="/generate_pair")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": ""}, "Type a prompt"),
        ({"prompt": "x" * 5000}, "keep it under 500"),
        ({"seed": -5}, "seed must be between|less than minimum"),
        ({"adapter": "../../etc/passwd"}, "no LoRA adapter"),
        ({"adapter": "/etc"}, "no LoRA adapter"),
    ],
)
def test_generate_refuses_with_a_message(client, kwargs, message):
    with pytest.raises(Exception, match=message):
        generate(client, **kwargs)


def test_score_refuses_non_images_and_corrupt_files(client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    for path in (text, corrupt):
        with pytest.raises(Exception):
            client.predict("a red circle left of a blue square", handle_file(str(path)), None, "default", api_name="/score_images")
    with pytest.raises(Exception, match="Pick a scorer|not in the list of choices"):
        client.predict("a red circle left of a blue square", None, None, "/etc/passwd", api_name="/score_images")
    with pytest.raises(Exception, match="Upload at least one image"):
        client.predict("a red circle left of a blue square", None, None, "default", api_name="/score_images")


def test_compare_refuses_bad_seeds_and_too_many_cells(client):
    with pytest.raises(Exception, match="whole numbers"):
        client.predict("a red circle left of a blue square", "zero", [], 2, 32, api_name="/compare_checkpoints")
    many = "\n".join(["a red circle left of a blue square"] * 40)
    with pytest.raises(Exception, match="more than"):
        client.predict(many, "0, 1", ["bundled"], 2, 32, api_name="/compare_checkpoints")


def test_the_app_is_still_up_after_all_that(client):
    _, base_md, tuned_md, *_ = generate(client)
    assert "Base" in base_md and "RL-tuned" in tuned_md


@pytest.mark.parametrize(
    "field, value, message",
    [("group_size", 1, "group_size"), ("top_k", 50, "top_k"), ("learning_rate", 1e9, "learning_rate"),
     ("iterations", -3, "iterations"), ("resolution", 33, "resolution"), ("sample_steps", 2.5, "whole number"),
     ("beta", float("nan"), "beta must be a finite number"), ("iterations", float("inf"), "finite number")],
)  # fmt: skip
def test_absurd_hyperparameters_are_refused_by_the_train_form(field, value, message):
    form = DataclassForm(GRPOConfig, [field], defaults=PRESETS["toy"], presets=PRESETS)
    with pytest.raises(ValueError, match=message):
        form.build([value])
