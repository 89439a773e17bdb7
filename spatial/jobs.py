"""Background training jobs: a queue in SQLite, one GPU job at a time, subprocesses we can stop.

A job is a trainer module run as `accelerate launch -m <module> --output_dir RUN ...` in its own
process group, with its output in `RUN/log.txt` and its metrics in `RUN/metrics.jsonl` (one JSON
object per line with at least `step`, and `total_steps` for the progress bar). Trainers save a
checkpoint and exit on SIGTERM; cancel sends SIGTERM to the trainer processes and SIGKILL to the
whole process tree after a grace period (or at a second cancel). State survives app restarts: a
running job whose process is gone is marked failed, one still alive is adopted again, and a failed
or cancelled job can be resumed (`--resume`). One manager per folder at a time, across processes
(an advisory lock on `scheduler.lock`, let go when its process ends however it ends): two would each
start the queue's next job.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# Job kinds and the trainer module each runs. Tests may register their own kinds.
TRAINERS: dict[str, str] = {
    "reward": "training.train_reward",
    "grpo": "training.train_grpo",
}
ACTIVE = ("queued", "running", "cancelling")
FINAL = ("succeeded", "failed", "cancelled")


class JobError(Exception):
    """A request the job manager refuses; the message is fit for a user."""


class PermissionDenied(JobError):
    pass


@dataclass(frozen=True)
class Actor:
    """Who asks: a signed-in user name (or None) and whether they are an admin."""

    name: str | None
    is_admin: bool = False


@dataclass
class Job:
    id: str
    owner: str
    kind: str
    config: dict
    status: str
    run_dir: str
    created: float
    started: float | None = None
    finished: float | None = None
    pid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    attempts: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, config TEXT NOT NULL,
    status TEXT NOT NULL, run_dir TEXT NOT NULL, created REAL NOT NULL, started REAL,
    finished REAL, pid INTEGER, pid_created REAL, exit_code INTEGER, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, resume INTEGER NOT NULL DEFAULT 0, queued REAL
);
"""
_COLUMNS_ADDED = {"queued": "REAL", "family": "TEXT"}  # columns newer than some existing databases


MANAGED_SETTINGS = ("output_dir", "checkpoint_dir", "resume")
"""Trainer settings the runner sets (where the run lives, whether it resumes), never the caller."""


def config_to_args(config: dict) -> list[str]:
    """`{"learning_rate": 1e-4, "use_ema": True}` -> `--learning_rate 0.0001 --use_ema true`."""
    args = []
    for key, value in config.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise JobError(f"invalid setting name {key!r}")
        if value is None:
            continue  # unset: the trainer's default applies
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        args += [f"--{key}", str(value)]
    return args


def clean_env(extra: dict | None = None) -> dict:
    """The environment a job runs with. Secrets pass through the environment, never argv."""
    return {**os.environ, **(extra or {}), "PYTHONUNBUFFERED": "1"}


def _redact(text: str) -> str:
    return re.sub(r"hf_[A-Za-z0-9]{10,}", "hf_***", text)


class JobManager:
    """Queue, start, watch, cancel and resume training jobs. Thread-safe; one instance per app."""

    def __init__(
        self,
        root: str | Path,
        trainers: dict[str, str] | None = None,
        num_processes: int = 1,
        cancel_grace_s: float = 300.0,
        poll_s: float = 0.5,
        python: str = sys.executable,
        use_accelerate: bool = True,
    ):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.trainers = dict(TRAINERS if trainers is None else trainers)
        self.num_processes = num_processes
        if not (math.isfinite(cancel_grace_s) and cancel_grace_s >= 0):
            raise ValueError(f"cancel_grace_s must be a number of seconds >= 0, not {cancel_grace_s}")
        self.cancel_grace_s = cancel_grace_s
        self.poll_s = poll_s
        self.python = python
        self.use_accelerate = use_accelerate
        self._scheduler_lock = _hold_scheduler_lock(self.root / "scheduler.lock")
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen | psutil.Process] = {}
        # Each running job's process tree as last seen: when a launcher dies, its workers are re-parented
        # and only this list still reaches them.
        self._family: dict[str, list[psutil.Process]] = {}
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        have = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in _COLUMNS_ADDED.items():
            if name not in have:
                try:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as e:  # another process added it first
                    if "duplicate column" not in str(e):
                        raise
        self._recover()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-scheduler", daemon=True)
        self._thread.start()

    # ---- public API -------------------------------------------------------------------------

    def submit(self, actor: Actor, kind: str, config: dict) -> Job:
        if not actor.is_admin:
            raise PermissionDenied("only admins can start training jobs")
        if kind not in self.trainers:
            raise JobError(f"unknown job kind {kind!r}; choose from {', '.join(sorted(self.trainers))}")
        if managed := sorted(set(config).intersection(MANAGED_SETTINGS)):
            raise JobError(f"{', '.join(managed)}: set by the job manager (each run has its own folder), so leave it out")
        config_to_args(config)  # validates names before anything is stored
        job_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        run_dir = self.runs / job_id
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"kind": kind, **config}, indent=2))
        with self._lock:
            self._query(
                "INSERT INTO jobs (id, owner, kind, config, status, run_dir, created, queued) VALUES (?,?,?,?,?,?,?,?)",
                (job_id, actor.name, kind, json.dumps(config), "queued", str(run_dir), time.time(), time.time()),
            )
        return self.get(job_id, actor)

    def get(self, job_id: str, actor: Actor) -> Job:
        row = self._row(job_id)
        if row is None or not self._visible(row, actor):
            raise JobError(f"no job {job_id!r}")
        return self._job(row)

    def list(self, actor: Actor) -> list[Job]:
        rows = self._query("SELECT * FROM jobs ORDER BY created DESC")
        return [self._job(r) for r in rows if self._visible(r, actor)]

    def cancel(self, job_id: str, actor: Actor) -> Job:
        if not actor.is_admin:
            raise PermissionDenied("only admins can cancel training jobs")
        with self._lock:
            job = self.get(job_id, actor)
            if job.status == "queued":
                self._set(job_id, status="cancelled", finished=time.time(), error="cancelled before it started")
            elif job.status == "running":
                self._set(job_id, status="cancelling")
                self._stop_gracefully(job_id)
                self._force_kill_after(job_id, self.cancel_grace_s)
            elif job.status == "cancelling":
                self._signal(job_id, signal.SIGKILL)  # asked twice: stop waiting for the checkpoint
            else:
                raise JobError(f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")
        return self.get(job_id, actor)

    def resume(self, job_id: str, actor: Actor) -> Job:
        if not actor.is_admin:
            raise PermissionDenied("only admins can resume training jobs")
        with self._lock:
            job = self.get(job_id, actor)
            if job.status not in ("failed", "cancelled"):
                raise JobError(f"job {job_id} is {job.status}; only failed or cancelled jobs can be resumed")
            # Back of the queue: jobs queued meanwhile go first.
            self._set(job_id, status="queued", resume=1, error=None, exit_code=None, finished=None, pid=None,
                      queued=time.time())  # fmt: skip
        return self.get(job_id, actor)

    def log_tail(self, job_id: str, actor: Actor, lines: int = 40) -> str:
        job = self.get(job_id, actor)
        path = Path(job.run_dir) / "log.txt"
        if not path.exists():
            return ""
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = max(0, f.tell() - 64_000)
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
        if start:  # the window's first line is cut: drop it (half a token would escape redaction)
            text = text.split("\n", 1)[-1]
        # tqdm redraws with carriage returns: keep the last state of each line (splitlines would
        # make every redraw a line of its own).
        out = [line.split("\r")[-1] for line in text.split("\n")]
        while out and not out[-1]:
            out.pop()
        return _redact("\n".join(out[-lines:]))

    def metrics(self, job_id: str, actor: Actor) -> list[dict]:
        job = self.get(job_id, actor)
        path = Path(job.run_dir) / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written right now
        return rows

    def progress(self, job_id: str, actor: Actor) -> float | None:
        """Fraction done from the last metrics line (`step` over `total_steps`, or over the job's
        configured `steps`/`iterations`), or None when the trainer has not said."""
        job = self.get(job_id, actor)
        rows = [r for r in self.metrics(job_id, actor) if "step" in r]
        if not rows:
            return 1.0 if job.status == "succeeded" else None
        total = rows[-1].get("total_steps") or job.config.get("steps") or job.config.get("iterations")
        return min(1.0, rows[-1]["step"] / total) if total else None

    def checkpoints(self, kind: str | None = None) -> list[dict]:
        """Every run's complete checkpoints, newest first, for the (public) pickers: those of running,
        cancelled and failed runs too, since a checkpoint is whole once renamed; `status` says which."""
        out = []
        rows = self._query("SELECT * FROM jobs ORDER BY created DESC")
        for r in rows:
            job = self._job(r)
            if kind and job.kind != kind:
                continue
            run = Path(job.run_dir)
            if (run / "spatialscore_config.json").is_file():  # a reward run saves its model in the run folder
                out.append({"job": job.id, "kind": job.kind, "path": str(run), "step": None, "status": job.status})
            # ... and its resumable checkpoints, each a whole model folder, under checkpoints/step-N.
            for ckpt in sorted(run.glob("checkpoints/step-*"), key=_step_of, reverse=True):
                if re.fullmatch(r"step-\d+", ckpt.name) and (ckpt / "spatialscore_config.json").is_file():
                    out.append({"job": job.id, "kind": job.kind, "path": str(ckpt), "step": _step_of(ckpt),
                                "status": job.status})  # fmt: skip
            # Only whole checkpoints: a trainer writes `checkpoint-N.partial` first and renames it.
            steps = [p for p in run.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
            for ckpt in sorted(steps, key=_step_of, reverse=True) + [run / "final"]:
                if ckpt.is_dir() and any(ckpt.iterdir()):
                    out.append({"job": job.id, "kind": job.kind, "path": str(ckpt), "step": _step_of(ckpt),
                                "status": job.status})  # fmt: skip
        return out

    def gpu_busy(self) -> bool:
        return self._query("SELECT COUNT(*) FROM jobs WHERE status IN ('running','cancelling')")[0][0] > 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._scheduler_lock.close()  # closing the file lets go of its lock

    # ---- scheduling ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reap()
                self._start_next()
            except Exception as e:  # the scheduler must outlive any one bad job
                print(f"job scheduler: {type(e).__name__}: {e}", file=sys.stderr)
            self._stop.wait(self.poll_s)

    def _start_next(self) -> None:
        with self._lock:
            if self.gpu_busy():
                return
            rows = self._query("SELECT * FROM jobs WHERE status='queued' ORDER BY COALESCE(queued, created) LIMIT 1")
            if not rows:
                return
            row = rows[0]
            job = self._job(row)
            run = Path(job.run_dir)
            try:  # a job that cannot even be prepared (its folder deleted, a full disk) fails alone
                cmd = self.command(job, resume=bool(row["resume"]))
                log = open(run / "log.txt", "ab")
                log.write(f"$ {' '.join(cmd)}\n".encode())
                log.flush()
            except (OSError, KeyError) as e:
                self._set(job.id, status="failed", finished=time.time(), error=f"could not start: {e}")
                return
            try:
                proc = subprocess.Popen(
                    cmd, cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=subprocess.STDOUT,
                    env=clean_env(), start_new_session=True,
                )  # fmt: skip
            except OSError as e:
                self._set(job.id, status="failed", finished=time.time(), error=f"could not start: {e}")
                return
            finally:
                log.close()
            self._procs[job.id] = proc
            self._set(job.id, status="running", started=time.time(), pid=proc.pid,
                      pid_created=psutil.Process(proc.pid).create_time(), attempts=job.attempts + 1)  # fmt: skip

    def command(self, job: Job, resume: bool = False) -> list[str]:
        module = self.trainers[job.kind]
        args = ["--output_dir", job.run_dir, *config_to_args(job.config)] + (["--resume", "true"] if resume else [])
        if self.use_accelerate:
            launch = [self.python, "-m", "accelerate.commands.launch", "--num_processes", str(self.num_processes),
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
            return [*launch, "-m", module, *args]
        return [self.python, "-m", module, *args]

    def _reap(self) -> None:
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                code = proc.poll() if isinstance(proc, subprocess.Popen) else _adopted_exit(proc)
                if code is None:
                    family = _descendants(proc.pid)
                    if family and [p.pid for p in family] != [p.pid for p in self._family.get(job_id, [])]:
                        # Kept in the database too: an app that restarts after the leader died can still
                        # find the workers, which are no longer reachable through it.
                        self._set(job_id, family=_family_record(family))
                    self._family[job_id] = family or self._family.get(job_id, [])
                    continue
                del self._procs[job_id]
                row = self._row(job_id)
                # A leader that crashed (or was OOM-killed) leaves its workers running on the GPU: end them
                # before the next job starts. psutil refuses a pid that was reused since it was seen.
                _send(self._family.pop(job_id, []) + _family_from(row["family"]), signal.SIGKILL)
                cancelling = row["status"] == "cancelling"
                # Finished: its end reached (a cancel may come as the last step ends), or exit 0 uncancelled.
                # An adopted process's code is unknown (-1), so its run folder decides.
                if code in (0, -1) and _finished(Path(row["run_dir"])):
                    self._set(job_id, status="succeeded", finished=time.time(), exit_code=0)
                elif cancelling:
                    self._set(job_id, status="cancelled", finished=time.time(), exit_code=code)
                elif code == 0:  # stopped early without a cancel (a SIGTERM from outside the app): resumable
                    self._set(job_id, status="failed", finished=time.time(), exit_code=0,
                              error="stopped before its end without a cancel (a signal from outside the app?); resume it")  # fmt: skip
                else:
                    self._set(job_id, status="failed", finished=time.time(), exit_code=code,
                              error=self._last_error(row["run_dir"]) or f"exited with code {code}")  # fmt: skip

    def _recover(self) -> None:
        """After a restart: adopt jobs whose process still runs, fail the orphans."""
        for row in self._query("SELECT * FROM jobs WHERE status IN ('running','cancelling')"):
            proc = None
            try:
                p = psutil.Process(row["pid"])
                if abs(p.create_time() - (row["pid_created"] or 0)) < 1.0 and p.is_running():
                    proc = p
            except (psutil.Error, TypeError, ValueError):
                pass
            if proc is not None:
                self._procs[row["id"]] = proc
                # Its workers as last seen, in case the leader ends before it is next looked at.
                self._family[row["id"]] = _family_from(row["family"])
                if row["status"] == "cancelling":  # the app went down mid-cancel: the kill timer goes on
                    self._force_kill_after(row["id"], self.cancel_grace_s)
                continue
            # The leader is gone; workers it left (in sessions of their own) would hold the GPU while the
            # next job starts beside them.
            _send(_family_from(row["family"]), signal.SIGKILL)
            if _finished(Path(row["run_dir"])):  # it got to its end while the app was down
                self._set(row["id"], status="succeeded", finished=time.time())
            elif row["status"] == "cancelling":  # it ended while the app was down, as asked
                self._set(row["id"], status="cancelled", finished=time.time())
            else:
                self._set(row["id"], status="failed", finished=time.time(),
                          error="the app restarted while this job ran and its process is gone; resume it")  # fmt: skip

    def _stop_gracefully(self, job_id: str) -> None:
        """SIGTERM to the trainer processes. Under `accelerate launch` the launcher itself is spared:
        on SIGTERM it kills its workers after 5 s (accelerate 1.x), cutting a checkpoint short; it
        exits on its own once they have."""
        row = self._row(job_id)
        module = self.trainers[row["kind"]]
        # Only the trainer processes: a short-lived helper of the launcher would not pass the signal on.
        workers = [p for p in _descendants(row["pid"]) if module in _cmdline(p)] if self.use_accelerate else []
        if workers:
            _send(workers, signal.SIGTERM)
        else:  # the trainer leads the group (no launcher), or the launcher has not started it yet
            self._signal(job_id, signal.SIGTERM)

    def _signal(self, job_id: str, sig: int) -> None:
        row = self._row(job_id)
        # accelerate's workers may start their own groups: find every descendant first, since once the
        # leader dies they are re-parented and no longer reachable through it.
        family = _descendants(row["pid"])
        try:
            os.killpg(row["pid"], sig)  # the job leads its own process group
        except (ProcessLookupError, PermissionError, TypeError):
            pass
        _send(family, sig)

    def _force_kill_after(self, job_id: str, grace_s: float) -> None:
        pid = self._row(job_id)["pid"]

        def wait_then_kill():
            deadline = time.time() + grace_s
            while time.time() < deadline:
                if self._row(job_id)["status"] != "cancelling":
                    return
                time.sleep(0.2)
            with self._lock:  # only the process that was cancelled: not one reaped and resumed since
                row = self._row(job_id)
                if row["status"] == "cancelling" and row["pid"] == pid:
                    self._signal(job_id, signal.SIGKILL)

        threading.Thread(target=wait_then_kill, name=f"kill-{job_id}", daemon=True).start()

    # ---- storage --------------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple = ()) -> list:
        with self._lock:  # one connection shared by the UI threads and the scheduler
            return self._db.execute(sql, params).fetchall()

    def _row(self, job_id: str):
        rows = self._query("SELECT * FROM jobs WHERE id=?", (job_id,))
        return rows[0] if rows else None

    def _set(self, job_id: str, **values) -> None:
        cols = ", ".join(f"{k}=?" for k in values)
        with self._lock:
            self._query(f"UPDATE jobs SET {cols} WHERE id=?", (*values.values(), job_id))

    @staticmethod
    def _visible(row, actor: Actor) -> bool:
        return actor.is_admin or (actor.name is not None and row["owner"] == actor.name)

    @staticmethod
    def _job(row) -> Job:
        return Job(
            id=row["id"], owner=row["owner"], kind=row["kind"], config=json.loads(row["config"]),
            status=row["status"], run_dir=row["run_dir"], created=row["created"], started=row["started"],
            finished=row["finished"], pid=row["pid"], exit_code=row["exit_code"], error=row["error"],
            attempts=row["attempts"],
        )  # fmt: skip

    @staticmethod
    def _last_error(run_dir: str) -> str | None:
        path = Path(run_dir) / "log.txt"
        if not path.exists():
            return None
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()][-80:]
        # Our trainers print one "error: ..." line for the user; prefer it over launcher tracebacks.
        for wanted in (lambda l: l.startswith("error:"), lambda l: "Error" in l):
            for line in reversed(lines):
                if wanted(line) and "CalledProcessError" not in line:
                    return _redact(line)[:500]
        return None


def _hold_scheduler_lock(path: Path):
    """The open lock file, held exclusively, with our pid in it; JobError naming the holder if taken."""
    f = open(path, "a+")  # not inherited by jobs (PEP 446), so a job that outlives the app holds nothing
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise JobError(f"{path.parent} is in use by another Spatial Studio app (pid {holder}): its job "
                       "scheduler must be the only one. Stop that app, or give this one its own "
                       "SPATIAL_DATA_DIR.") from None  # fmt: skip
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def _descendants(pid: int | None) -> list[psutil.Process]:
    if pid is None:  # psutil.Process(None) is this process: its children are the app's, not a job's
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except (psutil.Error, TypeError, ValueError):
        return []


def _family_record(procs: list[psutil.Process]) -> str:
    """Processes as JSON [[pid, create_time], ...]: enough to find them again, and only them."""
    record = []
    for proc in procs:
        try:
            record.append([proc.pid, proc.create_time()])
        except psutil.Error:
            continue
    return json.dumps(record)


def _family_from(record: str | None) -> list[psutil.Process]:
    """The processes of a `_family_record` that still run; a pid reused since by another process is not one."""
    procs = []
    for pid, created in json.loads(record or "[]"):
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01:
                procs.append(proc)
        except (psutil.Error, TypeError, ValueError):
            continue
    return procs


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _send(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def _finished(run: Path) -> bool:
    """Whether a run's trainer got to its end (read for jobs adopted after a restart, whose exit code
    is unknown): GRPO and toy pretraining leave `final/`, reward training its model in the run folder."""
    return (run / "final").is_dir() or (run / "spatialscore_config.json").is_file()


def _adopted_exit(proc: psutil.Process) -> int | None:
    """Exit status of a process we did not start (after an app restart): unknown, so -1 once gone."""
    try:
        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        pass
    return -1


def _step_of(path: Path) -> int:
    m = re.search(r"(\d+)$", path.name)
    return int(m.group(1)) if m else 1 << 30
