"""The Train tab (admins): start reward-model or GRPO runs, watch them, cancel or resume them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from spatial.hub_jobs import HubJobConfig, HubJobError, run_url, submit
from spatial.jobs import MANAGED_SETTINGS, JobError, config_to_args
from spatial.reward.trainer import RewardTrainingConfig
from spatial.rl.config import PRESETS as GRPO_PRESETS
from spatial.rl.config import GRPOConfig

from .context import AppContext
from .forms import DataclassForm

GRPO_FIELDS = ["preset", "base_model", "reward", "reward_model", "group_size", "top_k", "prompts_per_iteration", "iterations", "sample_steps",
               "sde_window", "same_latent", "resolution", "learning_rate", "beta", "lora_rank", "lora_alpha", "save_every", "eval_every", "eval_prompts", "seed"]  # fmt: skip
REWARD_FIELDS = ["pairs", "generate_pairs", "backbone", "init_from", "steps", "batch_size", "learning_rate", "lora_rank",
                 "lora_alpha", "loss", "mc_samples", "sigma_reg", "eval_every", "checkpoint_every", "seed"]  # fmt: skip
JOB_COLUMNS = ["id", "kind", "status", "progress", "owner", "created"]
HUB_FIELDS = ["code_repo", "output_repo", "run_name", "flavor", "num_processes", "timeout", "namespace"]


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else ""


def job_table(ctx: AppContext, profile) -> pd.DataFrame:
    actor = ctx.actor(profile)
    rows = []
    for job in ctx.jobs.list(actor):
        p = ctx.jobs.progress(job.id, actor)
        rows.append([job.id, job.kind, job.status, "" if p is None else f"{p:.0%}", job.owner, _when(job.created)])
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


# The Train tab's curves: one plot per scale (a KL of 1e-4 is a flat line on a reward's axis), each
# metric in one colour whichever job is shown; a plot with none of its metrics in a job is hidden.
CURVE_PANELS = {
    "reward": ("Reward", {"reward_mean": "#f59e0b", "eval_reward": "#a855f7"}),
    "accuracy": ("Accuracy", {"accuracy": "#10b981", "eval_accuracy": "#0ea5e9"}),
    "loss": ("Loss", {"loss": "#4f46e5"}),
    "kl": ("KL to the reference", {"kl": "#ef4444"}),
}


def _iteration_label(folder: str) -> str:
    """`iter-00120` -> "it 120" (short enough for a gallery caption); other names as they are."""
    m = re.fullmatch(r"iter-0*(\d+)", folder)
    return f"it {m.group(1)}" if m else folder


def curve_frames(rows: list[dict]) -> dict[str, pd.DataFrame | None]:
    """Metrics rows (metrics.jsonl) -> one long frame (step, value, metric) per panel of CURVE_PANELS.
    A panel with no points is None, not an empty frame: a LinePlot whose first value is an empty frame
    never draws its lines afterwards (Gradio 6.31: its colour scale is built from that first value)."""
    frames = {}
    for panel, (_, colours) in CURVE_PANELS.items():
        points = [{"step": row["step"], "value": float(row[key]), "metric": key}
                  for row in rows if "step" in row for key in colours if row.get(key) is not None]  # fmt: skip
        frames[panel] = pd.DataFrame(points) if points else None
    return frames


def job_detail(ctx: AppContext, job_id: str | None, profile):
    """Status line, progress, log tail, one curve per panel and the evaluation images of one job."""
    empty = ("", None, "", *(gr.update(value=None, visible=False) for _ in CURVE_PANELS), [])
    if not job_id:
        return empty
    actor = ctx.actor(profile)
    try:
        job = ctx.jobs.get(job_id, actor)
    except JobError:
        return empty
    p = ctx.jobs.progress(job_id, actor)
    status = f"**{job.id}** · {job.kind} · **{job.status}**" + (f" · {job.error}" if job.error else "")
    if job.status == "cancelling":
        status += " · finishing its step and saving a checkpoint; press Cancel again to stop it at once"
    frames = curve_frames(ctx.jobs.metrics(job_id, actor)).values()
    curves = [gr.update(value=frame, visible=frame is not None) for frame in frames]
    images = sorted(Path(job.run_dir).glob("eval/*/*.png"))[-12:]
    gallery = [(str(path), f"{_iteration_label(path.parent.name)} · {path.stem}") for path in images]
    return status, None if p is None else round(100 * p, 1), ctx.jobs.log_tail(job_id, actor), *curves, gallery


def image_key(items: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """What identifies a gallery's contents: each file with its modification time."""
    key = []
    for path, _ in items:
        try:
            key.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            continue
    return key


def gallery_images(items: list[tuple[str, str]]) -> tuple[list[tuple[Image.Image, str]], list[tuple[str, int]]]:
    """Evaluation images as pixels, not paths (Gradio serves only files under the working or temp
    directory, or `allowed_paths`, which would expose every file there; on a Space the runs live under
    /data), and the key of those that loaded: a file a job is still writing is tried again next time."""
    images, loaded = [], []
    for path, caption in items:
        try:
            with Image.open(path) as im:
                images.append((im.convert("RGB"), caption))
            loaded.extend(image_key([(path, caption)]))
        except (OSError, ValueError):
            continue
    return images, loaded


def send_to_hub_jobs(ctx: AppContext, profile, kind: str, trainer: DataclassForm, hub: DataclassForm, values: list,
                     api=None) -> str:  # fmt: skip
    """Submit the trainer form's run to Hugging Face Jobs with the Space's token; a Markdown note
    saying where to watch it. The token goes as a job secret and never into the note."""
    from huggingface_hub import get_token

    if not ctx.actor(profile).is_admin:
        raise gr.Error("only admins can start training jobs: sign in with an admin account")
    n = len(trainer.components)
    try:
        config = trainer.build(list(values[:n]))
        argv = config_to_args({f.name: getattr(config, f.name) for f in trainer.fields})
        cfg = hub.build(list(values[n:]), kind=kind)
    except ValueError as e:
        raise gr.Error(str(e)) from None
    space = ctx.settings.space_id
    if space and cfg.code_repo != space:
        # The job gets this Space's token as a secret: it may only run this Space's own code.
        raise gr.Error(f"code_repo must be this Space ({space}): the job runs with the Space's token")
    token = get_token()
    if not token:
        raise gr.Error("Hugging Face Jobs needs a token: add HF_TOKEN as a secret of the Space (or run `hf auth login`)")
    try:
        job = submit(cfg, argv, token=token, api=api)
    except HubJobError as e:
        raise gr.Error(str(e)) from None
    return (f"Submitted Hugging Face job `{job.id}`: [{job.url}]({job.url}). The run folder goes to "
            f"[{cfg.output_repo}/{cfg.run_name}]({run_url(cfg)}); pick it in Generate by that repo id.")  # fmt: skip


def build_train_tab(ctx: AppContext) -> None:
    gr.Markdown("Start and watch training runs on this machine's accelerator. Admins only.")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Tab("Spatial-RL (GRPO)"):
                grpo = DataclassForm(GRPOConfig, GRPO_FIELDS, defaults=GRPO_PRESETS["toy"], elem_prefix="grpo",
                                     choices={"preset": list(GRPO_PRESETS)}, presets=GRPO_PRESETS)  # fmt: skip
                start_grpo = gr.Button("Start GRPO run", variant="primary")
            with gr.Tab("SpatialScore (reward model)"):
                gr.Markdown("Pairs: a pair folder (SpatialWorld layout, e.g. an annotation export's `pairs/`) "
                            "or a Hub dataset id; empty generates SpatialWorld pairs.")  # fmt: skip
                reward = DataclassForm(RewardTrainingConfig, REWARD_FIELDS, elem_prefix="reward")
                start_reward = gr.Button("Start reward training", variant="primary")
            with gr.Accordion("Run on Hugging Face Jobs instead", open=False):
                gr.Markdown("For runs larger than this machine: the form above runs on Hub hardware under "
                            "`accelerate launch` with the code of this Space mounted, and the run folder is "
                            "uploaded to a model repo. Uses the Space's `HF_TOKEN` secret.")  # fmt: skip
                hub = DataclassForm(HubJobConfig, HUB_FIELDS, elem_prefix="hub")
                with gr.Row():
                    hub_grpo = gr.Button("Send the GRPO form")
                    hub_reward = gr.Button("Send the SpatialScore form")
                hub_note = gr.Markdown(elem_id="hub-job-note")
        with gr.Column(scale=3):
            jobs = gr.Dataframe(headers=JOB_COLUMNS, label="Jobs", interactive=False, wrap=True)
            selected = gr.Dropdown(label="Job", choices=[], allow_custom_value=True)
            status = gr.Markdown(elem_id="train-status")
            progress = gr.Slider(0, 100, label="Progress (%)", interactive=False)
            with gr.Row():
                cancel = gr.Button("Cancel", variant="stop")
                resume = gr.Button("Resume")
            with gr.Row(equal_height=True, elem_id="train-curves"):
                curves = [gr.LinePlot(x="step", y="value", color="metric", color_map=colours, label=label, height=220,
                                      min_width=240, visible=False, elem_id=f"train-curve-{panel}", elem_classes="train-curve")
                          for panel, (label, colours) in CURVE_PANELS.items()]  # fmt: skip
            evals = gr.Gallery(label="Evaluation images over steps", columns=4, height="auto", object_fit="contain")
            log = gr.Textbox(label="Log (tail)", lines=12, max_lines=12, autoscroll=True)
    timer = gr.Timer(2.0)

    def starter(kind: str, form: DataclassForm):
        def start(profile: gr.OAuthProfile | None, *values):
            actor = ctx.actor(profile)
            if not actor.is_admin:
                raise gr.Error("only admins can start training jobs: sign in with an admin account")
            try:
                config = dataclasses.asdict(form.build(list(values)))
                job = ctx.jobs.submit(actor, kind, {k: v for k, v in config.items() if k not in MANAGED_SETTINGS})
            except (JobError, ValueError) as e:
                raise gr.Error(str(e)) from None
            table = job_table(ctx, profile)
            return table, gr.update(choices=list(table["id"]), value=job.id)

        return start

    def refresh(job_id, shown, profile: gr.OAuthProfile | None):
        """Everything the job panel shows; the gallery only when its files changed since `shown` (the
        timer ticks every 2 s: re-sending unchanged images would re-encode them each time)."""
        table = job_table(ctx, profile)
        *detail, items = job_detail(ctx, job_id, profile)
        if image_key(items) == shown:
            gallery, key = gr.skip(), shown
        else:
            gallery, key = gallery_images(items)
        return (table, gr.update(choices=list(table["id"])), *detail, gallery, key)

    def act(fn_name):
        def handler(job_id, shown, profile: gr.OAuthProfile | None):
            if not job_id:
                raise gr.Error("Pick a job first.")
            try:
                getattr(ctx.jobs, fn_name)(job_id, ctx.actor(profile))
            except JobError as e:
                raise gr.Error(str(e)) from None
            return refresh(job_id, shown, profile)

        return handler

    shown = gr.State([])  # (path, mtime) of the images in the gallery now
    outputs = [jobs, selected, status, progress, log, *curves, evals, shown]
    start_grpo.click(starter("grpo", grpo), grpo.components, [jobs, selected], api_name="start_grpo",
                     concurrency_limit=1)  # fmt: skip
    start_reward.click(starter("reward", reward), reward.components, [jobs, selected], api_name="start_reward",
                       concurrency_limit=1)  # fmt: skip

    def hub_sender(kind: str, form: DataclassForm):
        def send(profile: gr.OAuthProfile | None, *values):
            return send_to_hub_jobs(ctx, profile, kind, form, hub, list(values))

        return send

    hub_grpo.click(hub_sender("grpo", grpo), grpo.components + hub.components, hub_note, api_name="hub_job_grpo",
                   concurrency_limit=1)  # fmt: skip
    hub_reward.click(hub_sender("reward", reward), reward.components + hub.components, hub_note,
                     api_name="hub_job_reward", concurrency_limit=1)  # fmt: skip
    # Choosing a preset refills the form with its values (else a flux-dev run would get the toy's).
    grpo.component("preset").input(lambda p: grpo.values_for(GRPO_PRESETS[p]), grpo.component("preset"),
                                   grpo.components, api_name=False)  # fmt: skip
    timer.tick(refresh, [selected, shown], outputs, api_name=False, show_progress="hidden")
    selected.change(refresh, [selected, shown], outputs, api_name=False, show_progress="hidden")
    cancel.click(act("cancel"), [selected, shown], outputs, api_name="cancel_job")
    resume.click(act("resume"), [selected, shown], outputs, api_name="resume_job")
