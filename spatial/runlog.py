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


def check_same_run(saved: dict | None, current: dict, identity: set[str], quiet: set[str], where: str | Path) -> list[str]:
    """Refuse to resume a checkpoint that another run wrote (an output folder reused for another
    experiment): the result would be half one run, half the other. `identity` names the settings that
    make a run what it is (data, model, seeds); others (learning rate, length) may change on resume and
    are returned as `name: old -> new` for a note, except the `quiet` ones (running longer, logging
    more often). `saved` is the config the checkpoint was written under; None (a checkpoint from
    before configs were kept) is not checked."""
    if not saved:
        return []
    differ = sorted(k for k in current if k in saved and saved[k] != current[k])
    foreign = [k for k in differ if k in identity]
    if foreign:
        detail = "; ".join(f"{k} {saved[k]!r} there, {current[k]!r} now" for k in foreign[:4])
        raise ValueError(f"{where} is a checkpoint of another run ({detail}): give this run its own output "
                         "folder, or resume with the settings it was started with")
    return [f"{k}: {saved[k]!r} -> {current[k]!r}" for k in differ if k not in quiet]
