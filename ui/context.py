"""What the tabs share: settings, the signed-in user's role, and services created on first use
(nothing heavy happens at import or build time)."""

from __future__ import annotations

import gc
import os
import re
import threading
import time
from pathlib import Path
from functools import cached_property

import gradio as gr

from spatial.jobs import Actor, JobManager
from spatial.settings import REPO_ROOT, AppSettings, cpu_threads

from .auth import user_name

# Not a seed any documented dataset uses (docs/TRAINING.md: 0 and 1 for training data, 31337 for the
# held-out reward set), so labels made on the starter queue never leak into an evaluation.
SEED_PAIRS_SEED = 2718
BUILT_IN_SCORERS = ("spatialscore", "oracle", "judge")
SCORER_RETRY_S = 60.0  # a scorer that failed to load (a Hub outage, a folder being written) is tried again after this


class AppContext:
    def __init__(self, settings: AppSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._scorers: dict[str, object] = {}
        self._scorer_errors: dict[str, str] = {}

    def actor(self, profile: gr.OAuthProfile | None) -> Actor:
        name = user_name(profile)
        return Actor(name, self.settings.is_admin(name))

    @cached_property
    def jobs(self) -> JobManager:
        with self._lock:
            return JobManager(self.settings.data_dir / "jobs", cancel_grace_s=self.settings.cancel_grace_s)

    @cached_property
    def generation(self):
        """The one GenerationService (its pipeline loads on first render)."""
        from spatial.generation.config import GenerationConfig
        from spatial.generation.service import GenerationService

        with self._lock:
            return GenerationService(GenerationConfig.from_env())

    @cached_property
    def annotation(self):
        """The annotation store; on first open of an empty store in the toy world, seeded with
        SpatialWorld pairs so there is something to label. Hub write-back starts if configured."""
        from spatial.annotation import AnnotationStore, import_world
        from spatial.annotation.hub import start_writeback

        with self._lock:
            store = AnnotationStore(self.settings.data_dir / "annotation")
            if self.settings.preset == "toy" and not store.pairs() and self.settings.seed_pairs > 0:
                import_world(store, self.settings.seed_pairs, seed=SEED_PAIRS_SEED)
            # SIGTERM flushing needs the main thread: app.py opens the store there via start().
            self.writeback = start_writeback(store)
            return store

    def start(self) -> None:
        """Work done once, in the main thread, before serving: claim the job scheduler (JobError if
        another app runs on this data dir), then open the annotation store (seeding it and starting
        the Hub write-back with its SIGTERM flush)."""
        self.jobs
        self.annotation

    def send_pair(self, state: dict) -> str:
        """Queue a generated base/tuned pair for annotation; returns a message for the user."""
        pair_id = self.annotation.add_pair(state["prompt"], state["images"][0], state["images"][1], source="generate",
                                           meta={"seed": state["seed"], "adapter": state.get("adapter")})  # fmt: skip
        return f"Queued for annotation as pair `{pair_id[:12]}`."

    def score_one(self, prompt: str, image) -> float:
        scorer = self.scorer()
        if scorer is None:
            raise RuntimeError(f"SpatialScore unavailable: {self.scorer_error()}")
        return float(scorer.score([prompt], [image]).mu[0])

    def scorer(self, name: str | None = None):
        """A scorer by name (default SPATIAL_SCORER, else `spatialscore`; or a reward run's folder), or
        None with the reason kept for `scorer_error`. The default and the built-in ones stay loaded;
        of reward-run checkpoints only the last one asked for does (visitors pick them: each would be
        a whole model held forever). A failed load is tried again after SCORER_RETRY_S."""
        from spatial.scorers import load_scorer

        default = os.environ.get("SPATIAL_SCORER") or "spatialscore"
        name = name or default
        with self._lock:
            failed = self._scorer_errors.get(name)
            if failed is not None and time.monotonic() - failed[1] > SCORER_RETRY_S:
                del self._scorer_errors[name]
            if name not in self._scorers and name not in self._scorer_errors:
                kept = {default, *BUILT_IN_SCORERS}
                evicted = [k for k in self._scorers if k not in kept]
                for other in evicted:
                    del self._scorers[other]
                if evicted:
                    gc.collect()  # freed before the next one loads
                try:
                    self._scorers[name] = load_scorer(name)
                except Exception as e:  # noqa: BLE001 - any load failure means "unavailable", shown to the user
                    reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    self._scorer_errors[name] = (reason, time.monotonic())
            return self._scorers.get(name)

    def scorer_error(self, name: str | None = None) -> str | None:
        name = name or os.environ.get("SPATIAL_SCORER") or "spatialscore"
        error = self._scorer_errors.get(name)
        return None if error is None else self.public(error[0])

    def public(self, text: str) -> str:
        """A message fit for any visitor: the server's own folders shown relative, never absolute.
        Only whole path components match (`/data` is not the start of `/datasets`)."""
        folders = [(Path(self.settings.data_dir).resolve(), "$SPATIAL_DATA_DIR/", "$SPATIAL_DATA_DIR"),
                   (REPO_ROOT, "", "."), (Path.home(), "~/", "~")]  # fmt: skip
        for folder, inside, itself in folders:
            if folder == Path("/"):
                continue
            root = r"(?<![\w.-])" + re.escape(str(folder))
            text = re.sub(root + "/", lambda _: inside, text)
            text = re.sub(root + r"(?![\w.-])", lambda _: itself, text)
        return text

    def claim_device(self) -> None:
        """Before a render or a score. On a GPU a running training job owns the device: a clear
        error instead of risking OOM. On a CPU it shares the cores: the toy gets its thread count
        for now (one while a job runs), set from the handler's own thread, since OpenMP keeps the
        count per calling thread."""
        import torch

        job_running = self.jobs.gpu_busy()
        if torch.cuda.is_available():
            if job_running:
                raise gr.Error("The GPU is busy with a training job; rendering and scoring wait until it finishes. "
                               "Try again later.")  # fmt: skip
            return
        threads = cpu_threads(self.settings.preset, job_running=job_running, cuda=False)
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
