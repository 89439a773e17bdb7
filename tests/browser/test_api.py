"""Every documented API endpoint, called with gradio_client as a script would (README lists them)."""

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from spatial.world import render
from spatial.world.grammar import parse_prompt
from spatial.world.sampler import scene_for
from ui.train import GRPO_FIELDS, HUB_FIELDS, REWARD_FIELDS

ENDPOINTS = {"/sample_prompt", "/render_scene", "/oracle_check", "/generate_pair", "/send_pair_to_annotation",
             "/compare_checkpoints", "/score_images", "/annotate_next", "/annotate_submit", "/annotate_stats",
             "/start_grpo", "/start_reward", "/cancel_job", "/resume_job", "/hub_job_grpo", "/hub_job_reward"}  # fmt: skip


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url[0], verbose=False)


def test_the_documented_endpoints_are_exactly_the_named_ones(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert named - {"/_check_login_status"} == ENDPOINTS  # the LoginButton adds its own


def test_world_endpoints(client, tmp_path):
    prompt = client.predict(api_name="/sample_prompt")
    parse_prompt(prompt)
    image, verdict = client.predict(prompt, 1, 128, api_name="/render_scene")
    assert "Oracle: satisfied" in verdict
    assert "Oracle: satisfied" in client.predict(prompt, handle_file(image), api_name="/oracle_check")


def test_generate_and_score_endpoints(client, tmp_path):
    slider, base_md, tuned_md, *_ = client.predict("a red circle left of a blue square", 3, 2, 3.5, 32, "bundled",
                                                   api_name="/generate_pair")  # fmt: skip
    assert "Base" in base_md and "RL-tuned" in tuned_md
    good = tmp_path / "good.png"
    render(scene_for(parse_prompt("a red circle left of a blue square")), 96).save(good)
    out = client.predict("a red circle left of a blue square", handle_file(str(good)), None, "default", api_name="/score_images")
    assert "Oracle: satisfied" in out


def test_compare_endpoint_returns_a_grid_a_table_and_exports(client):
    grid, table, files = client.predict("a red circle left of a blue square", "0", ["bundled"], 2, 32,
                                        api_name="/compare_checkpoints")  # fmt: skip
    assert [row[0] for row in table["data"]] == ["base", "bundled"]
    assert table["headers"] == ["checkpoint", "mean_spatialscore", "win_rate_vs_base", "oracle_accuracy",
                                "unrequested_objects", "images"]  # fmt: skip
    assert all(row[4] >= 0 for row in table["data"])  # a count per image, for the prompt the oracle can read
    assert sorted(Path(str(f)).name for f in files) == ["comparison.csv", "grid.png", "images.csv"]


def test_annotation_endpoints_need_a_signed_in_user(client):
    with pytest.raises(Exception, match="[Ss]ign in"):
        client.predict(api_name="/annotate_next")


def test_training_endpoints_refuse_anonymous_callers(client):
    with pytest.raises(Exception, match="only admins"):
        client.predict(*([None] * len(GRPO_FIELDS)), api_name="/start_grpo")
    with pytest.raises(Exception, match="only admins"):
        client.predict(*([None] * len(REWARD_FIELDS)), api_name="/start_reward")
    with pytest.raises(Exception, match="only admins"):
        client.predict(*([None] * (len(GRPO_FIELDS) + len(HUB_FIELDS))), api_name="/hub_job_grpo")
    with pytest.raises(Exception, match="only admins"):
        client.predict(*([None] * (len(REWARD_FIELDS) + len(HUB_FIELDS))), api_name="/hub_job_reward")
    with pytest.raises(Exception):
        client.predict("20260101-000000-abcdef", api_name="/cancel_job")
