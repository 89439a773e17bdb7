"""The app as `make demo` starts it: no settings, the bundled toy models (README: bundled checkpoints)."""

from gradio_client import Client

from .conftest import running_app


def test_generate_on_the_embedded_default_shows_the_base_image_and_says_why_no_tuned_one(tmp_path):
    # Until an RL LoRA is bundled (assets/toy/rl-lora), the tuned side explains itself instead of
    # the whole pair failing; the base image comes from the shipped toy FLUX with its SpatialScore.
    with running_app(tmp_path, {"SPATIAL_LORA": str(tmp_path / "no-such-lora")}) as url:
        client = Client(url, verbose=False)
        slider, base_md, tuned_md, *_ = client.predict("a red circle left of a blue square", 0, 20, 3.5, 32,
                                                       "bundled", api_name="/generate_pair")  # fmt: skip
    assert slider[0] and not slider[1]
    assert "SpatialScore" in base_md and "±" in base_md
    assert "unavailable" in tuned_md and "training.train_grpo" in tuned_md
