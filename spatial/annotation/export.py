"""Export labels to a dataset folder that `datasets.load_dataset` reads, in two subsets (configs):

    OUT/README.md                          dataset card; its YAML declares the two configs
    OUT/pairs/{train,test}/metadata.jsonl  reward-training layout: prompt, chosen_file_name,
    OUT/pairs/{train,test}/images/*.png    rejected_file_name, vote counts (majority-resolved)
    OUT/labels/<writer>/metadata.jsonl     raw labels: every label, who, when, the sides shown
    OUT/labels/<writer>/images/*.png       (left_file_name / right_file_name)

    load_dataset(OUT, "pairs")    -> columns prompt, chosen (Image), rejected (Image), votes_*, ...
    load_dataset(OUT, "labels")   -> columns annotator, label, verdict, left (Image), right (Image), ...
    python -m training.train_reward --pairs OUT/pairs

`<writer>` is `export` for a one-off export and `<host>-<pid>-<random>` for the Hub write-back, so
every process appends to files of its own and a restart never overwrites another's. A pair is
resolved when one verdict has strictly more votes than any other (ties and both-wrong majorities
are dropped); images are named by their sha256. No column is ever null (empty text instead):
`datasets` refuses splits or files whose inferred column types differ.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .agreement import majority
from .config import HELD_OUT_SPLITS, ExportConfig
from .errors import AnnotationError
from .store import AnnotationStore, LabelRecord, unit_hash


CARD_TITLE = "Spatial Studio preference labels"


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


def _link(src: Path, dst: Path) -> None:
    """Put an immutable content-addressed file at dst (hard link when possible, else a copy)."""
    if dst.exists():
        return
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _write_if_changed(path: Path, text: str) -> bool:
    """Atomic, fsynced write; leaves the file (and its mtime) alone when the content is the same."""
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True


def label_row(r: LabelRecord, missing: set[str] | frozenset = frozenset()) -> dict:
    """One raw label as written to the labels subset. An image whose file is gone from the store
    (`missing`: its digests) gets a null file name, which `datasets` loads as no image."""
    return {
        "seq": r.seq,
        "submission_id": r.submission_id,
        "pair_id": r.pair_id,
        "prompt": r.prompt,
        "annotator": r.annotator,
        "label": r.label,
        "verdict": r.verdict,
        "left_image": r.left_image,
        "left_file_name": None if r.left in missing else f"images/{r.left}.png",
        "right_file_name": None if r.right in missing else f"images/{r.right}.png",
        "image_a": r.image_a,
        "image_b": r.image_b,
        "note": r.note or "",
        "shown_at": _iso(r.shown_at),
        "labelled_at": _iso(r.created),
        "source": r.source,
        "gold": r.gold,
        "known": r.known or "",
    }


def append_labels(store: AnnotationStore, folder: Path, after_seq: int = 0,
                  labels: list[LabelRecord] | None = None) -> int:  # fmt: skip
    """Append the labels stored after `after_seq` to `folder/metadata.jsonl` (images first, then
    the lines, then fsync); return the last seq written."""
    labels = store.labels(after_seq) if labels is None else [r for r in labels if r.seq > after_seq]
    if not labels:
        return after_seq
    (folder / "images").mkdir(parents=True, exist_ok=True)
    # A label on a pair whose image file has gone (the Annotate tab skips such pairs) is still
    # written, without that image: one lost file must not hold back every later label.
    missing = missing_images(store, {d for r in labels for d in (r.left, r.right)})
    for r in labels:
        for digest in (r.left, r.right):
            if digest not in missing:
                _link(store.image_path(digest), folder / "images" / f"{digest}.png")
    with open(folder / "metadata.jsonl", "a") as f:
        size = f.tell()
        try:
            f.write("".join(json.dumps(label_row(r, missing)) + "\n" for r in labels))
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            # A partial append (disk full, I/O error) would be appended again after its own
            # fragment next round: duplicate labels and a broken line. Leave the file as it was.
            f.truncate(size)
            raise
    return labels[-1].seq


def missing_images(store: AnnotationStore, digests: set[str]) -> set[str]:
    """The digests among `digests` whose file is not in the store's image folder."""
    return {d for d in digests if not store.image_path(d).is_file()}


def last_seq_in(labels_root: Path) -> int:
    """The highest label seq already written under labels_root/*/metadata.jsonl (0 if none)."""
    best = 0
    for path in labels_root.glob("*/metadata.jsonl"):
        with open(path) as f:
            for line in f:
                try:
                    best = max(best, int(json.loads(line)["seq"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from a crash: that label is written again
    return best


@dataclass(frozen=True)
class ResolvedPair:
    pair_id: str
    prompt: str
    chosen: str
    rejected: str
    votes: dict
    source: str
    gold: bool
    known: str | None
    winner: str


def resolve_pairs(labels: list[LabelRecord], config: ExportConfig) -> tuple[list[ResolvedPair], int]:
    """Majority-resolved pairs and the number of labelled pairs dropped (tie, both wrong, no majority,
    too few votes)."""
    by_pair: dict[str, list[LabelRecord]] = {}
    for r in labels:
        by_pair.setdefault(r.pair_id, []).append(r)
    out, dropped = [], 0
    for pid, rows in by_pair.items():
        votes = Counter(r.verdict for r in rows)
        n = sum(v for k, v in votes.items() if k != "skip")
        first = rows[0]
        if n == 0:
            continue
        winner = majority({k: v for k, v in votes.items() if k != "skip"})
        if n < config.min_votes or winner not in ("a", "b") or (first.gold and not config.include_gold):
            dropped += 1
            continue
        chosen, rejected = (first.image_a, first.image_b) if winner == "a" else (first.image_b, first.image_a)
        out.append(ResolvedPair(pid, first.prompt, chosen, rejected, dict(votes), first.source, first.gold,
                                first.known, winner))  # fmt: skip
    return out, dropped


def pair_row(p: ResolvedPair) -> dict:
    v = p.votes
    loser = "b" if p.winner == "a" else "a"
    return {
        "prompt": p.prompt,
        "chosen_file_name": f"images/{p.chosen}.png",
        "rejected_file_name": f"images/{p.rejected}.png",
        "pair_id": p.pair_id,
        "votes_chosen": v.get(p.winner, 0),
        "votes_rejected": v.get(loser, 0),
        "votes_tie": v.get("tie", 0),
        "votes_both_wrong": v.get("both_wrong", 0),
        "votes_skip": v.get("skip", 0),
        "source": p.source,
        "gold": p.gold,
        "known": "unknown" if p.known is None else ("chosen" if p.known == p.winner else "rejected"),
    }




def write_pairs_subset(store: AnnotationStore, folder: Path, config: ExportConfig,
                       labels: list[LabelRecord] | None = None) -> dict[str, int]:  # fmt: skip
    """Write the majority-resolved pairs under folder/{train,test}; return rows per split (splits
    with no rows are left out). Metadata files are rewritten only when their content changes."""
    labels = store.labels() if labels is None else labels
    resolved, _ = resolve_pairs(labels, config)
    # A preference pair without both images cannot train anything: it is left out.
    missing = missing_images(store, {d for p in resolved for d in (p.chosen, p.rejected)})
    resolved = [p for p in resolved if p.chosen not in missing and p.rejected not in missing]
    # Pairs imported from a source's held-out split stay held out: training on this subset plus that
    # source, then evaluating on its test split, must not have seen them (pair ids are content hashes).
    held_out = {r.id for r in store.pairs() if str(r.meta.get("split", "")).lower() in HELD_OUT_SPLITS}
    splits: dict[str, list[ResolvedPair]] = {"train": [], "test": []}
    for p in sorted(resolved, key=lambda p: p.pair_id):
        test = p.pair_id in held_out or unit_hash(p.pair_id, "split") < config.test_fraction
        splits["test" if test else "train"].append(p)
    counts = {}
    for split, rows in splits.items():
        meta = folder / split / "metadata.jsonl"
        if not rows:
            if meta.exists():
                meta.unlink()
            continue
        (folder / split / "images").mkdir(parents=True, exist_ok=True)
        for p in rows:
            for digest in (p.chosen, p.rejected):
                _link(store.image_path(digest), folder / split / "images" / f"{digest}.png")
        _write_if_changed(meta, "".join(json.dumps(pair_row(p)) + "\n" for p in rows))
        counts[split] = len(rows)
    return counts


def dataset_card(pair_splits: dict[str, int], n_labels: int) -> str:
    """README.md whose YAML header declares the `pairs` (default) and `labels` configs."""
    configs = []
    if pair_splits:
        files = "".join(f"  - split: {s}\n    path: pairs/{s}/**\n" for s in pair_splits)
        configs.append(f"- config_name: pairs\n  default: true\n  data_files:\n{files}")
    if n_labels:
        configs.append("- config_name: labels\n  data_files:\n  - split: train\n    path: labels/**\n")
    header = "---\nconfigs:\n" + "".join(configs) + "---\n" if configs else ""
    counts = ", ".join(f"{n} {s}" for s, n in pair_splits.items()) or "none yet"
    return (
        f"{header}# {CARD_TITLE}\n\n"
        "Human judgements of image pairs for spatial prompts, collected with Spatial Studio's Annotate tab.\n\n"
        f"- `pairs` (default): majority-resolved preference pairs ({counts}); columns `prompt`, `chosen`, "
        "`rejected` and vote counts. Ties and both-wrong majorities are left out.\n"
        "- `labels`: every raw label with annotator, time, the verdict and the images "
        "as shown (`left`, `right`).\n\n"
        '```python\nfrom datasets import load_dataset\npairs = load_dataset(REPO_OR_DIR, "pairs")\n'
        'labels = load_dataset(REPO_OR_DIR, "labels")\n```\n'
    )


def is_export(folder: Path) -> bool:
    card = folder / "README.md"
    return card.is_file() and CARD_TITLE in card.read_text(errors="replace")


@dataclass(frozen=True)
class ExportSummary:
    folder: Path
    labels: int
    pairs: dict
    dropped: int

    def __str__(self) -> str:
        splits = ", ".join(f"{n} {s}" for s, n in self.pairs.items()) or "no"
        return f"{self.labels} labels and {splits} resolved pairs ({self.dropped} dropped) written to {self.folder}"


def export(store: AnnotationStore, out: str | Path, config: ExportConfig | None = None) -> ExportSummary:
    """Write (or rewrite) a complete export of the store at `out`. The old export at `out`, if any,
    is replaced only after the new one is complete."""
    config = config or ExportConfig()
    config.validate()
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_export(out))):
        raise AnnotationError(f"{out} exists and is not an annotation export; choose a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        labels = store.labels()
        append_labels(store, tmp / "labels" / "export", labels=labels)
        counts = write_pairs_subset(store, tmp / "pairs", config, labels)
        _, dropped = resolve_pairs(labels, config)
        (tmp / "README.md").write_text(dataset_card(counts, len(labels)))
        if out.exists():
            old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportSummary(out, len(labels), counts, dropped)
