"""Preference pairs for reward training and evaluation, from a pair folder or a Hub dataset.

Both sources use the SpatialWorld pair layout (`prompt`, `chosen`, `rejected`; annotation exports
too). A folder with `<split>/metadata.jsonl` is read directly (image files named by
`chosen_file_name` / `rejected_file_name`); anything else goes to `datasets.load_dataset`, with
images left undecoded so one bad image is reported by row instead of failing the whole load.
Rows are checked when read: a missing column stops the load; an empty prompt or an image that
does not decode raises `BadRowError` naming the row (the trainer skips or stops as configured).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

REQUIRED = ("prompt", "chosen", "rejected")


class DatasetError(ValueError):
    """A pair source that cannot be used at all (missing, no such split, missing columns)."""


class BadRowError(ValueError):
    """One pair that cannot be used; the message names the row."""


class ImageLoadError(ValueError):
    """An image (path, bytes or object) that does not decode."""


def load_image(image, what: str = "image") -> Image.Image:
    """PIL image (RGB) from a PIL image, a path, raw bytes or a datasets {'bytes', 'path'} dict."""
    try:
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        if isinstance(image, dict):
            data = image.get("bytes")
            image = io.BytesIO(data) if data else image.get("path")
        elif isinstance(image, (bytes, bytearray)):
            image = io.BytesIO(image)
        if image is None:
            raise ImageLoadError(f"{what} is missing")
        with Image.open(image) as im:
            return im.convert("RGB")
    except ImageLoadError:
        raise
    except (FileNotFoundError, IsADirectoryError):
        raise ImageLoadError(f"{what}: no such file {image}") from None
    except (UnidentifiedImageError, OSError, ValueError, TypeError, AttributeError) as e:
        raise ImageLoadError(f"{what} does not decode as an image ({type(e).__name__})") from None


@dataclass(frozen=True)
class PairRow:
    """One preference pair, images not yet decoded; `where` names the row in messages."""

    prompt: str
    chosen: object
    rejected: object
    where: str

    def decode(self) -> tuple[str, Image.Image, Image.Image]:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise BadRowError(f"{self.where}: the prompt is empty")
        try:
            chosen, rejected = load_image(self.chosen, "chosen image"), load_image(self.rejected, "rejected image")
        except ImageLoadError as e:
            raise BadRowError(f"{self.where}: {e}") from None
        if chosen.size == rejected.size and chosen.tobytes() == rejected.tobytes():
            # A tie carries no preference; the Monte Carlo loss would only push sigma to zero on it.
            raise BadRowError(f"{self.where}: the chosen and rejected images are the same picture")
        return self.prompt, chosen, rejected


def splits_of(source: str, **hub_kwargs) -> list[str]:
    """Split names of a pairs folder or a `datasets` source; [] when it cannot be read."""
    root = Path(source)
    if root.is_dir():
        names = _folder_splits(root)
        if names or not any(root.iterdir()):
            return names
    import datasets

    try:
        return sorted(datasets.get_dataset_split_names(source, **hub_kwargs))
    except Exception:  # unreachable Hub, unknown layout: the caller's load gives the clear message
        return []


def _folder_splits(root: Path) -> list[str]:
    """Splits of a pair folder in the layout `write_pairs` and the annotation export write."""
    return sorted(p.parent.name for p in root.glob("*/metadata.jsonl")) if root.is_dir() else []


def load_pairs(source: str, split: str = "train", **hub_kwargs) -> list[PairRow]:
    """All rows of one split (`all`: every split of a folder, in name order)."""
    root = Path(source)
    if _folder_splits(root):
        names = _folder_splits(root) if split == "all" else [split]
        rows = []
        for name in names:
            rows += _folder_rows(root, name)
        return rows
    if root.exists() and root.is_dir() and not any(root.iterdir()):
        raise DatasetError(f"{source} is an empty folder")
    return _hub_rows(source, split, **hub_kwargs)


def _folder_rows(root: Path, split: str) -> list[PairRow]:
    meta = root / split / "metadata.jsonl"
    if not meta.is_file():
        raise DatasetError(f"{root} has no split {split!r} (splits: {', '.join(_folder_splits(root)) or 'none'})")
    rows = []
    with open(meta) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{meta}:{line_no}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise DatasetError(f"{where} is not a JSON object") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{where} is not a JSON object")
            missing = [c for c in ("prompt", "chosen_file_name", "rejected_file_name") if c not in rec]
            if missing:
                raise DatasetError(f"{where} lacks column(s) {', '.join(missing)}")
            for column in ("chosen_file_name", "rejected_file_name"):
                if not isinstance(rec[column], str) or not rec[column]:
                    raise DatasetError(f"{where}: {column} must be an image file name, got {rec[column]!r}")
            rows.append(PairRow(rec["prompt"], str(meta.parent / rec["chosen_file_name"]),
                                str(meta.parent / rec["rejected_file_name"]), where))  # fmt: skip
    return rows


def _hub_rows(source: str, split: str, **hub_kwargs) -> list[PairRow]:
    import datasets

    try:
        if split == "all":
            dd = datasets.load_dataset(source, **hub_kwargs)
            parts = [(name, dd[name]) for name in sorted(dd)]
        else:
            parts = [(split, datasets.load_dataset(source, split=split, **hub_kwargs))]
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise DatasetError(f"cannot load pairs from {source!r} (split {split}): {str(e).splitlines()[0]}") from None
    rows = []
    for name, ds in parts:
        missing = [c for c in REQUIRED if c not in ds.column_names]
        if missing:
            raise DatasetError(f"{source} ({name}) lacks column(s) {', '.join(missing)}; has {', '.join(ds.column_names)}")
        for col in ("chosen", "rejected"):
            if isinstance(ds.features[col], datasets.Image):
                ds = ds.cast_column(col, datasets.Image(decode=False))
        for i, rec in enumerate(ds.select_columns(list(REQUIRED))):
            rows.append(PairRow(rec["prompt"], rec["chosen"], rec["rejected"], f"{source} ({name}) row {i}"))
    return rows


def ensure_pairs(folder: str, n: int, seed: int, size: int = 64) -> str:
    """Write SpatialWorld pairs into `folder` unless it already holds them (for the default config)."""
    if not _folder_splits(Path(folder)):
        from spatial.world import write_pairs

        # Written aside and renamed at the end: an interrupted run leaves no half a dataset behind
        # that the next run would take for a whole one.
        if Path(folder).is_dir() and any(Path(folder).iterdir()):
            raise DatasetError(f"{folder} holds files but no pairs (no */metadata.jsonl); remove it or pass --pairs")
        partial = Path(f"{folder}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        write_pairs(partial, n, seed, size=size)
        if Path(folder).is_dir():
            Path(folder).rmdir()
        partial.rename(folder)
    return folder
