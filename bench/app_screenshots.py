"""Screenshots of every tab of the app as `make demo` runs it (the bundled toy models), for the README.

    python bench/app_screenshots.py --out docs/screenshots

The browser tests save screenshots too, but of an app on a tiny random FLUX (noise, by design: it is
fast). This drives the embedded default in Debian chromium instead. The Generate tab shows the first
held-out prompt whose base image (seed 0) misses a relation that the bundled LoRA's image gets right,
so it is a picked example, and the script prints which; the Train tab shows a 2-iteration GRPO run
on the toy with the toy SpatialScore as reward, started from the form.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.generation import GenerationConfig, GenerationService  # noqa: E402
from spatial.generation.evaluate import HELD_OUT_SEED  # noqa: E402
from spatial.world import check, sample_prompts  # noqa: E402
from tests.browser.conftest import CHROMIUM, running_app  # noqa: E402


def pick_example(limit: int, seed: int, folder: Path) -> tuple[str, Path, Path]:
    """The first held-out prompt where the base fails and the tuned side satisfies every relation,
    with both images saved (the Score tab scores them)."""
    service = GenerationService(GenerationConfig.for_preset("toy", device="cpu"))
    for prompt in sample_prompts(limit, HELD_OUT_SEED):
        base, tuned = service.generate([prompt], [seed])[0], service.generate([prompt], [seed], adapter="tuned")[0]
        if not check(base, prompt).satisfied and check(tuned, prompt).satisfied:
            paths = folder / "base.png", folder / "tuned.png"
            base.save(paths[0])
            tuned.save(paths[1])
            return prompt, *paths
    raise SystemExit(f"none of the first {limit} held-out prompts has a base miss fixed by the LoRA at seed {seed}")


def wait_visible(page, text: str) -> None:
    """Wait for `text` in the open tab (other tabs keep their hidden copies of the same words)."""
    page.locator(f"text={text} >> visible=true").first.wait_for()


def wait_for_job(page, timeout_s: float) -> str:
    status = page.locator("#train-status")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = status.inner_text()
        if any(word in text for word in ("succeeded", "failed", "cancelled")):
            return text
        time.sleep(2)
    raise SystemExit(f"the training job did not finish within {timeout_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/screenshots")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--search", type=int, default=50, help="held-out prompts to search for the Generate example")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="spatial-screenshots-"))
    prompt, base_png, tuned_png = pick_example(args.search, args.seed, work)
    print(f"Generate example: {prompt!r}, seed {args.seed}")

    from playwright.sync_api import sync_playwright

    (work / "data").mkdir()
    with running_app(work / "data", {"SPATIAL_LOCAL_USER": "researcher"}) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.get_by_role("button", name="Sign in with Hugging Face").click()
        page.wait_for_selector("text=Signed in as")

        def shot(name: str) -> None:
            page.wait_for_timeout(500)  # let images finish painting
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            print("wrote", out / f"{name}.png")

        page.locator("#generate-prompt textarea").fill(prompt)
        page.locator("#generate-seed input").fill(str(args.seed))
        page.get_by_role("button", name="Generate base vs tuned").click()
        wait_visible(page, "Oracle: satisfied")
        shot("generate")

        page.get_by_role("tab", name="Compare checkpoints").click()
        page.get_by_role("button", name="Compare", exact=True).click()
        wait_visible(page, "win_rate_vs_base")
        shot("compare")

        page.get_by_role("tab", name="Score").click()
        page.locator("#score-prompt textarea").fill(prompt)
        page.locator("#score-image-a input[type=file]").set_input_files(str(base_png))
        page.locator("#score-image-b input[type=file]").set_input_files(str(tuned_png))
        page.get_by_role("button", name="Score", exact=True).click()
        wait_visible(page, "P(A better than B)")
        shot("score")

        page.get_by_role("tab", name="Annotate").click()
        page.wait_for_selector("#annotate-left-image img")
        shot("annotate")

        page.get_by_role("tab", name="SpatialWorld").click()
        page.locator("#world-prompt textarea").fill(prompt)
        page.get_by_role("button", name="Render an ideal scene").click()
        wait_visible(page, "Oracle: satisfied")
        shot("world")

        page.get_by_role("tab", name="Train").click()
        tiny = {"iterations": "2", "prompts_per_iteration": "1", "save_every": "1", "eval_every": "1", "eval_prompts": "2"}
        for field, value in tiny.items():
            page.locator(f"#grpo-{field} input, #grpo-{field} textarea").first.fill(value)
        page.get_by_role("button", name="Start GRPO run").click()
        status = wait_for_job(page, 900)
        if "succeeded" not in status:
            raise SystemExit(f"the training job ended as: {status}")
        page.wait_for_timeout(3000)  # one more poll of the curves and evaluation images
        shot("train")
        browser.close()


if __name__ == "__main__":
    main()
