"""Annotation store command line (the app's store lives in `$SPATIAL_DATA_DIR/annotation`).

    python -m spatial.annotation import --store DIR SOURCE     # world:N[:SEED], a pair folder, owner/name
    python -m spatial.annotation export --store DIR --out OUT [--min-votes N] [--test-fraction F]
    python -m spatial.annotation stats --store DIR
    python -m spatial.annotation push --store DIR              # one commit to $SPATIAL_ANNOTATION_DATASET

After `export`, `python -m training.train_reward --pairs OUT/pairs` trains on the human labels.
Each command prints one JSON object; bad input prints one `error:` line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from .agreement import agreement_report
from .config import ExportConfig, HubConfig
from .errors import AnnotationError
from .export import export
from .sources import import_source
from .store import AnnotationStore


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit code 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m spatial.annotation", description="Human preference labels: import, export, stats.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("import", help="add pairs to the queue")
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("source", help="world:N[:SEED], a pair dataset folder, or a Hub dataset id owner/name")
    p = sub.add_parser("export", help="write a dataset folder (pairs and raw labels)")
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--min-votes", type=int, default=ExportConfig.min_votes)
    p.add_argument("--test-fraction", type=float, default=ExportConfig.test_fraction)
    p = sub.add_parser("stats", help="agreement statistics")
    p.add_argument("--store", required=True, type=Path)
    p = sub.add_parser("push", help="commit the labels to the Hub dataset now")
    p.add_argument("--store", required=True, type=Path)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "import" and not (args.store / "annotation.sqlite3").is_file():
        print(f"error: no annotation store at {args.store}", file=sys.stderr)
        return 2
    try:
        store = AnnotationStore(args.store)
        if args.command == "import":
            s = import_source(store, args.source)
            out = {"added": s.added, "existing": s.existing, "gold": s.gold}
        elif args.command == "export":
            s = export(store, args.out, ExportConfig(min_votes=args.min_votes, test_fraction=args.test_fraction))
            out = {"folder": str(s.folder), "labels": s.labels, "pairs": s.pairs, "dropped": s.dropped}
        elif args.command == "stats":
            out = agreement_report(store.labels()).to_dict()
        else:
            from .hub import HubWriteBack

            config = HubConfig.from_env()
            if not config.enabled:
                raise AnnotationError("set SPATIAL_ANNOTATION_DATASET and HF_TOKEN to push")
            writeback = HubWriteBack(store, config)
            writeback.flush()  # waits for the scheduler's first round too (one worker runs them in turn)
            writeback.stop()
            out = {"repo": config.repo_id, "commits": writeback.commits, "labels_written": writeback.cursor}
    except (AnnotationError, ValueError, OSError, sqlite3.Error) as e:  # bad input, a full disk, not a store
        print(f"error: {type(e).__name__ + ': ' if isinstance(e, (OSError, sqlite3.Error)) else ''}{e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - `push` without a network: the HTTP client's own error types vary
        if args.command != "push":
            raise
        print(f"error: could not reach the Hub ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
