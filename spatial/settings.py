"""Application settings, read from the environment (a Space's variables and secrets, or a shell).

Every setting has a default that runs the embedded toy world offline. The README documents each.
"""

from __future__ import annotations

import getpass
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _seconds(value: str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return seconds


@dataclass(frozen=True)
class AppSettings:
    preset: str = "toy"
    """Generation preset: `toy` (bundled, offline) or `flux-dev`."""
    data_dir: Path = REPO_ROOT / "runs"
    """Where the app keeps its state: SQLite databases, training runs, annotation images."""
    admins: tuple[str, ...] = ()
    """Hugging Face user names allowed to train and see statistics. Empty: the Space owner on a
    Space, the local user elsewhere."""
    space_id: str | None = None
    """Set by Hugging Face on a Space (`SPACE_ID`, e.g. `owner/name`)."""
    local_user: str = field(default_factory=lambda: os.environ.get("SPATIAL_LOCAL_USER") or getpass.getuser())
    """The user name the local (mocked) login signs in as, off a Space."""
    seed_pairs: int = 40
    """SpatialWorld pairs put in an empty annotation queue at first start (toy preset only)."""
    server_name: str = "127.0.0.1"
    server_port: int = 7860
    share: bool = False
    """A public gradio.live link (`GRADIO_SHARE=1`); it reaches a loopback server from anywhere."""
    remote_admin: bool = False
    """Off a Space the login is a local stand-in that anyone reaching the server can click, so admin
    rights are given only when the app listens on loopback, unless this is set (`SPATIAL_REMOTE_ADMIN=1`)."""
    cancel_grace_s: float = 300.0
    """Seconds a cancelled job gets to finish its step and save before it is killed."""

    @classmethod
    def from_env(cls, env: dict | None = None) -> "AppSettings":
        env = os.environ if env is None else env
        return cls(
            preset=env.get("SPATIAL_PRESET") or "toy",
            data_dir=Path(env.get("SPATIAL_DATA_DIR", REPO_ROOT / "runs")),
            admins=_split(env.get("SPATIAL_ADMINS")),
            space_id=env.get("SPACE_ID") or None,
            local_user=env.get("SPATIAL_LOCAL_USER") or getpass.getuser(),
            seed_pairs=int(env.get("SPATIAL_SEED_PAIRS", "40")),
            server_name=env.get("GRADIO_SERVER_NAME", "0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1"),
            server_port=int(env.get("GRADIO_SERVER_PORT", "7860")),
            share=env.get("GRADIO_SHARE", "").lower() in ("1", "true", "yes"),
            remote_admin=env.get("SPATIAL_REMOTE_ADMIN", "").lower() in ("1", "true", "yes"),
            cancel_grace_s=_seconds(env.get("SPATIAL_CANCEL_GRACE_S", "300"), "SPATIAL_CANCEL_GRACE_S"),
        )

    @property
    def on_space(self) -> bool:
        return self.space_id is not None

    @property
    def on_loopback(self) -> bool:
        """Reachable only from this machine (as far as we can tell: a reverse proxy in front of a
        loopback address is not, and needs real sign-in)."""
        return not self.share and (self.server_name in ("localhost", "::1") or self.server_name.startswith("127."))

    def admin_names(self) -> tuple[str, ...]:
        if not (self.on_space or self.on_loopback or self.remote_admin):
            return ()  # the stand-in login would make every visitor an admin
        if self.admins:
            return self.admins
        if self.space_id:
            return (self.space_id.split("/")[0],)
        return (self.local_user,)

    def is_admin(self, user: str | None) -> bool:
        return user is not None and user in self.admin_names()


def cpu_threads(preset: str, env: dict | None = None, cuda: bool | None = None, job_running: bool = False) -> int | None:
    """Intra-op threads for torch on a CPU-only machine: `SPATIAL_CPU_THREADS`, else 2 for the toy
    (1 while a training job shares the cores, or on a one-core machine).

    Two threads render a 64 px toy image in 0.76x the time of one under libgomp's default wait
    policy, which is how the app runs (docs/BENCHMARKS.md). Under `OMP_WAIT_POLICY=PASSIVE` the
    second thread sleeps between the model's many small ops and costs more than it saves, and a
    training job beside the app has the same effect: so one thread then.
    None leaves torch's default (GPU machines, full-size models)."""
    import torch

    env = os.environ if env is None else env
    if value := env.get("SPATIAL_CPU_THREADS"):
        if not value.strip().isdigit():
            raise ValueError(f"SPATIAL_CPU_THREADS must be a whole number of threads, got {value!r}")
        return max(1, int(value))
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if preset != "toy" or cuda:
        return None
    passive = env.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if job_running or passive else min(2, cores)


PATH_SETTINGS = ("SPATIAL_DATA_DIR", "SPATIAL_BASE_MODEL", "SPATIAL_LORA", "SPATIAL_SCORER")


def work_from_repo_root(env: dict | None = None) -> None:
    """Make the repo root the working directory, as it is for every training job.

    Jobs run from the repo root (`-m training...`), so a relative path typed into a training form
    must mean the same in the app's checks as in the job. Relative paths in the path settings are
    made absolute from the launch directory first, so they keep their meaning (the model settings
    only where such a path exists: otherwise they are Hub ids)."""
    env = os.environ if env is None else env
    for name in PATH_SETTINGS:
        value = env.get(name)
        local = name == "SPATIAL_DATA_DIR" or (value and Path(value).expanduser().exists())
        if value and local and not Path(value).expanduser().is_absolute():
            env[name] = str(Path(value).expanduser().resolve())
    os.chdir(REPO_ROOT)
