"""The SpatialWorld tab: the toy world's prompts, an ideal render, and the oracle's verdict."""

from __future__ import annotations

import random

import gradio as gr

from spatial.world import PromptError, check, parse_prompt, render, sample_example
from spatial.world.sampler import scene_for

from .format import verdict_markdown


def random_prompt() -> str:
    return sample_example(random.randrange(10**9)).prompt


def render_prompt(prompt: str, seed: float | None, size: float | None):
    """A scene that satisfies the prompt, drawn at `size` pixels, and the oracle's reading of it."""
    try:
        spec = parse_prompt(prompt)
        image = render(scene_for(spec, int(seed or 0)), int(size or 256))
    except (PromptError, ValueError) as e:
        raise gr.Error(str(e)) from None
    return image, verdict_markdown(check(image, spec))


def judge_image(prompt: str | None, image):
    if image is None:
        raise gr.Error("Upload an image to judge.")
    if not (prompt or "").strip():
        raise gr.Error("Type the prompt the image should show.")
    try:
        return verdict_markdown(check(image, prompt))
    except PromptError as e:
        raise gr.Error(str(e)) from None


def build_world_tab() -> None:
    gr.Markdown(
        "The toy world every offline model here is trained on: coloured shapes in spatial relations, "
        "with an exact rule-based judge (the oracle) that reads relations off pixels."
    )
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", value="a red circle to the left of a blue square", max_length=500, elem_id="world-prompt")
            with gr.Row():
                seed = gr.Number(label="Layout seed", value=0, precision=0, minimum=0)
                size = gr.Slider(32, 512, value=256, step=16, label="Size (px)")
            with gr.Row():
                sample = gr.Button("Random prompt")
                draw = gr.Button("Render an ideal scene", variant="primary")
        with gr.Column(scale=3):
            image = gr.Image(label="Scene", type="pil", height=320)
            verdict = gr.Markdown()
    sample.click(random_prompt, outputs=prompt, api_name="sample_prompt")
    draw.click(render_prompt, [prompt, seed, size], [image, verdict], api_name="render_scene")
    image.upload(judge_image, [prompt, image], verdict, api_name="oracle_check")
