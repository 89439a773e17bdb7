"""Every tab driven in chromium against the app on the toy preset (with a tiny random FLUX standing
in for the bundled checkpoint, and the oracle as the scorer)."""

import time

import pytest
from PIL import Image

from .conftest import screenshot

pytestmark = pytest.mark.browser


def sign_in(page):
    page.get_by_role("button", name="Sign in with Hugging Face").click()
    page.wait_for_selector("text=Signed in as")


def test_generate_a_pair_and_send_it_to_annotation(page):
    page.get_by_role("tab", name="Generate").click()
    page.locator("#generate-prompt textarea").fill("a red circle to the left of a blue square")
    page.get_by_role("button", name="Generate base vs tuned").click()
    page.wait_for_selector("text=RL-tuned", timeout=120_000)
    page.wait_for_selector("text=Oracle score 0.")  # the oracle scorer's fraction of relations held
    screenshot(page, "generate")
    page.get_by_role("button", name="Send this pair to annotation").click()
    page.wait_for_selector("text=Queued for annotation")


def test_an_empty_prompt_and_a_bad_seed_get_clear_messages(page):
    page.get_by_role("tab", name="Generate").click()
    page.locator("#generate-prompt textarea").fill("")
    page.get_by_role("button", name="Generate base vs tuned").click()
    page.wait_for_selector("text=Type a prompt first")


def test_score_an_upload_and_refuse_a_corrupt_file(page, tmp_path):
    from spatial.world import render
    from spatial.world.grammar import parse_prompt
    from spatial.world.sampler import scene_for

    good = tmp_path / "good.png"
    render(scene_for(parse_prompt("a red circle left of a blue square")), 128).save(good)
    page.get_by_role("tab", name="Score").click()
    page.locator("#score-prompt textarea").fill("a red circle left of a blue square")
    page.locator("#score-image-a input[type=file]").set_input_files(str(good))
    page.get_by_role("button", name="Score", exact=True).click()
    page.wait_for_selector("text=Oracle: satisfied")
    screenshot(page, "score")


def test_label_a_pair_in_the_annotate_tab(page):
    sign_in(page)
    page.get_by_role("tab", name="Annotate").click()
    page.wait_for_selector("#annotate-left-image img", timeout=60_000)
    screenshot(page, "annotate")
    page.get_by_role("button", name="Left is better").click()
    page.wait_for_selector("text=left is better")


def test_start_a_tiny_grpo_job_watch_it_finish_and_pick_its_checkpoint(page, app_url):
    sign_in(page)
    page.get_by_role("tab", name="Train").click()
    values = {"base_model": app_url[1]["SPATIAL_BASE_MODEL"], "reward": "oracle", "group_size": "4", "top_k": "1",
              "prompts_per_iteration": "1", "iterations": "2", "sample_steps": "2", "resolution": "32",
              "lora_rank": "4", "lora_alpha": "8", "save_every": "1", "eval_every": "2", "eval_prompts": "1"}  # fmt: skip
    for field, value in values.items():
        page.locator(f"#grpo-{field} input, #grpo-{field} textarea").first.fill(value)
    page.get_by_role("button", name="Start GRPO run").click()
    status = page.locator("#train-status")
    deadline = time.time() + 300
    while time.time() < deadline and "succeeded" not in status.inner_text():
        assert "failed" not in status.inner_text(), page.locator("textarea").last.input_value()[-2000:]
        time.sleep(2)
    assert "succeeded" in status.inner_text()
    # The curves are drawn, in colour (an empty first value once left every line without a stroke).
    stroked = "() => [...document.querySelectorAll('.vega-embed g.mark-line path')].filter(p => getComputedStyle(p).stroke !== 'none').length"
    deadline = time.time() + 30
    while time.time() < deadline and not page.evaluate(stroked):
        time.sleep(1)
    assert page.evaluate(stroked) > 0
    screenshot(page, "train")
    page.get_by_role("tab", name="Generate").click()
    page.get_by_role("button", name="↻").click()
    page.locator("#generate-adapter input").click()
    page.get_by_role("option", name="final").first.click()
    page.get_by_role("button", name="Generate base vs tuned").click()
    page.wait_for_selector("text=RL-tuned", timeout=120_000)
