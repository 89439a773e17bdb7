"""A process killed with SIGKILL in the middle of a load run loses no acknowledged label, and the
queue carries on after a restart (the dead process's leases run out)."""

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from spatial.annotation import AnnotationConfig, AnnotationStore, PairInput

ROOT = Path(__file__).resolve().parents[1]
PAIRS, R, ANNOTATORS = 120, 3, 8

# Annotator threads label until the queue is empty; each acknowledged label's submission id is
# printed only after `submit` returned (one line, flushed): the parent's record of acknowledgements.
CHILD = """
import sys, threading
from spatial.annotation import AnnotationConfig, AnnotationStore
store = AnnotationStore(sys.argv[1], AnnotationConfig(overlap=int(sys.argv[2]), lease_s=float(sys.argv[3])))
out = threading.Lock()

def annotate(i):
    who = f"ann{i}"
    while (a := store.next_pair(who)) is not None:
        ack = store.submit(who, a.pair_id, ("left", "right", "tie", "both_wrong")[i % 4], a.showing_id)
        with out:
            sys.stdout.write(ack.submission_id + "\\n")
            sys.stdout.flush()

threads = [threading.Thread(target=annotate, args=(i,)) for i in range(int(sys.argv[4]))]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done", flush=True)
"""


def run_child(root: Path, lease_s: float, kill_after: int | None) -> tuple[list[str], int]:
    """Run the annotators; SIGKILL them after `kill_after` acknowledgements. Returns every
    acknowledgement printed before the process died, and its exit status."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(R), str(lease_s), str(ANNOTATORS)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    acked = []
    try:
        for line in proc.stdout:
            line = line.strip()
            if line == "done":
                break
            acked.append(line)
            if kill_after is not None and len(acked) == kill_after:
                proc.send_signal(signal.SIGKILL)
                break
        acked += [x for x in (line.strip() for line in proc.stdout) if len(x) == 32]  # printed before the kill
    finally:
        code = proc.wait(timeout=60)
    return acked, code


def test_every_acknowledged_label_survives_sigkill_and_the_queue_finishes_after_restart(tmp_path):
    root = tmp_path / "store"
    store = AnnotationStore(root, AnnotationConfig(overlap=R))
    store.add_pairs([PairInput(f"a blue diamond below a red square #{i}", Image.new("RGB", (8, 8), (i, 1, 1)),
                               Image.new("RGB", (8, 8), (i, 200, 1))) for i in range(PAIRS)])  # fmt: skip
    store.close()

    acked, code = run_child(root, lease_s=1.0, kill_after=100)
    assert code == -signal.SIGKILL and len(acked) >= 100

    db = sqlite3.connect(root / "annotation.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r[0] for r in db.execute("SELECT submission_id FROM labels")}
    db.close()
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged labels lost"
    assert len(stored) < PAIRS * R  # it really was killed mid-run

    time.sleep(1.1)  # the killed process's leases run out
    more, code = run_child(root, lease_s=1.0, kill_after=None)
    assert code == 0
    after = AnnotationStore(root)
    labels = after.labels()
    assert len(labels) == PAIRS * R == len(stored) + len(more)
    assert len({(r.pair_id, r.annotator) for r in labels}) == len(labels)
    assert {p.n_votes for p in after.pairs()} == {R}
