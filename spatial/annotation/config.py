"""Settings of the annotation store, the export and the Hub write-back (one dataclass each)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
HELD_OUT_SPLITS = {"test", "validation", "valid", "eval"}
"""Split names whose pairs an export keeps out of its train split (import tags pairs with their split)."""


@dataclass
class AnnotationConfig:
    """How pairs are handed out and how labels are stored."""

    overlap: int = 3
    """Annotators per pair (R): a pair leaves the queue once R non-skip labels are stored."""
    lease_s: float = 600.0
    """Seconds a shown pair stays reserved for its annotator; after that the slot returns to the queue."""
    gold_fraction: float = 0.1
    """Share of imported pairs with a known answer (SpatialWorld pairs) marked as gold, chosen by pair id."""
    synchronous: str = "FULL"
    """SQLite `synchronous` mode. FULL fsyncs the write-ahead log at every commit, so an acknowledged
    label survives a power cut as well as a killed process."""
    max_note_chars: int = 2000
    """Longest note an annotator may attach to a label."""
    max_image_side: int = 4096
    """Largest width or height of an imported image, in pixels."""
    fsync_images: bool = True
    """fsync each new image file before the pair that uses it is committed."""
    busy_timeout_s: float = 30.0
    """How long a write waits for another process holding the database lock."""

    def validate(self) -> None:
        if self.overlap < 1:
            raise ValueError("overlap must be at least 1 annotator per pair")
        if self.lease_s <= 0:
            raise ValueError("lease_s must be positive")
        if not 0.0 <= self.gold_fraction <= 1.0:
            raise ValueError("gold_fraction must be in [0, 1]")
        if self.synchronous.upper() not in SYNC_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNC_MODES)}")
        if self.max_note_chars < 0 or self.max_image_side < 8:
            raise ValueError("max_note_chars must be >= 0 and max_image_side >= 8")


@dataclass
class ExportConfig:
    """How raw labels become the reward-training pairs subset."""

    min_votes: int = 1
    """Non-skip labels a pair needs before it is resolved into the pairs subset."""
    test_fraction: float = 0.1
    """Share of resolved pairs put in the test split (chosen by pair id, so stable across exports)."""
    include_gold: bool = True
    """Whether gold pairs (known answers) are exported as training pairs too."""

    def validate(self) -> None:
        if self.min_votes < 1:
            raise ValueError("min_votes must be at least 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError("test_fraction must be in [0, 1)")


@dataclass
class HubConfig:
    """Where and how often labels are pushed to a Hugging Face dataset repo."""

    repo_id: str | None = None
    """Dataset repo (`owner/name`) that receives the export; None turns write-back off.
    Environment: SPATIAL_ANNOTATION_DATASET."""
    token: str | None = None
    """Hub token with write access. Environment: HF_TOKEN."""
    every_minutes: float = 5.0
    """Minutes between scheduled commits: 12 an hour, well under the Hub's 128 commits per hour per repo."""
    private: bool = True
    """Create the dataset repo private if it does not exist."""
    retries: int = 4
    """Extra attempts of a failed commit, with exponential back-off, before waiting for the next round."""
    backoff_s: float = 2.0
    """First back-off delay in seconds; doubles after each failed attempt."""

    @property
    def enabled(self) -> bool:
        return bool(self.repo_id and self.token)

    @classmethod
    def from_env(cls, env: dict | None = None) -> "HubConfig":
        env = os.environ if env is None else env
        return cls(
            repo_id=env.get("SPATIAL_ANNOTATION_DATASET") or None,
            token=env.get("HF_TOKEN") or None,
            every_minutes=float(env.get("SPATIAL_ANNOTATION_PUSH_MINUTES", "5")),
        )

    def validate(self) -> None:
        if not (math.isfinite(self.every_minutes) and self.every_minutes > 0):
            raise ValueError(f"every_minutes (SPATIAL_ANNOTATION_PUSH_MINUTES) must be a positive number, got {self.every_minutes}")
        if self.repo_id is not None and self.repo_id.count("/") != 1:
            raise ValueError(f"repo_id must look like owner/name, got {self.repo_id!r}")
        if self.retries < 0 or self.backoff_s < 0:
            raise ValueError("retries and backoff_s must be >= 0")
