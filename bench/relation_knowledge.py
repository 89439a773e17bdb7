"""Does a generator follow relation words at all? Read from an evaluation's per-image verdicts.

    python -m training.evaluate generator --preset toy --seeds 4 --num_prompts 200 --out runs/eval-base
    python bench/relation_knowledge.py --results runs/eval-base [--base_model assets/toy/flux]

For every relation whose two objects the oracle found: how often it holds (a layout that ignores
the words holds about a third of the time: the oracle wants the offset within 60 degrees of the
named direction), and the mean offset of subject from object along the named direction (0 for a
model that ignores the words). With --base_model, also how much the T5 encoder's output for an
object changes when the object swaps roles ("A left of B" vs "B left of A"): cosine 1 means the
text the transformer reads cannot tell subject from object. With --split_words "below,right of",
also object and spatial accuracy for the prompts that use any of those words against the rest
(how a long-tail word costs a base, see --rare_relations). Always also: the share of named objects
found, and object accuracy by the number of objects a prompt names (where a base loses objects).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial.world.vocab import RELATIONS  # noqa: E402

DIRECTION = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}


def centre(box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def relation_stats(rows: list[dict]) -> dict:
    offsets, holds = defaultdict(list), defaultdict(list)
    for row in rows:
        boxes = {o["name"]: o["box"] for o in row["objects"]}
        for rel in row["relations"]:
            a, b = boxes[rel["subject"]], boxes[rel["object"]]
            if a is None or b is None:
                continue
            offsets[rel["relation"]].append(float((centre(a) - centre(b)) @ np.array(DIRECTION[rel["relation"]])))
            holds[rel["relation"]].append(rel["verdict"] == "true")
    every = [h for v in holds.values() for h in v]
    return {
        "relations_with_both_objects": len(every),
        "holds_given_both_found": round(float(np.mean(every)), 4) if every else None,
        "per_relation": {r: {"n": len(holds[r]), "holds": round(float(np.mean(holds[r])), 3),
                             "mean_offset_along_direction": round(float(np.mean(offsets[r])), 3),
                             "offset_positive": round(float(np.mean(np.array(offsets[r]) > 0)), 3)}
                         for r in sorted(holds)},
    }  # fmt: skip


def object_stats(rows: list[dict]) -> dict:
    named = [o["found"] for r in rows for o in r["objects"]]
    by_count = defaultdict(list)
    for r in rows:
        by_count[len(r["objects"])].append(r["objects_ok"])
    return {"named_objects": len(named),
            "named_objects_found": round(float(np.mean(named)), 4) if named else None,
            "object_accuracy_by_count": {str(k): {"images": len(v), "object_accuracy": round(float(np.mean(v)), 4)}
                                         for k, v in sorted(by_count.items())}}  # fmt: skip


def split_by_words(rows: list[dict], words: list[str]) -> dict:
    def summary(subset):
        n = len(subset)
        return {"images": n,
                "object_accuracy": round(sum(r["objects_ok"] for r in subset) / n, 4) if n else None,
                "spatial_accuracy": round(sum(r["spatial_ok"] for r in subset) / n, 4) if n else None}  # fmt: skip

    uses = [any(rel["relation"] in words for rel in r["relations"]) for r in rows]
    return {"with_words": summary([r for r, u in zip(rows, uses) if u]),
            "without_words": summary([r for r, u in zip(rows, uses) if not u])}  # fmt: skip


def role_cosine(base_model: str) -> float:
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(base_model)
    tok, t5 = pipe.tokenizer_2, pipe.text_encoder_2.eval()
    pairs = [("red circle", "blue square"), ("green triangle", "yellow diamond"), ("purple rectangle", "orange circle")]
    cosines = []
    for a, b in pairs:
        for rel in ("left of", "above"):
            texts = [f"a {a} {rel} a {b}", f"a {b} {rel} a {a}"]
            ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
            with torch.no_grad():
                out = t5(ids)[0]
            first, second = tok.convert_ids_to_tokens(ids[0]), tok.convert_ids_to_tokens(ids[1])
            i, j = first.index(a), second.index(a)  # object tokens: "<colour> <shape>" is one token
            cosines.append(torch.nn.functional.cosine_similarity(out[0, i], out[1, j], dim=0).item())
    return round(float(np.mean(cosines)), 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/relation_knowledge.py")
    ap.add_argument("--results", required=True, help="an evaluation's --out folder (holds results.jsonl)")
    ap.add_argument("--base_model", default=None, help="a FluxPipeline folder whose T5 to probe for roles")
    ap.add_argument("--split_words", default=None, help='comma-separated relation words, e.g. "below,right of"')
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in (Path(args.results) / "results.jsonl").read_text().splitlines()]
    out = {"results": args.results, "images": len(rows), **relation_stats(rows), **object_stats(rows)}
    if args.split_words:
        words = [w.strip() for w in args.split_words.split(",") if w.strip()]
        unknown = sorted(set(words) - set(RELATIONS))
        if unknown:
            ap.error(f"unknown relation words {unknown}; known: {list(RELATIONS)}")
        out["split"] = {"words": words, **split_by_words(rows, words)}
    if args.base_model:
        out["t5_subject_vs_object_cosine"] = role_cosine(args.base_model)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
