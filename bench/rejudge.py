"""Judge saved evaluation images again with the oracle as it is now, against what was recorded.

    python bench/rejudge.py --results runs/eval-base-v5,runs/eval-w-b0.3-600

`training.evaluate generator --out DIR` keeps every image and its verdict (DIR/results.jsonl); when
the oracle changes, this says what each saved evaluation measures under the new one, without
rendering anything again. One JSON line per folder: object and spatial accuracy as recorded and
now, and the images whose verdict changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from spatial.world import check  # noqa: E402


def rejudge(folder: Path) -> dict:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    changed, objects, spatial = [], 0, 0
    for r in rows:
        new = check(Image.open(folder / r["file_name"]), r["prompt"])
        found = all(o["found"] for o in new.objects)
        objects += found
        spatial += new.satisfied
        if (found, new.satisfied) != (r["objects_ok"], r["spatial_ok"]):
            changed.append(r["file_name"])
    n = len(rows)
    return {"results": str(folder), "n": n,
            "object_accuracy": {"recorded": round(sum(r["objects_ok"] for r in rows) / n, 4), "now": round(objects / n, 4)},
            "spatial_accuracy": {"recorded": round(sum(r["spatial_ok"] for r in rows) / n, 4), "now": round(spatial / n, 4)},
            "changed": changed}  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="comma-separated evaluation folders (each with results.jsonl)")
    args = ap.parse_args(argv)
    for folder in args.results.split(","):
        print(json.dumps(rejudge(Path(folder))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
