"""JSON-lines run logs (metrics.jsonl and the like), shared by every trainer.

A run that resumes from a checkpoint redoes the steps after it; the rows those steps logged before
the interruption are dropped first, so a log holds each step once, as the curves in the app expect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


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
