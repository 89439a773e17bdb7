"""Training runs that outgrow the Space's GPU, sent to Hugging Face Jobs with the same entry points.

A Hub job is a container on Hugging Face's hardware. It mounts the Space (or any repo holding this
code) read-only, installs `requirements.txt`, runs the trainer under `accelerate launch` exactly as
the Train tab does, and uploads the run folder (checkpoints, metrics, logs) to a model repo, from
where the app's Generate and Compare tabs load adapters by repo id. The token travels as a job
secret, never on the command line.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

from .jobs import MANAGED_SETTINGS, TRAINERS

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
CODE_DIR = "/code"  # where the repo with this code is mounted (read-only) in the container


@dataclass(frozen=True)
class HubJobConfig:
    """Where and how a training run goes to Hugging Face Jobs."""

    kind: str = "grpo"
    """What to train: `grpo` (training.train_grpo) or `reward` (training.train_reward)."""
    code_repo: str = field(default_factory=lambda: os.environ.get("SPACE_ID", ""))
    """The repo holding this code, mounted into the job (default: the Space the app runs in, `SPACE_ID`)."""
    code_repo_type: str = "space"
    """`space` or `model`: the kind of repo `code_repo` is."""
    output_repo: str = ""
    """Model repo the finished run folder is uploaded to (created private if missing)."""
    run_name: str = "run"
    """Folder of the run, locally in the job and inside `output_repo`."""
    flavor: str = "a100-large"
    """Hugging Face Jobs hardware (`hf jobs hardware` lists them), e.g. `h100`, `a100-large`, `l40sx4`."""
    image: str = "python:3.11"
    """Container image. requirements.txt installs torch's CUDA build from PyPI into it."""
    num_processes: int = 1
    """Processes for `accelerate launch` (one per GPU of the flavor)."""
    timeout: str = "8h"
    """Wall-clock limit of the job (`30m`, `8h`, ...)."""
    namespace: str = ""
    """User or organisation the job runs under (empty: the token's owner)."""
    dry_run: bool = False
    """Print the job instead of submitting it."""

    def validate(self) -> None:
        if self.kind not in TRAINERS:
            raise ValueError(f"kind must be one of {', '.join(TRAINERS)}, got {self.kind!r}")
        for name in ("code_repo", "output_repo"):
            value = getattr(self, name)
            if not _REPO_ID.fullmatch(value or ""):
                raise ValueError(f"--{name} must be a Hub repo id like owner/name, got {value!r}")
        if self.code_repo_type not in ("space", "model"):
            raise ValueError(f"--code_repo_type must be space or model, got {self.code_repo_type!r}")
        if not _RUN_NAME.fullmatch(self.run_name) or ".." in self.run_name:
            raise ValueError(f"--run_name must be a plain folder name (letters, digits, . _ -), got {self.run_name!r}")
        if not 1 <= self.num_processes <= 64:
            raise ValueError(f"--num_processes must be between 1 and 64, got {self.num_processes}")
        if self.namespace and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", self.namespace):
            raise ValueError(f"--namespace must be a Hub user or organisation name, got {self.namespace!r}")
        if not re.fullmatch(r"\d+|\d+(\.\d+)?[smhd]", self.timeout):
            raise ValueError(f"--timeout must look like 30m, 8h or 3600, got {self.timeout!r}")


def check_unmanaged(trainer_args: list[str]) -> None:
    """Refuse the trainer flags the job sets itself (where the run lives, whether it resumes)."""
    flags = {arg.split("=", 1)[0] for arg in trainer_args if arg.startswith("--")}  # `--output_dir=x` too
    for name in MANAGED_SETTINGS:
        if f"--{name}" in flags:
            raise ValueError(f"leave out --{name}; the job writes to runs/<run_name> and uploads it")


def job_command(cfg: HubJobConfig, trainer_args: list[str], code_dir: str = CODE_DIR, work_dir: str = "/work") -> list[str]:
    """The container's command: copy the mounted code, install it, train, upload the run. The run is
    uploaded however training ends (a crash, the job's timeout, `hf jobs cancel`): its checkpoints
    are what a resume starts from. A SIGTERM to the job reaches the trainer processes themselves, which
    finish their step and save a checkpoint (accelerate's launcher would kill them after 5 s)."""
    check_unmanaged(trainer_args)
    run_dir = f"runs/{cfg.run_name}"
    train = ["accelerate", "launch", "--num_processes", str(cfg.num_processes), "-m", TRAINERS[cfg.kind],
             "--output_dir", run_dir, *trainer_args]  # fmt: skip
    upload = ["hf", "upload", cfg.output_repo, run_dir, cfg.run_name, "--private"]
    on_term = "pkill -TERM -P $train; wait $train"  # the launcher's children: the trainer processes
    script = "\n".join([
        f"cp -r {shlex.quote(code_dir)} {shlex.quote(work_dir)} && cd {shlex.quote(work_dir)} || exit 1",
        "pip install --quiet -r requirements.txt || exit 1",
        f"{shlex.join(train)} &",
        "train=$!",
        f"trap {shlex.quote(on_term)} TERM",
        "wait $train; status=$?",
        f"{shlex.join(upload)} || {{ echo 'the run folder could not be uploaded' >&2; [ $status -eq 0 ] && status=1; }}",
        "exit $status",
    ])  # fmt: skip
    return ["bash", "-c", script]


class HubJobError(RuntimeError):
    """The Hub refused the job or could not be reached; the message says which, without the token."""


def submit(cfg: HubJobConfig, trainer_args: list[str], token: str | None = None, api=None):
    """Submit the run; returns huggingface_hub's JobInfo (its `id` and `url` say where to watch it)."""
    from huggingface_hub import HfApi, Volume
    from huggingface_hub.errors import HfHubHTTPError

    api = api or HfApi()
    command = job_command(cfg, trainer_args)  # outside the try: a bad flag is a ValueError, not a Hub error
    try:
        return api.run_job(
            image=cfg.image,
            command=command,
            secrets={"HF_TOKEN": token} if token else None,
            flavor=cfg.flavor,
            timeout=cfg.timeout,
            volumes=[Volume(type=cfg.code_repo_type, source=cfg.code_repo, mount_path=CODE_DIR)],
            labels={"app": "spatial-studio", "kind": cfg.kind, "run": cfg.run_name},
            namespace=cfg.namespace or None,
            token=token,
        )
    except HfHubHTTPError as e:
        raise HubJobError(f"the Hub refused the job: {_redact(str(e), token)}") from None
    except Exception as e:  # no network, HF_HUB_OFFLINE set: the HTTP client's own error types vary
        raise HubJobError(f"could not reach the Hub to submit the job ({type(e).__name__}: {_redact(str(e), token)})") from None


def run_url(cfg: HubJobConfig) -> str:
    """Where the finished run folder lands."""
    return f"https://huggingface.co/{cfg.output_repo}/tree/main/{cfg.run_name}"


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
