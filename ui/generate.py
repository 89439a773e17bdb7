"""Generate & compare: one prompt rendered by the base FLUX and the RL-tuned LoRA, same seed,
side by side, each with its SpatialScore and (in the toy world) the oracle's verdict."""

from __future__ import annotations

import math
import re
from pathlib import Path

import gradio as gr

from spatial.world import PromptError, check, parse_prompt, sample_prompts

from .context import AppContext
from .format import verdict_markdown

HARD_PROMPTS = [
    "a red circle to the left of a blue square, and the blue square above a green triangle",
    "a purple diamond below a yellow rectangle; the yellow rectangle on the right side of an orange circle",
    "a green square right of a green circle, while the green circle is above a blue triangle",
    "a blue rectangle under a red square, and the red square left of a purple triangle, and the purple triangle "
    "above an orange diamond",
]
MAX_PROMPT = 500


def clean_prompt(prompt: str | None) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise gr.Error("Type a prompt first.")
    if len(prompt) > MAX_PROMPT:
        raise gr.Error(f"The prompt is {len(prompt)} characters long; keep it under {MAX_PROMPT}.")
    return prompt


def clean_seed(seed) -> int:
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise gr.Error("The seed must be a whole number.") from None
    if not 0 <= value < 2**31:
        raise gr.Error("The seed must be between 0 and 2147483647.")
    return value


def size_choices(ctx: AppContext) -> list[int]:
    """Sizes offered in the UI, with the preset's own (the size its model was trained at) among them."""
    return sorted({32, 64, 128, 256, 512, 1024, ctx.generation.config.size})


def clean_number(value, what: str, lo: float, hi: float, whole: bool = False) -> float:
    """A number from a form or an API call, or a message naming `what` and its range (NaN and
    infinities included, which sliders never send but API callers can)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and lo <= number <= hi) or (whole and not number.is_integer()):
        raise gr.Error(f"{what} must be {'a whole number' if whole else 'a number'} between {lo:g} and {hi:g}.")
    return int(number) if whole else number


def clean_size(ctx: AppContext, size) -> int:
    """An image side in pixels; None (a cleared dropdown, an API call without it) means the preset's."""
    if size is None or size == "":
        return int(ctx.generation.config.size)
    size = int(clean_number(size, "Size", 16, 2048, whole=True))
    if size % 16:
        raise gr.Error(f"Size must be a multiple of 16, got {size}.")
    return size


def clean_steps(steps) -> int:
    return clean_number(steps, "Steps", 1, 100, whole=True)


def clean_guidance(guidance) -> float:
    return clean_number(guidance, "Guidance", 0, 30)


def scorer_label(scorer) -> str:
    name = getattr(scorer, "name", "score")
    return {"spatialscore": "SpatialScore", "oracle": "Oracle score", "judge": "Judge P(yes)"}.get(name, name)


def score_lines(ctx: AppContext, prompt: str, images: list) -> list[str]:
    """One markdown block per image: SpatialScore (mu +- sigma) and the oracle verdict if readable."""
    scorer = ctx.scorer()
    scores, note = None, ""
    if scorer is not None:
        try:
            scores = scorer.score([prompt] * len(images), images)
        except Exception as e:  # noqa: BLE001 - a prompt the scorer cannot read: say so, keep the images
            scores, note = None, ctx.public(f"SpatialScore could not score this: {e}")
    else:
        note = f"SpatialScore unavailable ({ctx.scorer_error()})"
    try:
        spec = parse_prompt(prompt)
    except PromptError:
        spec = None
    label = scorer_label(scorer)
    blocks = []
    for i, image in enumerate(images):
        # The oracle and the judge give a point score: a "± 0.000" would read as a measured certainty.
        spread = f" ± {scores.sigma[i]:.3f}" if scores is not None and scores.sigma[i] > 0 else ""
        head = f"**{label} {scores.mu[i]:.3f}{spread}**" if scores is not None else note
        body = verdict_markdown(check(image, spec)) if spec is not None else "_Oracle: prompt outside the toy world._"
        blocks.append(head + "\n\n" + body)
    return blocks




def adapter_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """The bundled LoRA and every finished GRPO checkpoint, as (label, value). Values name runs by
    job id (`run:<job>/<checkpoint>`), so no server path reaches the page."""
    choices = [("Bundled RL LoRA", "bundled")]
    for ckpt in ctx.jobs.checkpoints("grpo"):
        name = Path(ckpt["path"]).name
        label = f"run {ckpt['job']} · {'final' if name == 'final' else 'step ' + str(ckpt['step'])}"
        choices.append((label, f"run:{ckpt['job']}/{name}"))
    return choices


def is_hub_id(value: str) -> bool:
    """`owner/name` as the Hub spells repo ids (huggingface_hub's own check, plus exactly one slash)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return value.count("/") == 1


def resolve_adapter(ctx: AppContext, value: str | None) -> str:
    """What a request may load as the tuned adapter: `bundled`, a listed run checkpoint (returned as
    its folder), or a Hub repo id. Anything path-like is refused: visitors never read server files."""
    value = (value or "bundled").strip()
    if value == "bundled":
        return value
    if value.startswith("run:"):
        for ckpt in ctx.jobs.checkpoints("grpo"):
            if value == f"run:{ckpt['job']}/{Path(ckpt['path']).name}":
                return ckpt["path"]
        raise gr.Error("That training run has no such checkpoint; refresh the list (↻) and pick again.")
    if is_hub_id(value) and not Path(value).exists():
        return value
    raise gr.Error(f"no LoRA adapter {value[:100]!r}: pick one from the list or type a Hub repo id (owner/name).")


def send_pair(state: dict | None, send_to_annotation) -> str:
    """Queue the last generated pair for annotation; a message either way."""
    if not state:
        raise gr.Error("Generate a pair first.")
    if send_to_annotation is None:
        raise gr.Error("Annotation is not configured in this app.")
    from spatial.annotation.errors import AnnotationError

    try:
        return send_to_annotation(state)
    except AnnotationError as e:  # e.g. the LoRA changed nothing and both images are identical
        reason = re.sub(r"^pair \d+: ", "", str(e))
        raise gr.Error(f"Not queued: {reason}.") from None


def build_generate_tab(ctx: AppContext, send_to_annotation=None) -> None:
    gr.Markdown("Render a spatial prompt with the base model and the RL-tuned LoRA: same pipeline, same seed.")
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", value=HARD_PROMPTS[0], lines=2, max_length=MAX_PROMPT, elem_id="generate-prompt")
            gr.Examples([[p] for p in HARD_PROMPTS + sample_prompts(4, 77)], inputs=prompt, label="Examples")
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, elem_id="generate-seed")
                steps = gr.Slider(1, 50, value=ctx.generation.config.steps, step=1, label="Steps")
            with gr.Row():
                guidance = gr.Slider(0.0, 10.0, value=ctx.generation.config.guidance, step=0.5, label="Guidance")
                size = gr.Dropdown(size_choices(ctx), value=ctx.generation.config.size, label="Size (px)")
            with gr.Row():
                adapter = gr.Dropdown(label="Tuned adapter", elem_id="generate-adapter", choices=adapter_choices(ctx), value="bundled",
                                      allow_custom_value=True, info="Bundled, a finished run, or a Hub id")  # fmt: skip
                refresh = gr.Button("↻", scale=0, min_width=40)
            go = gr.Button("Generate base vs tuned", variant="primary")
        with gr.Column(scale=3):
            slider = gr.ImageSlider(label="Base ◀ ▶ RL-tuned", type="pil", height=360)
            with gr.Row():
                base_info = gr.Markdown(label="Base")
                tuned_info = gr.Markdown(label="Tuned")
            send = gr.Button("Send this pair to annotation", interactive=False)
            sent = gr.Markdown()
    pair = gr.State(None)

    def render(prompt, seed, steps, guidance, size, adapter, progress=gr.Progress()):
        prompt, seed = clean_prompt(prompt), clean_seed(seed)
        steps, guidance, size = clean_steps(steps), clean_guidance(guidance), clean_size(ctx, size)
        source = resolve_adapter(ctx, adapter)
        ctx.claim_device()
        from spatial.generation.lora import AdapterUnavailableError
        from spatial.generation.service import ModelUnavailableError

        service = ctx.generation
        progress(0, desc="loading the model")
        try:
            with service.exclusive():  # nobody else's adapter gets into the "picked" slot before we render
                if source != "bundled":
                    service.load_adapter(source, "picked")
                    name = "picked"
                else:
                    name = "tuned"
                # No RL LoRA yet (the embedded default before any RL run): the base side still renders.
                missing = service.tuned_status() if name == "tuned" else None
                if missing:
                    base, tuned = service.generate(prompt, [seed], int(steps), float(guidance), size)[0], None
                else:
                    base, tuned = service.compare(prompt, seed, int(steps), float(guidance), size, adapter=name)
        except (ModelUnavailableError, AdapterUnavailableError, ValueError) as e:
            raise gr.Error(ctx.public(str(e))) from None
        progress(0.9, desc="scoring")
        images = [base] if tuned is None else [base, tuned]
        b, *t = score_lines(ctx, prompt, images)
        t = t[0] if t else f"_{missing}_"
        state = {"prompt": prompt, "seed": seed, "adapter": adapter, "images": images} if tuned is not None else None
        return (base, tuned), "### Base\n" + b, "### RL-tuned\n" + t, state, gr.update(interactive=state is not None), ""

    go.click(render, [prompt, seed, steps, guidance, size, adapter], [slider, base_info, tuned_info, pair, send, sent],
             api_name="generate_pair", concurrency_limit=1, concurrency_id="gpu")  # fmt: skip
    refresh.click(lambda: gr.update(choices=adapter_choices(ctx)), None, adapter, api_name=False)
    send.click(lambda state: send_pair(state, send_to_annotation), pair, sent, api_name="send_pair_to_annotation")

