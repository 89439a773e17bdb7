"""The app starts on the toy preset, signs in locally without network, and the world tab works."""

import pytest

from .conftest import screenshot

pytestmark = pytest.mark.browser


def test_local_sign_in_shows_the_user_and_their_role(page):
    page.get_by_role("button", name="Sign in with Hugging Face").click()
    page.wait_for_selector("text=Signed in as")
    assert "tester" in page.inner_text("#who") and "admin" in page.inner_text("#who")


def test_world_tab_renders_a_prompt_and_the_oracle_accepts_it(page):
    page.get_by_role("tab", name="SpatialWorld").click()
    box = page.locator("#world-prompt textarea")
    box.fill("a red circle to the left of a blue square, and the blue square above a green triangle")
    page.get_by_role("button", name="Render an ideal scene").click()
    page.wait_for_selector("text=Oracle: satisfied")
    assert page.locator("text=red circle *left of* blue square").count() == 0  # rendered, not raw markdown
    screenshot(page, "world")


def test_an_unreadable_prompt_gets_a_clear_message_and_the_app_stays_up(page):
    page.get_by_role("tab", name="SpatialWorld").click()
    page.locator("#world-prompt textarea").fill("a zebra left of a blue square")
    page.get_by_role("button", name="Render an ideal scene").click()
    page.wait_for_selector("text=does not know")
    page.locator("#world-prompt textarea").fill("a red circle above a blue square")
    page.get_by_role("button", name="Render an ideal scene").click()
    page.wait_for_selector("text=Oracle: satisfied")
