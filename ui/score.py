"""Score: SpatialScore for one or two uploaded images, P(A better than B), and the other judges."""

from __future__ import annotations

import gradio as gr
from PIL import Image, UnidentifiedImageError

from spatial.world import PromptError, check, parse_prompt

from .context import AppContext
from .format import verdict_markdown
from .generate import clean_prompt, scorer_label

MAX_SIDE = 4096


def load_upload(path: str | None, label: str) -> Image.Image | None:
    """An uploaded file as an RGB image, or a clear error for anything else."""
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            size = im.size
            if max(size) <= MAX_SIDE:
                return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise gr.Error(f"Image {label} is not a readable image file.") from None
    raise gr.Error(f"Image {label} is {size[0]}x{size[1]}; the limit is {MAX_SIDE} px a side.")


def _reward_checkpoints(ctx: AppContext) -> list[tuple[str, str, str]]:
    """(label, value, folder) of every reward run's model: a finished run's own (`run:<job>`) and each
    checkpoint of any run, running or stopped ones too (`run:<job>/step-N`). No server path in a value."""
    out = []
    for ckpt in ctx.jobs.checkpoints("reward"):
        if ckpt["step"] is None:
            if ckpt["status"] == "succeeded":
                out.append((f"reward run {ckpt['job']}", f"run:{ckpt['job']}", ckpt["path"]))
        else:
            out.append((f"reward run {ckpt['job']} · step {ckpt['step']}", f"run:{ckpt['job']}/step-{ckpt['step']}",
                        ckpt["path"]))  # fmt: skip
    return out


def scorer_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """Built-in scorers and every reward run's models."""
    choices = [("Default (SPATIAL_SCORER)", "default"), ("SpatialWorld oracle", "oracle"), ("Zero-shot judge", "judge")]
    return choices + [(label, value) for label, value, _ in _reward_checkpoints(ctx)]


def resolve_scorer(ctx: AppContext, value: str | None) -> str | None:
    """The scorer a request may load: None (the default), a built-in name, or a reward run's model
    folder. Anything else is refused: a request never names a path to load."""
    if value in (None, "", "default"):
        return None
    if value in ("oracle", "judge"):
        return value
    for _, known, folder in _reward_checkpoints(ctx):
        if value == known:
            return folder
    raise gr.Error("Pick a scorer from the list (refresh it with ↻ after a reward run finishes).")


def score_images(ctx: AppContext, prompt, path_a, path_b, scorer_name: str | None = "default") -> str:
    prompt = clean_prompt(prompt)
    name = resolve_scorer(ctx, scorer_name)
    images = [(label, im) for label, im in (("A", load_upload(path_a, "A")), ("B", load_upload(path_b, "B"))) if im is not None]
    if not images:
        raise gr.Error("Upload at least one image.")
    ctx.claim_device()  # a scorer loaded now could take the memory a training job holds
    lines = []
    scorer = ctx.scorer(name)
    if scorer is None:
        lines.append(f"Scorer unavailable: {ctx.scorer_error(name)}")
    else:
        label = scorer_label(scorer)
        try:
            r = scorer.score([prompt] * len(images), [im for _, im in images])
        except Exception as e:  # noqa: BLE001 - e.g. a prompt the toy tokenizer cannot read: a note, the rest still shows
            r = None
            lines.append(ctx.public(f"_{label} could not score this: {e}_"))
        if r is not None and (r.sigma > 0).all():
            lines.append(f"| image | {label} (mu ± sigma) |\n| --- | --- |")
            lines += [f"| {tag} | {r.mu[i]:.3f} ± {r.sigma[i]:.3f} |" for i, (tag, _) in enumerate(images)]
            if len(images) == 2:
                p = scorer.prob_from(r, 0, 1)
                lines.append(f"\n**P(A better than B) = {p:.3f}**")
        elif r is not None:
            # A point score (oracle, judge) ranks but has no spread to turn into a probability.
            lines.append(f"| image | {label} |\n| --- | --- |")
            lines += [f"| {tag} | {r.mu[i]:.3f} |" for i, (tag, _) in enumerate(images)]
            if len(images) == 2:
                a, b = r.mu
                verdict = "A and B score the same" if a == b else f"{'A' if a > b else 'B'} ranks higher"
                lines.append(f"\n**{verdict}** (a point score: no probability)")
    judge = ctx.scorer("judge") if name != "judge" else None  # the judge chosen as scorer is shown above
    if judge is not None:
        try:
            j = judge.score([prompt] * len(images), [im for _, im in images])
            lines.append("\nZero-shot judge P(yes): " + ", ".join(f"{l} {j.mu[i]:.3f}" for i, (l, _) in enumerate(images)))
        except Exception as e:  # noqa: BLE001
            lines.append(ctx.public(f"\nZero-shot judge could not score this: {e}"))
    try:
        spec = parse_prompt(prompt)
        for label, im in images:
            lines.append(f"\n#### Image {label}\n" + verdict_markdown(check(im, spec)))
    except PromptError as e:
        lines.append(f"\n_Oracle: {e}_")
    return "\n".join(lines)


def build_score_tab(ctx: AppContext) -> None:
    gr.Markdown("Upload one or two images and the prompt they were made for.")
    prompt = gr.Textbox(label="Prompt", value="a red circle to the left of a blue square", max_length=500,
                        elem_id="score-prompt")
    with gr.Row():
        a = gr.Image(label="Image A", type="filepath", height=280, elem_id="score-image-a")
        b = gr.Image(label="Image B (optional)", type="filepath", height=280, elem_id="score-image-b")
    with gr.Row():
        # Custom values pass the component so runs finished after page load work over the API;
        # resolve_scorer is the allow-list.
        scorer = gr.Dropdown(label="Scorer", choices=scorer_choices(ctx), value="default", elem_id="score-scorer",
                             allow_custom_value=True)
        refresh = gr.Button("↻", scale=0, min_width=40)
    go = gr.Button("Score", variant="primary")
    out = gr.Markdown()
    go.click(lambda p, x, y, s: score_images(ctx, p, x, y, s), [prompt, a, b, scorer], out, api_name="score_images",
             concurrency_limit=1, concurrency_id="gpu")  # fmt: skip
    refresh.click(lambda: gr.update(choices=scorer_choices(ctx)), None, scorer, api_name=False)
