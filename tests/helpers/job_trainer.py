"""A minimal trainer process for job-manager tests: it follows the trainer contract exactly
(metrics.jsonl with step/total_steps, checkpoint-N folders, `final/` on success, save-and-exit on
SIGTERM, `--resume` continues from the last checkpoint) but its "training" is a sleep per step, so
the manager's behaviour is tested in seconds without depending on model code."""

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--output_dir", required=True)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--step_seconds", type=float, default=0.2)
ap.add_argument("--fail_at", type=int, default=-1)
ap.add_argument("--ignore_sigterm", default="false")
ap.add_argument("--resume", default="false")
ap.add_argument("--save_seconds", type=float, default=0.0, help="how long saving on SIGTERM takes")
ap.add_argument("--finish", default="final", help="what success leaves: `final` (GRPO) or `model` (reward training)")
ap.add_argument("--detached_child", default="false",
                help="start a child in its own session that ignores SIGTERM, as a launcher's worker might")
args = ap.parse_args()
out = Path(args.output_dir)
stop = False
if args.detached_child == "true":
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    (out / "child.pid").write_text(str(child.pid))


def on_term(signum, frame):
    global stop
    stop = True


if args.ignore_sigterm == "true":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_term)

start = 0
if args.resume == "true":
    done = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    start = done[-1] if done else 0
    print(f"resuming from step {start}", flush=True)
for step in range(start + 1, args.steps + 1):
    time.sleep(args.step_seconds)
    if step == args.fail_at:
        print("RuntimeError: planned failure at step", step, flush=True)
        sys.exit(3)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "total_steps": args.steps, "loss": 1.0 / step}) + "\n")
    print(f"step {step}/{args.steps}", flush=True)
    if stop:
        time.sleep(args.save_seconds)
        (out / f"checkpoint-{step}").mkdir(exist_ok=True)
        (out / f"checkpoint-{step}" / "state.json").write_text(json.dumps({"step": step}))
        print("saved and stopping on SIGTERM", flush=True)
        sys.exit(0)
    if step % 2 == 0:
        (out / f"checkpoint-{step}").mkdir(exist_ok=True)
        (out / f"checkpoint-{step}" / "state.json").write_text(json.dumps({"step": step}))
if args.finish == "model":
    (out / "spatialscore_config.json").write_text(json.dumps({"step": args.steps}))
else:
    (out / "final").mkdir(exist_ok=True)
    (out / "final" / "state.json").write_text(json.dumps({"step": args.steps}))
print("done", flush=True)
