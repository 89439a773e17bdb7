"""The app as `make demo` starts it: no settings, the bundled toy models (README: bundled checkpoints)."""

import os
import subprocess
import sys
import urllib.request

from gradio_client import Client

from .conftest import ROOT, running_app


def test_generate_without_a_tuned_lora_shows_the_base_image_and_says_why_there_is_no_tuned_one(tmp_path):
    # With no RL LoRA where SPATIAL_LORA points, the tuned side explains itself instead of the
    # whole pair failing; the base image comes from the shipped toy FLUX with its SpatialScore.
    with running_app(tmp_path, {"SPATIAL_LORA": str(tmp_path / "no-such-lora")}) as url:
        client = Client(url, verbose=False)
        slider, base_md, tuned_md, *_ = client.predict("a red circle left of a blue square", 0, 20, 3.5, 32,
                                                       "bundled", api_name="/generate_pair")  # fmt: skip
    assert slider[0] and not slider[1]
    assert "SpatialScore" in base_md and "±" in base_md
    assert "unavailable" in tuned_md and "training.train_grpo" in tuned_md


def test_generate_on_the_embedded_default_renders_the_bundled_tuned_side_with_its_score(tmp_path):
    # The bundled RL LoRA (assets/toy/rl-lora) is the default tuned side: both images come back.
    with running_app(tmp_path, {}) as url:
        client = Client(url, verbose=False)
        slider, base_md, tuned_md, *_ = client.predict("a red circle left of a blue square", 0, 20, 3.5, 32,
                                                       "bundled", api_name="/generate_pair")  # fmt: skip
    assert slider[0] and slider[1]
    assert "SpatialScore" in tuned_md and "±" in tuned_md and "unavailable" not in tuned_md


def test_a_second_app_on_the_same_data_dir_stops_with_a_message_and_the_first_stays_up(tmp_path):
    # One job scheduler per SPATIAL_DATA_DIR (README): the second process says why and exits.
    with running_app(tmp_path, {"SPATIAL_SEED_PAIRS": "0"}) as url:
        env = {**os.environ, "SPATIAL_DATA_DIR": str(tmp_path), "GRADIO_SERVER_PORT": "0"}
        second = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        assert "Spatial Studio did not start" in second.stderr and "SPATIAL_DATA_DIR" in second.stderr
        assert "Traceback" not in second.stderr
        assert urllib.request.urlopen(url, timeout=10).status == 200
