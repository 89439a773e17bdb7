"""The Gradio front end. `build_app` composes the tabs; each tab lives in its own module."""

from __future__ import annotations

import gradio as gr

from spatial.settings import AppSettings

from .auth import enable_local_login, user_name
from .annotate import build_annotate_tab
from .compare import build_compare_tab
from .context import AppContext
from .generate import build_generate_tab
from .score import build_score_tab
from .train import build_train_tab
from .world import build_world_tab

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber")
CSS = """
.spatial-header h1 { margin-bottom: 0; }
.spatial-header p { margin-top: 4px; opacity: 0.8; }
/* Gradio 6 lets the slider's images grow to 500 px whatever the component's height, so they are
   cropped; and it shows an image smaller than its frame at its own size (a 32 px image is a speck). */
.gradio-container .slider-wrap img.preview { height: 100%; max-height: 100%; }
.gradio-container .image-container .image-frame img { object-fit: contain; }
/* A LinePlot's block is as tall as its chart, so the legend under the chart is cut off. */
.train-curve { height: auto !important; }
.train-curve .vega-embed { height: 220px !important; }
"""
# The toy FLUX draws 32 px images shown at ~360 px: scaled up smoothly they blur into the background, so
# its images are shown as pixels. Not for full-size presets, whose images are scaled *down*.
PIXEL_CSS = """
.gradio-container img { image-rendering: pixelated; }
"""
MAX_UPLOAD = "25mb"
QUEUE_SIZE = 64  # waiting requests beyond this get "the queue is full" instead of piling up
HEAD = '<meta name="description" content="Spatial Studio: teach text-to-image models spatial layout">'


def build_app(settings: AppSettings | None = None, ctx: AppContext | None = None) -> gr.Blocks:
    settings = settings or AppSettings.from_env()
    enable_local_login(settings)
    ctx = ctx or AppContext(settings)
    with gr.Blocks(title="Spatial Studio") as demo:
        with gr.Row(elem_classes="spatial-header"):
            gr.Markdown(
                "# Spatial Studio\nSpatialScore + Spatial-RL: score, label and train text-to-image models "
                f"on spatial layout. Preset: `{settings.preset}`."
            )
            gr.LoginButton(scale=0)
        who = gr.Markdown(elem_id="who")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                build_generate_tab(ctx, send_to_annotation=ctx.send_pair)
            with gr.Tab("Compare checkpoints", id="compare"):
                build_compare_tab(ctx)
            with gr.Tab("Score", id="score"):
                build_score_tab(ctx)
            with gr.Tab("Annotate", id="annotate"):
                build_annotate_tab(lambda: ctx.annotation, lambda profile, request: user_name(profile),
                                   settings.is_admin, score=ctx.score_one)  # fmt: skip
            with gr.Tab("SpatialWorld", id="world"):
                build_world_tab()
            with gr.Tab("Train", id="train"):
                build_train_tab(ctx)

        def greet(profile: gr.OAuthProfile | None) -> str:
            name = user_name(profile)
            if name is None:
                return "Not signed in: sign in to annotate or train."
            role = "admin" if settings.is_admin(name) else "annotator"
            return f"Signed in as **{name}** ({role})."

        demo.load(greet, None, who, api_name=False)
    return demo


def launch_kwargs(settings: AppSettings) -> dict:
    return {
        "server_name": settings.server_name,
        "server_port": settings.server_port,
        "share": settings.share,  # explicit: Gradio would otherwise decide on its own (e.g. in Colab)
        "theme": THEME,
        "css": CSS + (PIXEL_CSS if settings.preset == "toy" else ""),
        "head": HEAD,
        "show_error": True,
        "max_file_size": MAX_UPLOAD,  # a bigger upload is refused by the server before any handler runs
    }
