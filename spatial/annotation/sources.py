"""Where pairs come from: a SpatialWorld pair folder (`write_pairs` layout), a Hub dataset (or any
`datasets.load_dataset` path) with `prompt`, `chosen`, `rejected` columns, SpatialWorld sampled on
the fly, or single pairs from the Generate tab (`AnnotationStore.add_pair`).

Every importer reads and decodes the whole source before adding anything, so a missing column or a
corrupt image raises SourceError and leaves the store as it was. Importing the same source twice
adds nothing the second time (pair ids are content hashes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from spatial.world import WorldConfig, example_seed, render, sample_pair

from .config import HELD_OUT_SPLITS
from .errors import SourceError
from .images import decode_image
from .store import AnnotationStore, ImportSummary, PairInput

FOLDER_COLUMNS = ("prompt", "chosen_file_name", "rejected_file_name")
DATASET_COLUMNS = ("prompt", "chosen", "rejected")
CHUNK = 256  # pairs per transaction: bounds memory for large sources


Items = Callable[[], Iterator[tuple[str, PairInput]]]  # (where it comes from, the pair)


def _add_all(store: AnnotationStore, items: Items, gold_fraction: float | None, max_side: int) -> ImportSummary:
    """Validate every item (decode both images), then add them in chunks."""
    n = 0
    for n, (where, item) in enumerate(items(), 1):
        if not isinstance(item.prompt, str) or not item.prompt.strip():
            raise SourceError(f"{where}: the prompt is empty")
        a = decode_image(item.image_a, max_side, f"{where}: chosen image")
        b = decode_image(item.image_b, max_side, f"{where}: rejected image")
        # Checked here, not only by the store, so a bad row late in a big source leaves nothing imported.
        if a.size == b.size and a.tobytes() == b.tobytes():
            raise SourceError(f"{where}: the chosen and rejected images are identical")
    if n == 0:
        raise SourceError("the source holds no pairs")
    added = existing = gold = 0
    chunk: list[PairInput] = []
    for _, item in items():
        chunk.append(item)
        if len(chunk) == CHUNK:
            s = store.add_pairs(chunk, gold_fraction)
            added, existing, gold = added + s.added, existing + s.existing, gold + s.gold
            chunk = []
    if chunk:
        s = store.add_pairs(chunk, gold_fraction)
        added, existing, gold = added + s.added, existing + s.existing, gold + s.gold
    return ImportSummary(added, existing, gold)


def _metadata_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*/metadata.jsonl"))
    if (folder / "metadata.jsonl").is_file():
        files.insert(0, folder / "metadata.jsonl")
    return files


def _read_metadata(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: cannot be read ({e})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SourceError(f"{path} line {i}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise SourceError(f"{path} line {i}: expected a JSON object")
        missing = [c for c in FOLDER_COLUMNS if c not in row]
        if missing:
            raise SourceError(
                f"{path} line {i} lacks {', '.join(missing)}; a pair dataset needs {', '.join(FOLDER_COLUMNS)}"
            )
        rows.append(row)
    return rows


def import_pair_folder(store: AnnotationStore, folder: str | Path, splits: tuple[str, ...] | None = None,
                       source: str | None = None, gold_fraction: float | None = None) -> ImportSummary:  # fmt: skip
    """Import a pair dataset folder: `DIR/{split}/metadata.jsonl` with `prompt`, `chosen_file_name`,
    `rejected_file_name` (paths relative to the split folder). The chosen image is the known answer."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"no pair dataset folder at {str(folder)!r}")
    files = [f for f in _metadata_files(folder) if splits is None or f.parent.name in splits]
    if not files:
        raise SourceError(f"{folder} holds no */metadata.jsonl; expected the pair layout DIR/train/metadata.jsonl")
    tables = [(f, _read_metadata(f)) for f in files]
    root = folder.resolve()
    tag = source or f"folder:{folder.name}"

    def items() -> Iterator[tuple[str, PairInput]]:
        for path, rows in tables:
            base = path.parent.resolve()  # resolved like root: how the path was typed must not change the split
            for i, row in enumerate(rows, 1):
                files = []
                for col in ("chosen_file_name", "rejected_file_name"):
                    p = (base / str(row[col])).resolve()
                    if not p.is_relative_to(root):
                        raise SourceError(f"{path} line {i}: {col} points outside the dataset folder")
                    files.append(p)
                meta = {k: v for k, v in row.items() if k not in FOLDER_COLUMNS}
                # A split folder imported on its own (`pairs/test`) keeps its name, so it stays held out.
                meta["split"] = base.name if base != root or base.name.lower() in HELD_OUT_SPLITS else "train"
                yield f"{path} line {i}", PairInput(row["prompt"], files[0], files[1], tag, meta, known="a")

    return _add_all(store, items, gold_fraction, store.config.max_image_side)


def import_dataset(store: AnnotationStore, name: str, split: str | None = None, revision: str | None = None,
                   source: str | None = None, gold_fraction: float | None = None) -> ImportSummary:  # fmt: skip
    """Import a dataset through `datasets.load_dataset(name)`: a Hub dataset id or a local folder
    in the pair layout, with columns `prompt`, `chosen`, `rejected` (images)."""
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split, revision=revision)
    except Exception as e:  # the datasets library raises many types; all mean "cannot load"
        raise SourceError(f"cannot load dataset {name!r}: {e}") from None
    parts = {split: loaded} if split is not None else dict(loaded)
    for part, ds in parts.items():
        missing = [c for c in DATASET_COLUMNS if c not in ds.column_names]
        if missing:
            raise SourceError(
                f"dataset {name!r} split {part!r} lacks {', '.join(missing)} (it has {', '.join(ds.column_names)}); "
                f"a pair dataset needs {', '.join(DATASET_COLUMNS)}"
            )
    tag = source or f"dataset:{name}"

    def items() -> Iterator[tuple[str, PairInput]]:
        for part, ds in parts.items():
            for i in range(len(ds)):
                where = f"dataset {name!r} split {part!r} row {i}"
                try:
                    row = ds[i]
                except Exception as e:  # an image that fails to decode surfaces here
                    raise SourceError(f"{where}: cannot be read ({e})") from None
                meta = {k: v for k, v in row.items()
                        if k not in DATASET_COLUMNS and isinstance(v, (str, int, float, bool))}  # fmt: skip
                meta["split"] = part
                yield where, PairInput(row["prompt"], row["chosen"], row["rejected"], tag, meta, known="a")

    return _add_all(store, items, gold_fraction, store.config.max_image_side)


def import_world(store: AnnotationStore, n: int, seed: int = 0, size: int = 64,
                 cfg: WorldConfig | None = None, gold_fraction: float | None = None) -> ImportSummary:  # fmt: skip
    """Add n SpatialWorld pairs sampled on the fly (item i from `example_seed(seed, i)`, as in
    `write_pairs`); the chosen render is the known answer."""
    if n <= 0:
        raise SourceError("the number of pairs must be positive")
    cfg = cfg or WorldConfig()

    def items() -> Iterator[tuple[str, PairInput]]:
        for i in range(n):
            pair = sample_pair(example_seed(seed, i), cfg)
            meta = {"perturbation": pair.perturbation.kind, "perturbed_prompt": pair.perturbation.prompt,
                    "world_seed": seed, "world_index": i}  # fmt: skip
            yield f"SpatialWorld item {i}", PairInput(pair.prompt, render(pair.example.scene, size),
                                                      render(pair.perturbation.scene, size), "spatialworld", meta,
                                                      known="a")  # fmt: skip

    return _add_all(store, items, gold_fraction, store.config.max_image_side)


def import_source(store: AnnotationStore, spec: str, gold_fraction: float | None = None) -> ImportSummary:
    """Import from a spec typed by an admin: `world:N` or `world:N:SEED`, a local pair folder, or a
    Hub dataset id (`owner/name`)."""
    spec = (spec or "").strip()
    if not spec:
        raise SourceError("give a pair folder, a Hub dataset id (owner/name) or world:N")
    if spec.startswith("world:"):
        parts = spec.split(":")
        try:
            n, seed = int(parts[1]), int(parts[2]) if len(parts) > 2 else 0
        except (ValueError, IndexError):
            raise SourceError("write SpatialWorld sources as world:N or world:N:SEED") from None
        return import_world(store, n, seed, gold_fraction=gold_fraction)
    path = Path(spec).expanduser()
    if path.exists():
        return import_pair_folder(store, path, gold_fraction=gold_fraction)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return import_dataset(store, spec, gold_fraction=gold_fraction)
    raise SourceError(f"{spec!r} is neither a folder here, a Hub dataset id (owner/name) nor world:N")
