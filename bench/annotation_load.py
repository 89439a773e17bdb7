"""Load test of the annotation store: concurrent annotators submit a fixed number of labels.

    python bench/annotation_load.py --annotators 20 --labels 1000 --repeats 5
    python bench/annotation_load.py --synchronous NORMAL      # the cost of fsync at each commit
    python bench/annotation_load.py --via app                 # through the Annotate tab's HTTP API

Each annotator is a thread calling the store as the app's worker threads do (next pair, think
for `--think_ms`, submit), or with `--via app` an HTTP client calling the Annotate tab's API
endpoints (`/annotate_next`, `/annotate_submit`) of the app served by a second process on
localhost, timed at the client, next to a no-op endpoint's latency under the same load.

5% of submits are sent twice with the same submission id (a double
click). Afterwards the database is checked with plain SQL, not through the store: exactly
`--labels` labels, no (pair, annotator) or submission id twice, at most R non-skip labels per pair,
every label on a pair its annotator was shown. Prints one JSON object per run and a summary with
medians over runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.annotation import AnnotationConfig, AnnotationStore, import_world  # noqa: E402

LABEL_MIX = ["left"] * 40 + ["right"] * 35 + ["tie"] * 10 + ["both_wrong"] * 10 + ["skip"] * 5


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def build_template(root: Path, pairs: int, seed: int) -> float:
    t0 = time.perf_counter()
    store = AnnotationStore(root, AnnotationConfig())
    import_world(store, pairs, seed=seed)
    store.close()
    return time.perf_counter() - t0


def run_load(root: Path, annotators: int, labels: int, config: AnnotationConfig, think_ms: float = 0.0,
             seed: int = 0, on_ack=None, via: str = "store") -> dict:  # fmt: skip
    """Run the annotators until `labels` labels are acknowledged; return latencies (ms) and counts.
    `on_ack(ack)` is called after each acknowledged first submit (the crash test prints there)."""
    if via == "app":
        with app_server(root, config) as url:
            baseline = noop_baseline(url, annotators, min(labels, 400))
            clients = [AppClient(url, f"annotator-{i:02d}") for i in range(annotators)]
            res = _drive(clients, annotators, labels, think_ms, seed, on_ack)
        res["noop_ms"] = baseline
        return res
    store = AnnotationStore(root, config)
    res = _drive([store] * annotators, annotators, labels, think_ms, seed, on_ack)
    store.close()
    return res


def _drive(clients, annotators: int, labels: int, think_ms: float, seed: int, on_ack) -> dict:
    budget = threading.Semaphore(labels)
    submit_ms, next_ms, errors = [], [], []
    lock = threading.Lock()
    acked = []

    def annotator(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        who = f"annotator-{i:02d}"
        try:
            while budget.acquire(blocking=False):
                t0 = time.perf_counter()
                a = clients[i].next_pair(who)
                t1 = time.perf_counter()
                if a is None:
                    budget.release()
                    return
                if think_ms:
                    time.sleep(rng.expovariate(1.0 / think_ms) / 1000)
                label = rng.choice(LABEL_MIX)
                t2 = time.perf_counter()
                note = "bench" if rng.random() < 0.1 else None
                ack = clients[i].submit(who, a.pair_id, label, a.showing_id, note=note)
                t3 = time.perf_counter()
                if rng.random() < 0.05:
                    clients[i].submit(who, a.pair_id, label, a.showing_id)  # a double click stores nothing new
                with lock:
                    next_ms.append((t1 - t0) * 1000)
                    submit_ms.append((t3 - t2) * 1000)
                    acked.append(ack.submission_id)
                if on_ack is not None:
                    on_ack(ack)
        except Exception as e:  # reported, never swallowed
            errors.append(repr(e))

    threads = [threading.Thread(target=annotator, args=(i,)) for i in range(annotators)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "submit_ms": submit_ms, "next_ms": next_ms, "acked": acked, "errors": errors}


class AppClient:
    """The store calls of run_load, made over HTTP to the Annotate tab's API endpoints with Gradio's
    REST protocol (POST /gradio_api/call/NAME, then read the result stream). A plain HTTP client:
    gradio_client spends ~70 ms of CPU per call here, which on 2 cores would measure the client."""

    def __init__(self, url: str, who: str | None = None):
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(headers={"x-annotator": who} if who else {}, timeout=120)

    def call(self, name: str, *data):
        r = self.http.post(f"{self.url}/gradio_api/call/{name}", json={"data": list(data)})
        r.raise_for_status()
        stream = self.http.get(f"{self.url}/gradio_api/call/{name}/{r.json()['event_id']}").text
        event = None
        for line in stream.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line[5:])
                if event == "error":
                    raise RuntimeError(f"{name}: {payload}")
                return payload[0] if payload else None
        raise RuntimeError(f"{name}: no result in {stream[:200]!r}")

    def next_pair(self, who):
        r = self.call("annotate_next")
        if r["pair_id"] is None:
            return None
        return type("Shown", (), {"pair_id": r["pair_id"], "showing_id": r["submission_id"]})

    def submit(self, who, pair_id, label, submission_id, note=None):
        r = self.call("annotate_submit", pair_id, submission_id, label, note or "")
        return type("Ack", (), {"submission_id": submission_id, "seq": r["seq"], "duplicate": r["duplicate"]})


def noop() -> dict:
    return {}


def serve_app(root: Path, config: AnnotationConfig, port: int) -> None:
    """Serve the Annotate tab on localhost until SIGTERM; identity from an `x-annotator` header
    (bench only, no login). Also serves `/bench_noop`, an endpoint that does nothing: the baseline
    cost of a Gradio call on this machine."""
    import gradio as gr

    from ui.annotate import build_annotate_tab

    store = AnnotationStore(root, config)
    with gr.Blocks() as demo:
        with gr.Tab("Annotate"):
            build_annotate_tab(lambda: store, lambda profile, request: request.headers.get("x-annotator"),
                               lambda who: False)  # fmt: skip
        gr.api(noop, api_name="bench_noop", concurrency_limit=None)
    demo.queue(default_concurrency_limit=None).launch(server_port=port, prevent_thread_lock=True, quiet=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(demo.local_url, flush=True)
    stop.wait()
    demo.close()
    store.close()


@contextmanager
def app_server(root: Path, config: AnnotationConfig):
    """The app in its own process (its own interpreter, as a Space serves browsers elsewhere)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--serve", str(root), "--port", str(port), "--overlap", str(config.overlap),
           "--synchronous", config.synchronous]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def noop_baseline(url: str, annotators: int, calls: int) -> list[float]:
    """Latency (ms) of `/bench_noop` under the same concurrency: what a Gradio call costs here."""
    clients = [AppClient(url) for _ in range(annotators)]
    budget, out, lock = threading.Semaphore(calls), [], threading.Lock()

    def run(c):
        while budget.acquire(blocking=False):
            t0 = time.perf_counter()
            c.call("bench_noop")
            with lock:
                out.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def verify(db_path: Path, overlap: int, expected: int, acked: list[str]) -> dict:
    """The rules, checked with plain SQL on the database file."""
    db = sqlite3.connect(db_path)
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    checks = {
        "integrity": one("PRAGMA integrity_check") == "ok",
        "labels": one("SELECT COUNT(*) FROM labels"),
        "duplicate_pair_annotator": one(
            "SELECT COUNT(*) FROM (SELECT 1 FROM labels GROUP BY pair_id, annotator HAVING COUNT(*) > 1)"),
        "duplicate_submission": one(
            "SELECT COUNT(*) FROM (SELECT 1 FROM labels GROUP BY submission_id HAVING COUNT(*) > 1)"),
        "pairs_over_r": one(
            "SELECT COUNT(*) FROM (SELECT 1 FROM labels WHERE label != 'skip' GROUP BY pair_id"
            f" HAVING COUNT(*) > {overlap})"),
        "shown_twice": one(
            "SELECT COUNT(*) FROM (SELECT 1 FROM assignments GROUP BY pair_id, annotator HAVING COUNT(*) > 1)"),
        "labels_not_shown": one(
            "SELECT COUNT(*) FROM labels l LEFT JOIN assignments a"
            " ON a.pair_id = l.pair_id AND a.annotator = l.annotator WHERE a.pair_id IS NULL"),
        "votes_counter_mismatch": one(
            "SELECT COUNT(*) FROM pairs p WHERE p.n_votes != (SELECT COUNT(*) FROM labels l WHERE l.pair_id = p.id"
            " AND l.label != 'skip')"),
    }  # fmt: skip
    stored = {r[0] for r in db.execute("SELECT submission_id FROM labels")}
    checks["acked_missing"] = len(set(acked) - stored)
    db.close()
    broken = ("duplicate_pair_annotator", "duplicate_submission", "pairs_over_r", "shown_twice", "labels_not_shown",
              "votes_counter_mismatch")  # fmt: skip
    checks["ok"] = (checks["integrity"] and checks["labels"] == expected and checks["acked_missing"] == 0
                    and not any(checks[k] for k in broken))  # fmt: skip
    return checks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=400, help="SpatialWorld pairs in the queue (R x pairs >= labels)")
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL", "EXTRA"])
    ap.add_argument("--think_ms", type=float, default=0.0, help="mean pause between showing and submitting")
    ap.add_argument("--via", default="store", choices=["store", "app"], help="call the store, or the tab's HTTP API")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # internal: the app process of --via app
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    config = AnnotationConfig(overlap=args.overlap, synchronous=args.synchronous)
    if args.serve:
        serve_app(args.serve, config, args.port)
        return 0
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template"
        import_s = build_template(template, args.pairs, args.seed)
        for r in range(args.repeats):
            root = Path(tmp) / f"run{r}"
            shutil.copytree(template, root)
            res = run_load(root, args.annotators, args.labels, config, args.think_ms, seed=r, via=args.via)
            checks = verify(root / "annotation.sqlite3", args.overlap, args.labels, res["acked"])
            run = {
                "run": r,
                "wall_s": round(res["wall_s"], 2),
                "labels_per_s": round(len(res["acked"]) / res["wall_s"], 1),
                "submit_p50_ms": round(statistics.median(res["submit_ms"]), 2),
                "submit_p95_ms": round(quantile(res["submit_ms"], 0.95), 2),
                "submit_p99_ms": round(quantile(res["submit_ms"], 0.99), 2),
                "next_p50_ms": round(statistics.median(res["next_ms"]), 2),
                "next_p95_ms": round(quantile(res["next_ms"], 0.95), 2),
                **({"noop_p50_ms": round(statistics.median(res["noop_ms"]), 2),
                    "noop_p95_ms": round(quantile(res["noop_ms"], 0.95), 2)} if "noop_ms" in res else {}),
                "errors": res["errors"][:3],
                "checks": checks,
            }
            runs.append(run)
            print(json.dumps(run), flush=True)
    med = lambda k: round(statistics.median(run[k] for run in runs), 2)  # noqa: E731
    summary = {
        "annotators": args.annotators, "labels": args.labels, "pairs": args.pairs, "overlap": args.overlap,
        "synchronous": args.synchronous, "think_ms": args.think_ms, "via": args.via, "repeats": args.repeats,
        "import_s": round(import_s, 2), "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "median_submit_p50_ms": med("submit_p50_ms"), "median_submit_p95_ms": med("submit_p95_ms"),
        "median_submit_p99_ms": med("submit_p99_ms"), "median_next_p95_ms": med("next_p95_ms"),
        "median_labels_per_s": med("labels_per_s"), "median_wall_s": med("wall_s"),
        **({"median_noop_p50_ms": med("noop_p50_ms"), "median_noop_p95_ms": med("noop_p95_ms")}
           if args.via == "app" else {}),
        "all_checks_ok": all(run["checks"]["ok"] and not run["errors"] for run in runs),
    }  # fmt: skip
    print(json.dumps(summary))
    return 0 if summary["all_checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
