"""What every trainer shares: JSON-lines run logs (metrics.jsonl and the like) and the graceful
stop on SIGTERM (a cancelled job finishes its step, saves a checkpoint and exits).

A run that resumes from a checkpoint redoes the steps after it; the rows those steps logged before
the interruption are dropped first, so a log holds each step once, as the curves in the app expect.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path


def stop_on_sigterm(trainer) -> Callable[[], None]:
    """Make SIGTERM set `trainer._stop` (read at the end of each step); returns the function that puts
    the previous handler back. Only the main thread receives signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(trainer, "_stop", True))
    return lambda: signal.signal(signal.SIGTERM, previous)


def trim_jsonl(path: str | Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite `path` with only the rows `keep` accepts; a line cut off by a crash is dropped too."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and keep(row):
            kept.append(line)
    path.write_text("".join(x + "\n" for x in kept))


def steps_up_to(last: int, key: str = "step") -> Callable[[dict], bool]:
    """A `keep` for trim_jsonl: rows logged at or before step `last`."""
    return lambda row: isinstance(row.get(key), int) and row[key] <= last


def check_same_run(saved: dict | None, current: dict, may_change: set[str], where: str | Path) -> None:
    """Refuse to resume a checkpoint that a run with other settings wrote (an output folder reused for
    another experiment): the result would be half one run, half the other. `saved` is the config the
    checkpoint was written under (None for checkpoints from before configs were kept: not checked);
    `may_change` names the settings a resumed run may set anew (its length, logging, checkpointing)."""
    if not saved:
        return
    changed = sorted(k for k in current if k not in may_change and k in saved and saved[k] != current[k])
    if changed:
        detail = "; ".join(f"{k} {saved[k]!r} there, {current[k]!r} now" for k in changed[:4])
        raise ValueError(f"{where} holds a checkpoint of a run with other settings ({detail}): give this run "
                         "its own output folder, or remove that run's checkpoints to start over there")
