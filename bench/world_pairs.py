"""Wall time of `python -m spatial.world pairs --n 2000` (target: under 60 s on 2 cores).

    python bench/world_pairs.py --n 2000 --repeats 5

Runs the real command in a fresh process each time and prints the median as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    times = []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "spatial.world", "pairs", "--n", str(args.n), "--seed", str(r),
                 "--out", out, "--size", str(args.size)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            times.append(time.perf_counter() - t0)
    print(json.dumps({"n": args.n, "size": args.size, "runs_s": [round(t, 2) for t in times],
                      "median_s": round(statistics.median(times), 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
