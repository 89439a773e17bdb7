"""Runs sent to Hugging Face Jobs: the same trainer entry point, the code mounted, the run uploaded.

The Hub's servers cannot be reached from tests, so a local HTTP server answers the one call a
submission makes (POST /api/jobs/<namespace>) and records it; huggingface_hub's own client builds
and sends the request.
"""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from huggingface_hub import HfApi

from spatial.hub_jobs import HubJobConfig, job_command, submit

TOKEN = "hf_" + "x" * 30


@pytest.fixture
def hub():
    received = []

    class JobsAPI(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append({"path": self.path, "auth": self.headers.get("authorization"), "body": body})
            namespace = self.path.rsplit("/", 1)[-1]
            reply = {**body, "id": "job-1", "owner": {"id": "1", "name": namespace, "type": "user"},
                     "status": {"stage": "RUNNING"}}  # fmt: skip
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), JobsAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()


CFG = HubJobConfig(kind="grpo", code_repo="me/spatial-studio", output_repo="me/spatial-runs", run_name="grpo-1",
                   flavor="h100x8", num_processes=8, timeout="6h", namespace="me")  # fmt: skip


def test_a_hub_job_runs_the_trainer_under_accelerate_on_the_mounted_code_and_uploads_the_run(hub, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # the suite runs offline; this server is local
    endpoint, received = hub
    job = submit(CFG, ["--preset", "flux-dev", "--iterations", "500"], token=TOKEN, api=HfApi(endpoint=endpoint))
    assert job.id == "job-1" and job.url == f"{endpoint}/jobs/me/job-1"
    (call,) = received
    assert call["path"] == "/api/jobs/me" and call["auth"] == f"Bearer {TOKEN}"
    spec = call["body"]
    assert spec["flavor"] == "h100x8" and spec["timeoutSeconds"] == 6 * 3600
    assert spec["volumes"] == [{"type": "space", "source": "me/spatial-studio", "mountPath": "/code"}]
    assert spec["secrets"] == {"HF_TOKEN": TOKEN}
    script = spec["command"][-1]
    assert "accelerate launch --num_processes 8 -m training.train_grpo --output_dir runs/grpo-1 --preset flux-dev --iterations 500" in script
    assert script.index("pip install") < script.index("accelerate launch") < script.index("hf upload me/spatial-runs runs/grpo-1 grpo-1")
    assert TOKEN not in json.dumps(spec["command"]) and TOKEN not in json.dumps(spec.get("environment"))


def container(tmp_path, worker: str):
    """The job's script run here, in bash, with stand-ins for what only the container has: `pip`, the
    `hf` CLI (it records what it would upload) and `accelerate`, whose one child is the trainer."""
    bin_dir, code = tmp_path / "bin", tmp_path / "code"
    bin_dir.mkdir()
    code.mkdir()
    (code / "requirements.txt").write_text("")
    (tmp_path / "worker.py").write_text(worker)
    tools = {"pip": "exit 0",
             "hf": f'echo "$@" > {tmp_path}/uploaded; ls "$3" > {tmp_path}/uploaded-files',
             "accelerate": f'{sys.executable} {tmp_path}/worker.py "$@" &\nwait $!'}  # fmt: skip
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    script = job_command(CFG, ["--iterations", "5"], code_dir=str(code), work_dir=str(tmp_path / "work"))[-1]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


SAVES_A_CHECKPOINT = """
import os, signal, sys, time
out = sys.argv[sys.argv.index("--output_dir") + 1]
os.makedirs(out + "/checkpoint-1")
def saved_and_stopped(*_):
    os.makedirs(out + "/checkpoint-2")
    sys.exit(0)
signal.signal(signal.SIGTERM, saved_and_stopped)
open(out + "/started", "w").close()
time.sleep(float(os.environ.get("TRAIN_SECONDS", "0")))
sys.exit(int(os.environ.get("TRAIN_EXIT", "0")))
"""


def test_a_hub_job_whose_training_crashes_still_uploads_its_checkpoints_and_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_EXIT", "3")
    proc = container(tmp_path, SAVES_A_CHECKPOINT)
    assert proc.wait(timeout=60) == 3  # the job fails as its trainer did
    assert (tmp_path / "uploaded").read_text().split() == ["upload", "me/spatial-runs", "runs/grpo-1", "grpo-1", "--private"]
    assert "checkpoint-1" in (tmp_path / "uploaded-files").read_text()


def test_a_cancelled_hub_job_lets_the_trainer_save_then_uploads_what_it_saved(tmp_path, monkeypatch):
    import signal
    import time

    monkeypatch.setenv("TRAIN_SECONDS", "60")
    proc = container(tmp_path, SAVES_A_CHECKPOINT)
    deadline = time.time() + 30
    while not (tmp_path / "work" / "runs" / "grpo-1" / "started").exists():
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # what `hf jobs cancel` and the job's timeout send
    proc.wait(timeout=30)
    assert (tmp_path / "uploaded-files").read_text().split() == ["checkpoint-1", "checkpoint-2", "started"]


def test_trainer_arguments_with_shell_characters_stay_single_arguments():
    script = job_command(CFG, ["--prompts", "my prompts.txt; rm -rf /"])[-1]
    assert "--prompts 'my prompts.txt; rm -rf /'" in script


def test_a_flag_the_job_sets_itself_is_refused_as_bad_input_before_the_hub_is_called(hub, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    endpoint, received = hub
    with pytest.raises(ValueError, match="leave out --resume"):
        submit(CFG, ["--iterations", "5", "--resume", "true"], token=TOKEN, api=HfApi(endpoint=endpoint))
    assert received == []


def run_cli(args, endpoint):
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "0"}
    return subprocess.run([sys.executable, "-m", "training.launch_hub_job", *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_command_line_submits_and_says_where_to_watch_and_where_the_run_lands(hub):
    endpoint, received = hub
    out = run_cli(["--code_repo", "me/spatial-studio", "--output_repo", "me/spatial-runs", "--run_name", "r1",
                   "--namespace", "me", "--", "--preset", "toy", "--iterations", "3"], endpoint)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"{endpoint}/jobs/me/job-1" in out.stdout and "me/spatial-runs/tree/main/r1" in out.stdout
    assert len(received) == 1 and TOKEN not in out.stdout + out.stderr


def test_an_unreachable_hub_is_one_clear_error():
    out = run_cli(["--code_repo", "me/code", "--output_repo", "me/runs", "--", "--iterations", "3"], "http://127.0.0.1:9")
    assert out.returncode == 1 and out.stderr.startswith("error: could not reach the Hub"), out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output_repo", "me/runs", "--", "--iterations", "3"], "--code_repo must be a Hub repo id"),
        (["--code_repo", "me/code", "--output_repo", "../etc", "--"], "--output_repo must be a Hub repo id"),
        (["--code_repo", "me/code", "--output_repo", "me/runs", "--run_name", "../up"], "--run_name must be a plain folder name"),
        (["--code_repo", "me/code", "--output_repo", "me/runs", "--", "--group_size", "4", "--top_k", "3"], "top_k must satisfy"),
        (["--code_repo", "me/code", "--output_repo", "me/runs", "--", "--output_dir", "/tmp/x"], "leave out --output_dir"),
        (["--code_repo", "me/code", "--output_repo", "me/runs", "--kind", "pretrain"], "kind must be one of"),
    ],
)
def test_bad_settings_are_refused_before_anything_reaches_the_hub(hub, args, message):
    endpoint, received = hub
    out = run_cli(args, endpoint)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert received == []


def test_form_values_become_trainer_flags_that_parse_back_to_the_same_config():
    from spatial.cli import parse_config
    from spatial.jobs import config_to_args
    from spatial.rl.config import PRESETS, GRPOConfig

    fields = {"preset": "toy", "group_size": 8, "top_k": 2, "learning_rate": 5e-4, "same_latent": False, "base_model": None}
    argv = config_to_args(fields)
    assert "--base_model" not in argv and argv[argv.index("--same_latent") + 1] == "false"
    parsed = parse_config(GRPOConfig, argv, prog="train_grpo", presets=PRESETS)
    assert (parsed.group_size, parsed.top_k, parsed.learning_rate, parsed.same_latent) == (8, 2, 5e-4, False)
    with pytest.raises(ValueError, match="leave out --output_dir"):
        job_command(CFG, config_to_args({"output_dir": "/tmp/elsewhere"}))


def test_managed_flags_are_refused_in_any_spelling_and_abbreviations_are_not_flags():
    from spatial.cli import parse_config
    from spatial.rl.config import PRESETS, GRPOConfig

    with pytest.raises(ValueError, match="leave out --output_dir"):
        job_command(CFG, ["--output_dir=/tmp/elsewhere"])
    with pytest.raises(SystemExit):  # `--output` is not read as `--output_dir`
        parse_config(GRPOConfig, ["--output", "/tmp/elsewhere"], prog="train_grpo", presets=PRESETS)


def test_a_namespace_that_is_not_a_hub_name_is_refused():
    from dataclasses import replace

    with pytest.raises(ValueError, match="--namespace must be a Hub user or organisation name"):
        replace(CFG, namespace="../someone").validate()


class TestTheTrainTabSendsAFormToHubJobs:
    """The Train tab's handler, called in-process (the browser tests cover the page; the Hub is the stand-in)."""

    @pytest.fixture
    def tab(self, tmp_path, monkeypatch):
        import gradio as gr

        from spatial.reward.trainer import RewardTrainingConfig
        from spatial.rl.config import PRESETS, GRPOConfig
        from spatial.settings import AppSettings
        from ui.context import AppContext
        from ui.forms import DataclassForm
        from ui.train import GRPO_FIELDS, HUB_FIELDS, REWARD_FIELDS

        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        ctx = AppContext(AppSettings(data_dir=tmp_path, local_user="alice"))
        grpo = DataclassForm(GRPOConfig, GRPO_FIELDS, defaults=PRESETS["toy"])
        reward = DataclassForm(RewardTrainingConfig, REWARD_FIELDS)
        hub = DataclassForm(HubJobConfig, HUB_FIELDS)
        values = {f.name: getattr(grpo.cls(**PRESETS["toy"]), f.name) for f in grpo.fields}
        hub_values = {"code_repo": "me/spatial-studio", "output_repo": "me/spatial-runs", "run_name": "from-ui",
                      "flavor": "a100-large", "num_processes": 1, "timeout": "2h", "namespace": "me"}  # fmt: skip
        admin = gr.OAuthProfile({"preferred_username": "alice", "name": "Alice", "profile": "", "picture": ""})
        return ctx, grpo, reward, hub, values, hub_values, admin

    def test_an_admin_submits_the_grpo_form_and_is_told_where_to_watch(self, hub, tab):
        from ui.train import send_to_hub_jobs

        endpoint, received = hub
        ctx, grpo, _, form, values, hub_values, admin = tab
        values["iterations"] = 500
        note = send_to_hub_jobs(ctx, admin, "grpo", grpo, form, [*values.values(), *hub_values.values()],
                                api=HfApi(endpoint=endpoint))  # fmt: skip
        assert f"{endpoint}/jobs/me/job-1" in note and "me/spatial-runs/tree/main/from-ui" in note and TOKEN not in note
        (call,) = received
        script = call["body"]["command"][-1]
        assert "-m training.train_grpo --output_dir runs/from-ui --preset toy" in script and "--iterations 500" in script
        assert call["body"]["secrets"] == {"HF_TOKEN": TOKEN} and call["body"]["timeoutSeconds"] == 7200

    def test_anyone_else_and_bad_forms_are_refused_before_the_hub_is_called(self, hub, tab):
        import gradio as gr

        from ui.train import send_to_hub_jobs

        endpoint, received = hub
        ctx, grpo, _, form, values, hub_values, admin = tab
        api = HfApi(endpoint=endpoint)
        bob = gr.OAuthProfile({"preferred_username": "bob", "name": "Bob", "profile": "", "picture": ""})
        with pytest.raises(gr.Error, match="only admins"):
            send_to_hub_jobs(ctx, bob, "grpo", grpo, form, [*values.values(), *hub_values.values()], api=api)
        with pytest.raises(gr.Error, match="output_repo must be a Hub repo id"):
            send_to_hub_jobs(ctx, admin, "grpo", grpo, form, [*values.values(), *{**hub_values, "output_repo": "../x"}.values()], api=api)
        with pytest.raises(gr.Error, match="top_k"):
            send_to_hub_jobs(ctx, admin, "grpo", grpo, form, [*{**values, "top_k": 99}.values(), *hub_values.values()], api=api)
        assert received == []

    def test_on_a_space_the_job_may_only_mount_that_space_s_code(self, hub, tab):
        import dataclasses

        import gradio as gr

        from ui.train import send_to_hub_jobs

        endpoint, received = hub
        ctx, grpo, _, form, values, hub_values, admin = tab
        ctx.settings = dataclasses.replace(ctx.settings, space_id="alice/spatial-studio", admins=("alice",))
        with pytest.raises(gr.Error, match=r"code_repo must be this Space \(alice/spatial-studio\)"):
            send_to_hub_jobs(ctx, admin, "grpo", grpo, form, [*values.values(), *{**hub_values, "code_repo": "evil/code"}.values()],
                             api=HfApi(endpoint=endpoint))  # fmt: skip
        assert received == []

    def test_an_unreachable_hub_is_a_message_without_the_token(self, tab):
        import gradio as gr

        from ui.train import send_to_hub_jobs

        ctx, grpo, _, form, values, hub_values, admin = tab
        with pytest.raises(gr.Error, match="could not reach the Hub") as e:
            send_to_hub_jobs(ctx, admin, "grpo", grpo, form, [*values.values(), *hub_values.values()],
                             api=HfApi(endpoint="http://127.0.0.1:9"))  # fmt: skip
        assert TOKEN not in str(e.value)
