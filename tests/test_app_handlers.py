"""The Generate, Compare, Score and SpatialWorld handlers and the app's settings, called in-process:
who may be admin, what a request may load, and the messages bad input gets."""

import math
import time
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from spatial.jobs import Actor, JobManager
from spatial.settings import REPO_ROOT, AppSettings
from ui.context import AppContext
from ui.generate import adapter_choices, clean_guidance, clean_steps, resolve_adapter, send_pair
from ui.score import MAX_SIDE, load_upload, resolve_scorer, scorer_choices
from ui.world import judge_image

ADMIN = Actor("alice", is_admin=True)


@pytest.fixture
def ctx(tmp_path):
    """An app context whose job manager runs the contract-following stand-in trainer for both kinds."""
    c = AppContext(AppSettings(data_dir=tmp_path, local_user="alice"))
    c.jobs = JobManager(tmp_path / "jobs", trainers={"grpo": "tests.helpers.job_trainer", "reward": "tests.helpers.job_trainer"},
                        poll_s=0.1, use_accelerate=False)  # fmt: skip
    yield c
    c.jobs.close()


def finished(ctx, kind, **config):
    job = ctx.jobs.submit(ADMIN, kind, {"steps": 2, "step_seconds": 0.05, **config})
    deadline = time.time() + 60
    while ctx.jobs.get(job.id, ADMIN).status != "succeeded":
        assert time.time() < deadline and ctx.jobs.get(job.id, ADMIN).status != "failed"
        time.sleep(0.1)
    return job


# ---- who is an admin ----------------------------------------------------------------------------


def test_locally_the_signed_in_local_user_is_the_admin():
    settings = AppSettings.from_env({"SPATIAL_LOCAL_USER": "alice"})
    assert settings.server_name == "127.0.0.1" and settings.is_admin("alice") and not settings.is_admin("bob")


def test_off_a_space_on_a_public_address_the_stand_in_login_gives_nobody_admin_rights():
    exposed = AppSettings.from_env({"SPATIAL_LOCAL_USER": "alice", "GRADIO_SERVER_NAME": "0.0.0.0"})
    assert not exposed.is_admin("alice")
    named = AppSettings.from_env({"SPATIAL_ADMINS": "alice", "GRADIO_SERVER_NAME": "0.0.0.0"})
    assert not named.is_admin("alice")  # anyone clicking the stand-in button would be alice
    trusted = AppSettings.from_env({"SPATIAL_LOCAL_USER": "alice", "GRADIO_SERVER_NAME": "0.0.0.0", "SPATIAL_REMOTE_ADMIN": "1"})
    assert trusted.is_admin("alice")


def test_a_share_link_reaches_a_loopback_server_from_anywhere_so_it_gives_no_admin_rights():
    shared = AppSettings.from_env({"SPATIAL_LOCAL_USER": "alice", "GRADIO_SHARE": "1"})
    assert shared.server_name == "127.0.0.1" and shared.share and not shared.is_admin("alice")


@pytest.mark.parametrize("value", ["nan", "-1", "soon", "inf"])
def test_a_cancel_grace_period_that_is_not_seconds_is_refused_at_start(value):
    with pytest.raises(ValueError, match="SPATIAL_CANCEL_GRACE_S must be a number of seconds"):
        AppSettings.from_env({"SPATIAL_CANCEL_GRACE_S": value})


def test_on_a_space_the_owner_is_admin_through_real_oauth_on_any_address():
    space = AppSettings.from_env({"SPACE_ID": "owner/studio"})
    assert space.server_name == "0.0.0.0" and space.is_admin("owner") and not space.is_admin("visitor")


def test_the_cancel_grace_period_is_a_setting_the_job_manager_uses(tmp_path):
    ctx = AppContext(AppSettings.from_env({"SPATIAL_DATA_DIR": str(tmp_path), "SPATIAL_CANCEL_GRACE_S": "900"}))
    try:
        assert ctx.jobs.cancel_grace_s == 900
    finally:
        ctx.jobs.close()


# ---- what a request may load ----------------------------------------------------------------------


def test_adapter_choices_name_runs_by_job_id_and_resolve_to_their_checkpoint_folders(ctx):
    job = finished(ctx, "grpo")
    values = [v for _, v in adapter_choices(ctx)]
    assert values == ["bundled", f"run:{job.id}/checkpoint-2", f"run:{job.id}/final"]
    assert not any(str(ctx.settings.data_dir) in v for v in values)  # no server path reaches the page
    assert resolve_adapter(ctx, f"run:{job.id}/final") == f"{job.run_dir}/final"
    assert resolve_adapter(ctx, "bundled") == "bundled" and resolve_adapter(ctx, "") == "bundled"
    assert resolve_adapter(ctx, "someone/spatial-rl-lora") == "someone/spatial-rl-lora"  # a Hub id


@pytest.mark.parametrize("value", ["/etc", "../../etc/passwd", "assets/toy", "assets/toy/rl-lora", "run:nope/final",
                                   "a/b/c", "~/.cache"])  # fmt: skip
def test_adapter_values_that_are_paths_or_unknown_runs_are_refused(ctx, value):
    with pytest.raises(gr.Error, match="no LoRA adapter|no such checkpoint"):
        resolve_adapter(ctx, value)


def test_scorer_choices_offer_reward_runs_and_their_checkpoints_by_job_id_and_nothing_else_loads(ctx, tmp_path):
    job = finished(ctx, "reward", finish="model")
    assert (f"reward run {job.id}", f"run:{job.id}") in scorer_choices(ctx)
    assert resolve_scorer(ctx, f"run:{job.id}") == job.run_dir
    assert resolve_scorer(ctx, "default") is None and resolve_scorer(ctx, "oracle") == "oracle"
    for value in (job.run_dir, str(REPO_ROOT / "assets/toy/spatialscore"), "run:nope", "spatialscore",
                  f"run:{job.id}/step-7"):  # fmt: skip
        with pytest.raises(gr.Error, match="Pick a scorer from the list"):
            resolve_scorer(ctx, value)
    # A reward run's resumable checkpoints are whole models too, so they are offered, even of a run
    # that stopped before its end.
    step = Path(job.run_dir) / "checkpoints" / "step-200"
    step.mkdir(parents=True)
    (step / "spatialscore_config.json").write_text("{}")
    assert (f"reward run {job.id} · step 200", f"run:{job.id}/step-200") in scorer_choices(ctx)
    assert resolve_scorer(ctx, f"run:{job.id}/step-200") == str(step)


def test_messages_for_visitors_show_server_folders_relative(ctx):
    text = f"no model at {REPO_ROOT}/assets/toy/flux nor {ctx.settings.data_dir}/jobs/runs/x"
    assert ctx.public(text) == "no model at assets/toy/flux nor $SPATIAL_DATA_DIR/jobs/runs/x"


def test_only_whole_path_components_are_rewritten():
    ctx = AppContext(AppSettings(data_dir=Path("/data")))  # a Space's persistent storage
    text = "see https://huggingface.co/datasets/x, /data/jobs and /srv/data/y"
    assert ctx.public(text) == "see https://huggingface.co/datasets/x, $SPATIAL_DATA_DIR/jobs and /srv/data/y"


# ---- bad input, clear messages --------------------------------------------------------------------


def test_an_oversized_upload_is_named_as_too_big_and_a_corrupt_one_as_unreadable(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (MAX_SIDE + 1, 8)).save(big)
    with pytest.raises(gr.Error, match=f"Image A is {MAX_SIDE + 1}x8; the limit is {MAX_SIDE} px"):
        load_upload(str(big), "A")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(gr.Error, match="Image B is not a readable image file"):
        load_upload(str(broken), "B")
    fine = tmp_path / "fine.png"
    Image.new("L", (16, 16)).save(fine)
    assert load_upload(str(fine), "A").mode == "RGB"


@pytest.mark.parametrize("value", [math.nan, math.inf, -1, 31, "lots", None])
def test_guidance_must_be_a_finite_number_in_range(value):
    with pytest.raises(gr.Error, match="Guidance must be"):
        clean_guidance(value)


@pytest.mark.parametrize("value", [math.nan, 0, 101, "x"])
def test_steps_must_be_a_whole_number_in_range(value):
    with pytest.raises(gr.Error, match="Steps must be"):
        clean_steps(value)


def test_the_oracle_asks_for_a_prompt_instead_of_crashing_without_one():
    image = Image.new("RGB", (32, 32), "white")
    for prompt in (None, "", "   "):
        with pytest.raises(gr.Error, match="Type the prompt"):
            judge_image(prompt, image)


def test_a_pair_of_identical_images_is_not_queued_for_annotation_and_says_why(ctx):
    same = Image.new("RGB", (32, 32), "white")
    state = {"prompt": "a red circle left of a blue square", "seed": 0, "adapter": "bundled", "images": [same, same.copy()]}
    with pytest.raises(gr.Error, match="Not queued: both images are identical"):
        send_pair(state, ctx.send_pair)
    with pytest.raises(gr.Error, match="Generate a pair first"):
        send_pair(None, ctx.send_pair)


def test_choosing_the_flux_dev_preset_refills_the_grpo_form_with_its_values():
    from spatial.rl.config import PRESETS, GRPOConfig
    from ui.forms import DataclassForm
    from ui.train import GRPO_FIELDS

    form = DataclassForm(GRPOConfig, GRPO_FIELDS, defaults=PRESETS["toy"], choices={"preset": list(PRESETS)},
                         presets=PRESETS)  # fmt: skip
    assert isinstance(form.component("preset"), gr.Dropdown)
    values = dict(zip([f.name for f in form.fields], form.values_for(PRESETS["flux-dev"])))
    assert (values["preset"], values["resolution"], values["group_size"], values["top_k"]) == ("flux-dev", 512, 24, 6)
    # Fields the form does not show (eval_steps, gradient checkpointing, ...) come from the chosen preset too.
    assert form.build(form.values_for(PRESETS["flux-dev"])) == GRPOConfig(**PRESETS["flux-dev"])


def test_training_form_labels_spell_acronyms_the_way_the_field_means_them():
    from spatial.rl.config import PRESETS, GRPOConfig
    from ui.forms import DataclassForm
    from ui.train import GRPO_FIELDS

    form = DataclassForm(GRPOConfig, GRPO_FIELDS, defaults=PRESETS["toy"])
    labels = {f.name: c.label for f, c in zip(form.fields, form.components)}
    assert (labels["sde_window"], labels["lora_rank"], labels["learning_rate"]) == ("SDE window", "LoRA rank", "Learning rate")


@pytest.mark.parametrize("field, value", [("learning_rate", math.nan), ("beta", math.inf), ("iterations", math.inf)])
def test_a_training_form_with_a_number_that_is_not_finite_is_refused_by_field(field, value):
    from spatial.rl.config import PRESETS, GRPOConfig
    from ui.forms import DataclassForm
    from ui.train import GRPO_FIELDS

    form = DataclassForm(GRPOConfig, GRPO_FIELDS, defaults=PRESETS["toy"])
    values = dict(zip([f.name for f in form.fields], form.values_for(PRESETS["toy"])))
    with pytest.raises(ValueError, match="finite number"):
        form.build(list({**values, field: value}.values()))


def test_the_oracle_verdict_lists_objects_the_prompt_did_not_ask_for_and_says_when_one_is_a_second_copy():
    from spatial.world import Scene, SceneObject, render

    named = (SceneObject("red", "circle", 0.25, 0.5, 0.2), SceneObject("blue", "square", 0.75, 0.5, 0.2))
    extra = SceneObject("yellow", "triangle", 0.5, 0.15, 0.2)
    clean = judge_image("a red circle left of a blue square", render(Scene(named, (240, 240, 240)), 64))
    cluttered = judge_image("a red circle left of a blue square", render(Scene(named + (extra,), (240, 240, 240)), 64))
    assert "Oracle: satisfied" in clean and "not asked for" not in clean
    assert "Oracle: satisfied" in cluttered and "not asked for: a yellow triangle" in cluttered
    copy = SceneObject("red", "circle", 0.5, 0.85, 0.2)
    doubled = judge_image("a red circle left of a blue square", render(Scene(named + (copy,), (240, 240, 240)), 64))
    assert "not asked for: another red circle" in doubled


def test_a_point_scorer_is_shown_without_a_spread_and_a_gaussian_one_with_it(ctx, monkeypatch):
    from spatial.world import render
    from spatial.world.grammar import parse_prompt
    from spatial.world.sampler import scene_for
    from ui.generate import score_lines

    prompt = "a red circle left of a blue square"
    image = render(scene_for(parse_prompt(prompt)), 64)
    monkeypatch.setenv("SPATIAL_SCORER", "oracle")
    (oracle,) = score_lines(ctx, prompt, [image])
    assert oracle.startswith("**Oracle score 1.000**")  # no "± 0.000": the oracle has no uncertainty
    monkeypatch.setenv("SPATIAL_SCORER", "spatialscore")  # the bundled toy SpatialScore
    (gaussian,) = score_lines(ctx, prompt, [image])
    assert gaussian.startswith("**SpatialScore ") and "±" in gaussian.splitlines()[0]


def test_each_curve_scale_gets_its_own_plot_and_a_plot_without_points_is_hidden():
    from ui.train import curve_frames

    grpo = [{"step": 1, "reward_mean": -5.0, "kl": 1e-4, "loss": 0.02}, {"step": 2, "reward_mean": -4.0, "kl": 2e-4,
            "loss": 0.01, "eval_accuracy": 0.5, "eval_reward": -3.5}]  # fmt: skip
    frames = curve_frames(grpo)
    assert sorted(frames["reward"]["metric"].unique()) == ["eval_reward", "reward_mean"]
    assert list(frames["kl"]["value"]) == [1e-4, 2e-4]  # on its own axis, not flattened under the reward
    assert list(frames["accuracy"]["step"]) == [2]
    reward_training = curve_frames([{"step": 1, "loss": 0.7, "accuracy": 0.5, "sigma": 1.0}])
    assert reward_training["reward"] is None and reward_training["kl"] is None
    assert list(reward_training["accuracy"]["value"]) == [0.5]


def test_the_train_tab_shows_evaluation_images_of_runs_kept_outside_the_working_and_temp_directories(ctx, tmp_path,
                                                                                                   monkeypatch):  # fmt: skip
    # A Space keeps its runs under /data: neither the working directory nor the temp directory, the
    # only places Gradio sends files from. The handlers must still show that run's images.
    import asyncio
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from gradio.state_holder import SessionState

    from ui.train import build_train_tab

    job = finished(ctx, "grpo")
    folder = Path(job.run_dir) / "eval" / "iter-00001"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "00-seed0.png")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    ctx.actor = lambda profile: ADMIN
    with gr.Blocks() as demo:
        build_train_tab(ctx)
    demo.has_launched = True  # Gradio checks file paths only once launched
    refresh = next(f for f in demo.fns.values() if any(t[1] == "change" for t in f.targets))
    session = SessionState(demo)

    def call():  # in a thread of its own: the browser tests' Playwright may hold this thread's event loop
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, demo.process_api(refresh, [job.id, None], state=session)).result()["data"]

    gallery = call()[-2]
    assert len(gallery) == 1 and gallery[0]["caption"] == "it 1 · 00-seed0"
    assert Path(gallery[0]["image"]["path"]).is_file()
    # The next tick, with nothing new, leaves the gallery as it is instead of sending the images again.
    again = call()[-2]
    assert again == {"__type__": "update"}


def test_the_score_tab_ranks_by_a_point_scorer_without_a_probability_and_notes_a_scorer_that_fails(ctx, tmp_path):
    from spatial.world import render
    from spatial.world.grammar import parse_prompt
    from spatial.world.sampler import scene_for
    from ui.score import score_images

    prompt = "a red circle left of a blue square"
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    render(scene_for(parse_prompt(prompt)), 64).save(good)
    render(scene_for(parse_prompt("a red circle right of a blue square")), 64).save(bad)
    judged = score_images(ctx, prompt, str(good), str(bad), "judge")
    assert "±" not in judged and "P(A better than B)" not in judged  # P(yes) has no spread to compare
    assert "ranks higher** (a point score: no probability)" in judged
    # A scorer that cannot read the prompt is a note naming it; the oracle's verdicts still show.
    unreadable = score_images(ctx, "a red cat left of a blue dog", str(good), str(bad), "oracle")
    assert "_Oracle score could not score this:" in unreadable and "Oracle:" in unreadable


def test_a_comparison_whose_prompts_the_scorer_cannot_read_keeps_its_renders_and_claims_no_win_rate(ctx, monkeypatch):
    from ui.compare import run_comparison

    monkeypatch.setenv("SPATIAL_SCORER", "oracle")  # reads SpatialWorld's words only
    warnings = []
    monkeypatch.setattr(gr, "Warning", lambda message: warnings.append(message))
    grid, table, files = run_comparison(ctx, "a red cat left of a blue dog", "0", ["bundled"], 2, 32,
                                        progress=lambda *a, **k: None)  # fmt: skip
    assert grid.size[0] > 0 and len(files) == 3
    assert table["mean_spatialscore"].isna().all() and table["win_rate_vs_base"].isna().all()  # not 0.0
    assert warnings and "could not score these prompts" in warnings[0]


def test_of_reward_run_checkpoints_only_the_last_one_asked_for_stays_loaded_and_a_failed_load_is_retried(ctx, monkeypatch):
    import ui.context as context

    loads = []

    def load_scorer(name):
        loads.append(name)
        if name.endswith("broken"):
            raise FileNotFoundError(f"{name} is being written")
        return object()

    monkeypatch.setattr("spatial.scorers.load_scorer", load_scorer)
    ctx.scorer("oracle")
    for folder in ("runs/a/step-2", "runs/a/step-4", "runs/a/step-6"):
        ctx.scorer(folder)
    assert set(ctx._scorers) == {"oracle", "runs/a/step-6"}  # a visitor cannot pile models up in memory
    assert ctx.scorer("runs/a/broken") is None and "being written" in ctx.scorer_error("runs/a/broken")
    ctx.scorer("runs/a/broken")
    assert loads.count("runs/a/broken") == 1  # not retried at once...
    monkeypatch.setattr(context, "SCORER_RETRY_S", 0.0)
    ctx.scorer("runs/a/broken")
    assert loads.count("runs/a/broken") == 2  # ...but not remembered as broken forever


def test_a_missing_size_means_the_preset_s_and_a_bad_one_is_refused_by_name(ctx):
    from ui.generate import clean_size

    assert clean_size(ctx, None) == ctx.generation.config.size and clean_size(ctx, "64") == 64
    for bad, message in (("abc", "Size must be"), (30, "multiple of 16"), (4096, "Size must be")):
        with pytest.raises(gr.Error, match=message):
            clean_size(ctx, bad)


def test_compare_judges_each_prompt_apart_and_names_run_columns_by_job_and_step(ctx, monkeypatch):
    from ui.compare import column_label, run_comparison

    assert column_label("run:20261207-121751-2e1fc4/checkpoint-200") == "2e1fc4 step 200"
    assert column_label("run:20261207-121751-2e1fc4/final") == "2e1fc4 final"
    assert column_label("bundled") == "bundled"
    monkeypatch.setattr(gr, "Warning", lambda message: None)
    prompts = "a red circle left of a blue square\na photo of a cat"
    _, table, _ = run_comparison(ctx, prompts, "0", [], 2, 32, progress=lambda *a, **k: None)
    assert not table["oracle_accuracy"].isna().any()  # the cat does not wipe out the circle's verdict


def test_two_visitors_generating_with_different_checkpoints_at_once_each_get_their_own(ctx):
    # Off a Space, API calls may reach the handler side by side; the "picked" adapter slot is shared,
    # so loading a checkpoint and rendering with it must not interleave with another request.
    import shutil
    import threading

    import numpy as np
    from safetensors.torch import load_file, save_file

    from ui.generate import build_generate_tab

    job = finished(ctx, "grpo")
    for folder, scale in (("checkpoint-2", 4.0), ("final", -4.0)):
        dst = Path(job.run_dir) / folder
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(REPO_ROOT / "assets" / "toy" / "rl-lora", dst)
        weights = dst / "pytorch_lora_weights.safetensors"
        save_file({k: v * scale if "lora_B" in k else v for k, v in load_file(weights).items()}, weights)
    with gr.Blocks() as demo:
        build_generate_tab(ctx, send_to_annotation=lambda state: "")
    render = next(f.fn for f in demo.fns.values() if f.name == "render")
    prompt, picks = "a red circle to the left of a blue square", [f"run:{job.id}/checkpoint-2", f"run:{job.id}/final"]

    def tuned(pick):
        return np.asarray(render(prompt, 0, 6, 3.5, 32, pick, lambda *a, **k: None)[0][1])

    alone = {pick: tuned(pick) for pick in picks}
    assert not np.array_equal(*alone.values())
    got = []
    for _ in range(6):
        threads = [threading.Thread(target=lambda p=pick: got.append((p, tuned(p)))) for pick in picks]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert len(got) == 12 and all(np.array_equal(image, alone[pick]) for pick, image in got)


# ---- CPU threads ---------------------------------------------------------------------------------


def test_renders_on_a_cpu_take_one_thread_while_a_training_job_shares_the_cores(ctx, monkeypatch):
    import os

    import torch

    monkeypatch.delenv("SPATIAL_CPU_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = torch.get_num_threads()
    try:
        job = ctx.jobs.submit(ADMIN, "grpo", {"steps": 200, "step_seconds": 0.05})
        deadline = time.time() + 60
        while ctx.jobs.get(job.id, ADMIN).status != "running":
            assert time.time() < deadline
            time.sleep(0.05)
        ctx.claim_device()
        assert torch.get_num_threads() == 1
        ctx.jobs.cancel(job.id, ADMIN)
        while ctx.jobs.gpu_busy():
            assert time.time() < deadline
            time.sleep(0.05)
        ctx.claim_device()
        assert torch.get_num_threads() == min(2, len(os.sched_getaffinity(0)))
    finally:
        torch.set_num_threads(before)


def test_on_a_gpu_a_running_training_job_turns_renders_away_with_a_clear_message(ctx, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the job owns the device
    ctx.claim_device()  # no job: the render may go ahead
    job = ctx.jobs.submit(ADMIN, "grpo", {"steps": 200, "step_seconds": 0.05})
    deadline = time.time() + 60
    while ctx.jobs.get(job.id, ADMIN).status != "running":
        assert time.time() < deadline
        time.sleep(0.05)
    with pytest.raises(gr.Error, match="GPU is busy with a training job"):
        ctx.claim_device()
    ctx.jobs.cancel(job.id, ADMIN)
