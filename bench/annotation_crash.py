"""Crash test of the annotation store: SIGKILL the annotating process in the middle of a load run,
restart, and check that every acknowledged label is there and the run completes.

    python bench/annotation_crash.py --trials 10

Each trial copies a store of `--pairs` SpatialWorld pairs, starts a child process running the load
of bench/annotation_load.py (20 annotator threads, 1,000 labels), which prints each label's
submission id after `submit` returned. The parent kills the child with SIGKILL after a random
number of acknowledgements, keeps every id that was printed before the kill, reopens the store,
then starts a second child that submits the labels still missing to reach 1,000.
Checked with plain SQL: no acknowledged label missing, database integrity, exactly 1,000 labels at
the end, no (pair, annotator) or submission id twice, at most R non-skip labels per pair.

SIGKILL ends the process, not the machine: the operating system still writes what SQLite handed it.
`synchronous=FULL` (the default) is what keeps acknowledged labels through a power cut, which this
script cannot simulate.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotation_load import build_template, run_load, verify  # noqa: E402

from spatial.annotation import AnnotationConfig  # noqa: E402


def child(root: Path, annotators: int, labels: int, overlap: int, synchronous: str, seed: int) -> None:
    lock = threading.Lock()

    def on_ack(ack):
        with lock:
            sys.stdout.write(ack.submission_id + "\n")
            sys.stdout.flush()

    res = run_load(root, annotators, labels, AnnotationConfig(overlap=overlap, synchronous=synchronous), seed=seed,
                   on_ack=on_ack)  # fmt: skip
    if res["errors"]:
        print("errors: " + "; ".join(res["errors"][:3]), file=sys.stderr)
    print("done", flush=True)


def run_child(root: Path, args, labels: int, seed: int, kill_after: int | None) -> tuple[list[str], int]:
    cmd = [sys.executable, __file__, "--child", str(root), "--annotators", str(args.annotators), "--labels",
           str(labels), "--overlap", str(args.overlap), "--synchronous", args.synchronous, "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    acked = []
    for line in proc.stdout:
        line = line.strip()
        if line == "done":
            break
        acked.append(line)
        if kill_after is not None and len(acked) == kill_after:
            proc.send_signal(signal.SIGKILL)
            break
    acked += [x for x in (line.strip() for line in proc.stdout) if len(x) == 32]  # printed before it died
    return acked, proc.wait(timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL", "EXTRA"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: the process that gets killed
    args = ap.parse_args()
    if args.child:
        child(args.child, args.annotators, args.labels, args.overlap, args.synchronous, args.seed)
        return 0
    rng = random.Random(args.seed)
    trials = []
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template"
        build_template(template, args.pairs, args.seed)
        for t in range(args.trials):
            root = Path(tmp) / f"trial{t}"
            shutil.copytree(template, root)
            kill_after = rng.randint(args.labels // 20, args.labels * 19 // 20)
            t0 = time.perf_counter()
            acked, code = run_child(root, args, args.labels, seed=2 * t, kill_after=kill_after)
            db = sqlite3.connect(root / "annotation.sqlite3")  # "restart": open what the dead process left
            stored = {r[0] for r in db.execute("SELECT submission_id FROM labels")}
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            db.close()
            lost = len(set(acked) - stored)
            more, code2 = run_child(root, args, args.labels - len(stored), seed=2 * t + 1, kill_after=None)
            checks = verify(root / "annotation.sqlite3", args.overlap, args.labels, acked + more)
            trial = {
                "trial": t, "killed_after_acks": kill_after, "exit": code, "acked_before_kill": len(acked),
                "stored_at_restart": len(stored), "acked_lost": lost, "integrity_at_restart": integrity,
                "labels_after_restart_run": checks["labels"], "restart_exit": code2,
                "checks_ok": checks["ok"], "wall_s": round(time.perf_counter() - t0, 2),
            }  # fmt: skip
            trials.append(trial)
            print(json.dumps(trial), flush=True)
    ok = all(t["exit"] == -signal.SIGKILL and t["acked_lost"] == 0 and t["integrity_at_restart"] == "ok"
             and t["restart_exit"] == 0 and t["checks_ok"] for t in trials)  # fmt: skip
    print(json.dumps({
        "trials": len(trials), "synchronous": args.synchronous, "annotators": args.annotators, "labels": args.labels,
        "acked_before_kill_total": sum(t["acked_before_kill"] for t in trials),
        "acked_lost_total": sum(t["acked_lost"] for t in trials), "all_ok": ok,
    }))  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
