"""Write-back to a Hub dataset repo with `huggingface_hub.CommitScheduler`.

The store's folder `hub/` holds an export (see export.py) that grows in place: before each
scheduled commit, labels stored since the last round are appended to this process's own
`labels/<host>-<pid>-<random>/metadata.jsonl` (so restarts and parallel processes never overwrite
each other), and the pairs subset and card are refreshed. CommitScheduler then uploads the files
that changed. A failed commit is retried with exponential back-off; if every attempt fails the files
stay marked as changed and the next round uploads them. SIGTERM (a Space restart) triggers a last
commit before the process exits.

The SQLite store is the record of truth; the Hub copy is off-site and may lag by one round.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from huggingface_hub import CommitScheduler, HfApi
from huggingface_hub.errors import HfHubHTTPError

from .config import ExportConfig, HubConfig
from .errors import AnnotationError
from .export import _write_if_changed, append_labels, dataset_card, last_seq_in, write_pairs_subset
from .store import AnnotationStore

logger = logging.getLogger(__name__)
_NO_RETRY = (401, 403, 404)  # bad token, no access, no repo: retrying cannot help


def writer_name() -> str:
    """A file-name-safe id unique to this process: host, pid and a random part."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def repair_torn_lines(labels_root: Path) -> None:
    """Cut a partial last line (a process killed mid-append) so every file stays valid JSON lines."""
    for path in labels_root.glob("*/metadata.jsonl"):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())


class HubWriteBack(CommitScheduler):
    """Push a store's labels to `config.repo_id` every `config.every_minutes` minutes.

    `hf_api` defaults to `HfApi(token=config.token)`; tests pass one whose server calls are replaced.
    """

    def __init__(self, store: AnnotationStore, config: HubConfig, folder: str | Path | None = None,
                 export_config: ExportConfig | None = None, hf_api: HfApi | None = None,
                 writer: str | None = None):  # fmt: skip
        config.validate()
        if not config.enabled:
            raise AnnotationError("Hub write-back needs a dataset repo id and a token")
        self.store = store
        self.hub_config = config
        self.export_config = export_config or ExportConfig()
        self.writer = writer or writer_name()
        root = Path(folder) if folder is not None else store.root / "hub"
        (root / "labels").mkdir(parents=True, exist_ok=True)
        repair_torn_lines(root / "labels")
        self.cursor = last_seq_in(root / "labels")  # labels up to here are in earlier writers' files
        self.attempts = 0
        self.commits = 0
        super().__init__(
            repo_id=config.repo_id,
            folder_path=root,
            every=config.every_minutes,
            repo_type="dataset",
            private=config.private,
            token=config.token,
            hf_api=hf_api,
            ignore_patterns=["*.tmp", "*.old", ".sync.lock"],
        )

    def sync(self) -> int:
        """Bring the folder up to date with the store (no network); return the last label seq written."""
        root = self.folder_path / "labels"
        # Another process on this store (a second app, `python -m spatial.annotation push`) may have
        # written labels since: the lock and the cursor read from disk keep each label in one file.
        with open(self.folder_path / ".sync.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            labels = self.store.labels()
            self.cursor = max(self.cursor, last_seq_in(root))
            self.cursor = append_labels(self.store, root / self.writer, self.cursor, labels)
            counts = write_pairs_subset(self.store, self.folder_path / "pairs", self.export_config, labels)
            _write_if_changed(self.folder_path / "README.md", dataset_card(counts, len(labels)))
        return self.cursor

    def push_to_hub(self):
        with self.lock:  # CommitScheduler lists files under the same lock: it never sees half a write
            self.sync()
        delay = self.hub_config.backoff_s
        for attempt in range(self.hub_config.retries + 1):
            self.attempts += 1
            try:
                info = super().push_to_hub()
                if info is not None:
                    self.commits += 1
                return info
            except Exception as e:
                status = getattr(getattr(e, "response", None), "status_code", None)
                if attempt == self.hub_config.retries or (isinstance(e, HfHubHTTPError) and status in _NO_RETRY):
                    raise
                logger.warning("Hub commit failed (%s); retrying in %.1f s", e, delay)
                time.sleep(delay)
                delay *= 2

    def flush(self, timeout_s: float | None = 120.0):
        """Commit everything stored so far now and wait for it (raises if the commit fails)."""
        return self.trigger().result(timeout=timeout_s)


def flush_on_sigterm(writeback: "HubWriteBack | WriteBackStarter", timeout_s: float = 60.0) -> bool:
    """On SIGTERM, make a last commit, then hand the signal to the previous handler (by default the
    process then ends as SIGTERM would have ended it). `writeback` may be a starter still retrying:
    the commit then goes through whichever write-back it has started by then. Only the main thread
    can install a handler; returns False elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        logger.warning("flush_on_sigterm must be called from the main thread; SIGTERM will not flush")
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        current = writeback.writeback if isinstance(writeback, WriteBackStarter) else writeback
        if isinstance(writeback, WriteBackStarter):
            writeback.stop()
        if current is not None:
            try:
                current.flush(timeout_s)
            except Exception:
                logger.exception("last Hub commit on SIGTERM failed; the labels are safe in the local store")
            current.stop()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
    return True


class WriteBackStarter:
    """Starts the write-back, and keeps retrying in the background while the Hub is unreachable (a
    Space can start during a Hub outage; its labels must still get their off-site copy)."""

    def __init__(self, store: AnnotationStore, config: HubConfig, retry_s: float | None = None, **kwargs):
        self.store, self.config, self.kwargs = store, config, kwargs
        self.retry_s = config.every_minutes * 60 if retry_s is None else retry_s
        self.writeback: HubWriteBack | None = None
        self.attempts = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def try_start(self) -> bool:
        self.attempts += 1
        try:
            self.writeback = HubWriteBack(self.store, self.config, **self.kwargs)
        except Exception as e:  # noqa: BLE001 - the Hub being down or a bad token must not keep the app from starting
            print(f"annotation write-back to {self.config.repo_id} is off: {type(e).__name__}: "
                  f"{_redacted(str(e), self.config)}; labels are kept locally, retrying in {self.retry_s:.0f} s",
                  file=sys.stderr)  # fmt: skip
            return False
        if self.attempts > 1:
            print(f"annotation write-back to {self.config.repo_id} is on (attempt {self.attempts})", file=sys.stderr)
        return True

    def retry_in_background(self) -> None:
        def loop():
            while not self._stopped.wait(self.retry_s):
                if self.try_start():
                    return

        self._thread = threading.Thread(target=loop, name="hub-writeback-start", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()


def start_writeback(store: AnnotationStore, config: HubConfig | None = None, retry_s: float | None = None,
                    **kwargs) -> WriteBackStarter | None:  # fmt: skip
    """Start the write-back when a repo id and token are configured (default: from the environment,
    SPATIAL_ANNOTATION_DATASET and HF_TOKEN) and flush on SIGTERM; None when not configured. If the
    Hub cannot be reached, retries every `retry_s` seconds (default: the push interval) in the
    background; `.writeback` is the running write-back once one has started. Call it from the main
    thread at start-up."""
    config = config or HubConfig.from_env()
    if not config.enabled:
        return None
    starter = WriteBackStarter(store, config, retry_s, **kwargs)
    if not starter.try_start():
        starter.retry_in_background()
    flush_on_sigterm(starter)
    return starter


def _redacted(text: str, config: HubConfig) -> str:
    text = text.splitlines()[0] if text else ""
    return text.replace(config.token, "hf_***") if getattr(config, "token", None) else text
