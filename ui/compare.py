"""Compare checkpoints (researchers): prompts x checkpoints with fixed seeds, mean SpatialScore and
win rate against the base per checkpoint, exported as an image grid, a CSV per checkpoint and one per image."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from spatial.world import PromptError, check, sample_prompts

from .context import AppContext
from .generate import adapter_choices, clean_prompt, clean_size, clean_steps, resolve_adapter, scorer_label, size_choices

MAX_CELLS = 64


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).replace(",", " ").split()]
    except ValueError:
        raise gr.Error("Seeds must be whole numbers separated by commas.") from None
    if not seeds or any(not 0 <= s < 2**31 for s in seeds):
        raise gr.Error("Give at least one seed between 0 and 2147483647.")
    return seeds


SATISFIED, MISSED = (46, 158, 68), (211, 51, 51)


def grid_image(images: list[list[Image.Image]], columns: list[str], row_labels: list[str] | None = None,
               satisfied: list[list[bool | None]] | None = None, cell: int = 128) -> Image.Image:  # fmt: skip
    """Rows x checkpoints; a green frame where the oracle says every relation holds, red where not."""
    rows, head, left = len(images), 18, 96 if row_labels else 0
    grid = Image.new("RGB", (left + cell * len(columns), head + cell * rows), "white")
    draw = ImageDraw.Draw(grid)
    for r, label in enumerate(row_labels or []):
        draw.text((4, head + r * cell + cell // 2 - 12), label, fill="black")
    for c, name in enumerate(columns):
        x = left + c * cell
        draw.text((x + 4, 3), name[:20], fill="black")
        for r in range(rows):
            y = head + r * cell
            verdict = satisfied[r][c] if satisfied else None
            frame = 0 if verdict is None else 3
            if frame:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=SATISFIED if verdict else MISSED)
            inner = cell - 2 * frame
            grid.paste(images[r][c].resize((inner, inner), Image.Resampling.NEAREST), (x + frame, y + frame))
    return grid


def _verdict(image, prompt):
    try:
        return check(image, prompt)
    except PromptError:
        return None


def column_label(value: str) -> str:
    """A grid column's header: `run:<job>/checkpoint-200` is too long for a cell, and cut short every
    run's columns would read alike; the job's random suffix and the step tell them apart."""
    if value.startswith("run:"):
        job, _, name = value[4:].partition("/")
        step = "final" if name == "final" else name.replace("checkpoint-", "step ")
        return f"{job.rsplit('-', 1)[-1]} {step}"
    return value


def run_comparison(ctx: AppContext, prompts_text: str, seeds_text: str, checkpoints: list[str], steps, size,
                   progress=gr.Progress()):  # fmt: skip
    prompts = [clean_prompt(p) for p in str(prompts_text or "").splitlines() if p.strip()]
    if not prompts:
        raise gr.Error("Give at least one prompt (one per line).")
    seeds = parse_seeds(seeds_text)
    checkpoints = ["base"] + [c for c in dict.fromkeys(checkpoints or []) if c != "base"]
    if len(prompts) * len(seeds) * len(checkpoints) > MAX_CELLS:
        raise gr.Error(f"That is more than {MAX_CELLS} images; use fewer prompts, seeds or checkpoints.")
    steps, size = clean_steps(steps), clean_size(ctx, size)
    sources = {c: resolve_adapter(ctx, c) for c in checkpoints if c != "base"}
    ctx.claim_device()
    from spatial.generation.lora import AdapterUnavailableError
    from spatial.generation.service import ModelUnavailableError

    service = ctx.generation
    scorer = ctx.scorer()
    columns, table, images = [], [], {}
    try:
        with service.exclusive():  # the "compare" slot holds this request's checkpoint while it renders
            for k, ckpt in enumerate(checkpoints):
                progress(k / len(checkpoints), desc=f"rendering {ckpt}")
                if ckpt == "base":
                    name = None
                elif ckpt == "bundled":
                    name = "tuned"
                else:
                    name = service.load_adapter(sources[ckpt], "compare")
                images[ckpt] = service.generate(prompts, seeds, int(steps), None, size, adapter=name)
                columns.append(ckpt)
    except (ModelUnavailableError, AdapterUnavailableError, ValueError) as e:
        raise gr.Error(ctx.public(str(e))) from None
    finally:
        service.unload_adapter("compare")  # one run checkpoint in memory at a time, none left behind
    jobs = [(p, s) for p in prompts for s in seeds]
    scores = {ckpt: np.full(len(jobs), np.nan) for ckpt in columns}
    if scorer is None:
        gr.Warning(ctx.public(f"No scores: SpatialScore is unavailable ({ctx.scorer_error()})"))
    else:
        try:
            for ckpt in columns:
                scores[ckpt] = np.asarray(scorer.score([p for p, _ in jobs], images[ckpt]).mu, dtype=float)
        except Exception as e:  # noqa: BLE001 - e.g. prompts the scorer cannot read: keep the renders, say why
            scores = {ckpt: np.full(len(jobs), np.nan) for ckpt in columns}
            gr.Warning(ctx.public(f"No scores: {scorer_label(scorer)} could not score these prompts: {e}"))
    scored = not np.isnan(scores["base"]).any()
    held, per_image = {}, []
    for ckpt in columns:
        # Per prompt: one prompt outside SpatialWorld leaves the others judged.
        verdicts = [_verdict(im, p) for (p, _), im in zip(jobs, images[ckpt])]
        judged = [v for v in verdicts if v is not None]
        held[ckpt] = [None if v is None else v.satisfied for v in verdicts]
        acc = float(np.mean([v.satisfied for v in judged])) if judged else float("nan")
        # Clutter: the reward hack that accuracy misses.
        extras = float(np.mean([len(v.extras) for v in judged])) if judged else float("nan")
        for i, ((p, s), v) in enumerate(zip(jobs, verdicts)):
            per_image.append({"prompt": p, "seed": s, "checkpoint": ckpt, "spatialscore": float(scores[ckpt][i]),
                              "oracle_satisfied": None if v is None else v.satisfied,
                              "unrequested_objects": None if v is None else len(v.extras)})  # fmt: skip
        win = float(np.mean(scores[ckpt] > scores["base"])) if ckpt != "base" and scored else None
        table.append({"checkpoint": ckpt, "mean_spatialscore": float(np.mean(scores[ckpt])) if scored else None,
                      "win_rate_vs_base": win, "oracle_accuracy": acc, "unrequested_objects": extras, "images": len(jobs)})  # fmt: skip
    df = pd.DataFrame(table)
    out = Path(tempfile.mkdtemp(prefix="compare-"))
    index = {p: n + 1 for n, p in enumerate(dict.fromkeys(prompts))}
    grid = grid_image([[images[c][i] for c in columns] for i in range(len(jobs))], [column_label(c) for c in columns],
                      [f"prompt {index[p]}\nseed {s}" for p, s in jobs],
                      [[held[c][i] for c in columns] for i in range(len(jobs))])  # fmt: skip
    grid.save(out / "grid.png")
    df.to_csv(out / "comparison.csv", index=False)  # full precision in the exports, 3 decimals on screen
    pd.DataFrame(per_image).to_csv(out / "images.csv", index=False)
    return grid, df.round(3), [str(out / "grid.png"), str(out / "comparison.csv"), str(out / "images.csv")]


def build_compare_tab(ctx: AppContext) -> None:
    gr.Markdown("Fixed prompts and seeds across checkpoints: the base, the bundled LoRA, and any run's checkpoints.")
    with gr.Row():
        with gr.Column(scale=2):
            prompts = gr.Textbox(label="Prompts (one per line)", lines=5, value="\n".join(sample_prompts(3, 4242)))
            seeds = gr.Textbox(label="Seeds", value="0, 1")
            checkpoints = gr.Dropdown(label="Checkpoints", multiselect=True, choices=adapter_choices(ctx),
                                      value=["bundled"], allow_custom_value=True)  # fmt: skip
            with gr.Row():
                steps = gr.Slider(1, 50, value=ctx.generation.config.steps, step=1, label="Steps")
                size = gr.Dropdown(size_choices(ctx), value=ctx.generation.config.size, label="Size (px)")
            refresh = gr.Button("Refresh checkpoint list")
            go = gr.Button("Compare", variant="primary")
        with gr.Column(scale=3):
            gr.Markdown("Rows: prompt x seed; columns: checkpoints; a green or red frame: the oracle's verdict.")
            # No label: it would sit on the grid's column names.
            grid = gr.Image(label="Grid", show_label=False, type="pil")
            table = gr.Dataframe(label="Per checkpoint", interactive=False)
            files = gr.File(label="Export", file_count="multiple")
    go.click(lambda *a: run_comparison(ctx, *a), [prompts, seeds, checkpoints, steps, size], [grid, table, files],
             api_name="compare_checkpoints", concurrency_limit=1, concurrency_id="gpu")  # fmt: skip
    refresh.click(lambda: gr.update(choices=adapter_choices(ctx)), None, checkpoints, api_name=False)
