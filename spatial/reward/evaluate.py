"""`python -m training.evaluate reward --checkpoint PATH --pairs DIR`: pairwise accuracy of a scorer.

PATH is anything `spatial.scorers.load_scorer` takes: a SpatialScore checkpoint, `oracle`,
`judge`, `judge:<Qwen2.5-VL folder or Hub id>`. The last line printed is a JSON object:

    accuracy  fraction of pairs whose chosen image scores strictly above the rejected one
    n         pairs scored;  ties: pairs scored equal (counted wrong)
    For pairwise judges (one query shows both images): accuracy_chosen_first,
    accuracy_chosen_second and consistent_accuracy (right in both orders), as the paper reports
    against order bias. Point scorers score each image alone, so order cannot matter for them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .data import BadRowError, DatasetError, load_pairs, splits_of


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m training.evaluate reward", description="Pairwise accuracy of a reward model or judge.")
    ap.add_argument("--checkpoint", required=True, help="SpatialScore folder, oracle, judge or judge:<model>")
    ap.add_argument("--pairs", required=True, help="pair folder (SpatialWorld layout) or Hub dataset id")
    ap.add_argument("--split", default="auto", help="split to score: auto (test if present, else all), all, train, test")
    ap.add_argument("--limit", type=int, default=0, help="score only the first N pairs (0: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--on-bad-row", choices=("skip", "stop"), default="stop")
    return ap


def evaluate(scorer, rows, batch_size: int = 32, on_bad_row: str = "stop") -> dict:
    right = ties = n = skipped = 0
    first = second = both = 0
    for k in range(0, len(rows), batch_size):
        batch = []
        for row in rows[k : k + batch_size]:
            try:
                batch.append(row.decode())
            except BadRowError:
                if on_bad_row == "stop":
                    raise
                skipped += 1
        if not batch:
            continue
        prompts = [p for p, _, _ in batch]
        if scorer.pairwise:
            for p, w, l in batch:
                a = scorer.prob_prefer(p, w, l) > 0.5
                b = scorer.prob_prefer(p, l, w) < 0.5
                first, second, both = first + a, second + b, both + (a and b)
            n += len(batch)
            continue
        r = scorer.score(prompts + prompts, [w for _, w, _ in batch] + [l for _, _, l in batch])
        m = len(batch)
        right += int((r.mu[:m] > r.mu[m:]).sum())
        ties += int((r.mu[:m] == r.mu[m:]).sum())
        n += m
    if scorer.pairwise:
        out = {"accuracy": round(first / max(n, 1), 4), "n": n, "accuracy_chosen_first": round(first / max(n, 1), 4),
               "accuracy_chosen_second": round(second / max(n, 1), 4), "consistent_accuracy": round(both / max(n, 1), 4)}  # fmt: skip
    else:
        out = {"accuracy": round(right / max(n, 1), 4), "n": n, "ties": ties}
    if skipped:
        out["skipped"] = skipped
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from spatial.scorers import load_scorer

    split = args.split
    if split == "auto":
        split = "test" if "test" in splits_of(args.pairs) else "all"
    try:
        rows = load_pairs(args.pairs, split)
        if args.limit:
            rows = rows[: args.limit]
        if not rows:
            raise DatasetError(f"{args.pairs} ({split}) holds no pairs")
        scorer = load_scorer(args.checkpoint, device=args.device)
        t = time.perf_counter()
        result = evaluate(scorer, rows, args.batch_size, args.on_bad_row)
    except (DatasetError, BadRowError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result.update(checkpoint=str(args.checkpoint), pairs=str(args.pairs), split=split, scorer=scorer.name,
                  seconds=round(time.perf_counter() - t, 1))  # fmt: skip
    print(json.dumps(result))
    return 0
