"""A real app process on the toy preset and a real browser (Debian chromium via Playwright)."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Screenshots of each tab go to a temporary folder (SPATIAL_SCREENSHOTS picks another). They show the tiny
# random FLUX's noise; docs/screenshots comes from bench/app_screenshots.py, on the bundled models.
SCREENSHOTS = Path(os.environ.get("SPATIAL_SCREENSHOTS", Path(tempfile.gettempdir()) / "spatial-screenshots"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _models(root: Path) -> dict:
    """A tiny random FLUX in the Hub layout and a LoRA for it: the app loads them through the same
    FluxPipeline.from_pretrained / load_lora_weights calls it uses for the bundled toy model."""
    import torch

    from spatial.generation.lora import add_lora, save_lora
    from tests.helpers.tiny_flux import tiny_flux_pipeline

    pipe = tiny_flux_pipeline()
    pipe.save_pretrained(root / "flux")
    add_lora(pipe.transformer, rank=4, alpha=8, adapter_name="tuned")
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    save_lora(pipe.transformer, root / "lora", adapter_name="tuned")
    return {"SPATIAL_BASE_MODEL": str(root / "flux"), "SPATIAL_LORA": str(root / "lora")}


@contextlib.contextmanager
def running_app(data: Path, settings: dict):
    """`python app.py` in its own process with these settings; yields its URL, stops it afterwards."""
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "SPATIAL_DATA_DIR": str(data),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **settings}  # fmt: skip
    log = open(data / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited early:\n{(data / 'app.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError("app did not start within 180 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    models = _models(tmp_path_factory.mktemp("models"))
    settings = {"SPATIAL_LOCAL_USER": "tester", "SPATIAL_SCORER": "oracle", "SPATIAL_SEED_PAIRS": "6", **models}
    with running_app(tmp_path_factory.mktemp("app-data"), settings) as url:
        yield url, models


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is required for browser tests: apt-get install chromium (make test does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )  # fmt: skip
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url[0])
    pg.wait_for_selector("text=Spatial Studio")
    yield pg
    context.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
