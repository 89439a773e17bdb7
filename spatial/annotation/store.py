"""The annotation store: pairs, who was shown what, and labels, in one SQLite database (WAL mode).

Rules it keeps, each enforced inside one write transaction (and by UNIQUE constraints):

- a pair gets at most R = `overlap` non-skip labels; a skip returns the slot to the queue;
- an annotator is shown a pair at most once (asking again while the lease runs returns the same
  showing, same sides); a lease that runs out frees the slot for someone else;
- the side each image is shown on is drawn per showing and stored with the label;
- a label is stored once per (pair, annotator): a retry with the same submission id returns the
  stored label instead of a second one;
- `submit` returns only after the commit, and with `synchronous=FULL` the commit is on disk.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from PIL import Image

from .config import AnnotationConfig
from .errors import AlreadyLabelled, InvalidInput, LeaseExpired, NotAssigned, UnknownPair
from .images import ImageStore

LABELS = ("left", "right", "tie", "both_wrong", "skip")
"""What an annotator can answer: the left or right image is better, both good, both wrong, skip."""
VERDICTS = ("a", "b", "tie", "both_wrong", "skip")
"""A label in terms of the pair's own images (a, b), whatever side each was shown on."""

_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_rng = random.SystemRandom()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    image_a TEXT NOT NULL,
    image_b TEXT NOT NULL,
    known TEXT CHECK (known IN ('a', 'b')),
    gold INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    n_votes INTEGER NOT NULL DEFAULT 0,
    rank REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pairs_queue ON pairs (n_votes DESC, rank);
CREATE TABLE IF NOT EXISTS assignments (
    pair_id TEXT NOT NULL REFERENCES pairs (id),
    annotator TEXT NOT NULL,
    showing_id TEXT NOT NULL UNIQUE,
    left_image TEXT NOT NULL CHECK (left_image IN ('a', 'b')),
    shown_at REAL NOT NULL,
    lease_until REAL NOT NULL,
    label_seq INTEGER,
    PRIMARY KEY (pair_id, annotator)
);
CREATE INDEX IF NOT EXISTS assignments_open ON assignments (annotator, label_seq);
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id TEXT NOT NULL UNIQUE,
    pair_id TEXT NOT NULL REFERENCES pairs (id),
    annotator TEXT NOT NULL,
    label TEXT NOT NULL CHECK (label IN ('left', 'right', 'tie', 'both_wrong', 'skip')),
    verdict TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie', 'both_wrong', 'skip')),
    left_image TEXT NOT NULL CHECK (left_image IN ('a', 'b')),
    note TEXT,
    shown_at REAL NOT NULL,
    created REAL NOT NULL,
    UNIQUE (pair_id, annotator)
);
"""

# The next pair for an annotator: not shown to them before, with a free slot (non-skip labels plus
# running leases below R); pairs closest to R first, so finished pairs accumulate, then a random rank.
_NEXT = """
SELECT p.* FROM pairs p
WHERE p.n_votes < :r
  AND NOT EXISTS (SELECT 1 FROM assignments s WHERE s.pair_id = p.id AND s.annotator = :who)
  AND p.n_votes + (SELECT COUNT(*) FROM assignments a
                   WHERE a.pair_id = p.id AND a.label_seq IS NULL AND a.lease_until > :now) < :r
ORDER BY p.n_votes DESC, p.rank
LIMIT 1
"""


def pair_id_for(prompt: str, image_a: str, image_b: str) -> str:
    """Stable id of a pair: the same prompt and images always give the same id."""
    return hashlib.sha256(f"{prompt}\n{image_a}\n{image_b}".encode()).hexdigest()[:20]


def unit_hash(key: str, salt: str) -> float:
    """A deterministic number in [0, 1) for a key (gold selection, test split)."""
    return int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:12], 16) / 16**12


def verdict_for(label: str, left_image: str) -> str:
    if label == "left":
        return left_image
    if label == "right":
        return "b" if left_image == "a" else "a"
    return label


@dataclass(frozen=True)
class PairInput:
    """A pair to add: a prompt and two images (PIL image, array, bytes or path)."""

    prompt: str
    image_a: object
    image_b: object
    source: str = "generate"
    meta: dict = field(default_factory=dict)
    known: str | None = None
    """'a' or 'b' when the source knows which image is better (SpatialWorld: the chosen one)."""


@dataclass(frozen=True)
class PairRecord:
    id: str
    prompt: str
    image_a: str
    image_b: str
    known: str | None
    gold: bool
    source: str
    meta: dict
    created: float
    n_votes: int


@dataclass(frozen=True)
class Assignment:
    """A pair as shown to one annotator. Pass `showing_id` back as the submission id."""

    pair_id: str
    prompt: str
    showing_id: str
    left_image: str
    """Which of the pair's images ('a' or 'b') is on the left in this showing."""
    left: str
    """sha256 of the image shown on the left."""
    right: str
    shown_at: float
    lease_until: float


@dataclass(frozen=True)
class Ack:
    """Proof that a label is stored (returned only after the commit)."""

    seq: int
    submission_id: str
    pair_id: str
    annotator: str
    label: str
    verdict: str
    duplicate: bool = False
    """True when this submission was already stored before (a retry or a double click)."""


@dataclass(frozen=True)
class LabelRecord:
    """One stored label with the facts of its pair (what the raw-labels export and statistics read)."""

    seq: int
    submission_id: str
    pair_id: str
    annotator: str
    label: str
    verdict: str
    left_image: str
    note: str | None
    shown_at: float
    created: float
    prompt: str
    image_a: str
    image_b: str
    known: str | None
    gold: bool
    source: str

    @property
    def left(self) -> str:
        return self.image_a if self.left_image == "a" else self.image_b

    @property
    def right(self) -> str:
        return self.image_b if self.left_image == "a" else self.image_a


@dataclass(frozen=True)
class Progress:
    labelled: int
    """Labels this annotator stored (skips included)."""
    available: int
    """Pairs `next_pair` could hand this annotator now: open, not shown to them, with a slot free."""
    waiting: int
    """Pairs open to this annotator whose free slots other annotators hold on a lease now; each comes
    back if such a lease ends in a skip or runs out (0 with `available` 0: nothing is left for them)."""
    queue: int
    """Pairs that still need labels (fewer than R non-skip labels)."""
    pairs: int
    labels: int


@dataclass(frozen=True)
class ImportSummary:
    added: int
    existing: int
    gold: int

    def __str__(self) -> str:
        return f"{self.added} pairs added ({self.gold} gold), {self.existing} already present"


class AnnotationStore:
    """Pairs, assignments and labels under `root` (`annotation.sqlite3` and `images/`). Thread-safe;
    several processes may open the same root (writes take SQLite's lock in turn)."""

    def __init__(self, root: str | Path, config: AnnotationConfig | None = None,
                 clock: Callable[[], float] = time.time):  # fmt: skip
        self.clock = clock  # tests pass a fake clock to expire leases without waiting
        self.config = config or AnnotationConfig()
        self.config.validate()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.images = ImageStore(self.root / "images", fsync=self.config.fsync_images,
                                 max_side=self.config.max_image_side)  # fmt: skip
        self._lock = threading.RLock()
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={self.config.synchronous.upper()}")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)
        # Reads (statistics, exports, progress) use their own connection: under WAL they see the last
        # commit without waiting for, or holding up, a label being written.
        self._read_lock = threading.Lock()
        self._reader = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / "annotation.sqlite3", isolation_level=None, check_same_thread=False,
                             timeout=self.config.busy_timeout_s)  # fmt: skip
        db.row_factory = sqlite3.Row
        return db

    # ---- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; committed (and durable under FULL) when the block exits."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # also when COMMIT itself failed (disk full, I/O error)
                    self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _who(annotator) -> str:
        if not isinstance(annotator, str) or not annotator.strip():
            raise InvalidInput("sign in to annotate: no annotator id")
        if len(annotator) > 200:
            raise InvalidInput("annotator id is longer than 200 characters")
        return annotator.strip()

    # ---- pairs ---------------------------------------------------------------------------------

    def add_pair(self, prompt: str, image_a, image_b, *, source: str = "generate", meta: dict | None = None,
                 known: str | None = None) -> str:  # fmt: skip
        """Add one pair (e.g. sent from the Generate tab, where neither image is known better) and
        return its id. Adding the same prompt and images again returns the same id."""
        _, ids = self._add([PairInput(prompt, image_a, image_b, source, meta or {}, known)], None)
        return ids[0]

    def add_pairs(self, items: Iterable[PairInput], gold_fraction: float | None = None) -> ImportSummary:
        """Add pairs in one transaction. Every item is checked before anything is written, so a bad
        item raises and changes nothing. Pairs with a known answer become gold for a `gold_fraction` share
        of pair ids (default: the store's config)."""
        return self._add(items, gold_fraction)[0]

    def _add(self, items: Iterable[PairInput], gold_fraction: float | None) -> tuple[ImportSummary, list[str]]:
        fraction = self.config.gold_fraction if gold_fraction is None else gold_fraction
        rows, blobs = [], {}
        for n, item in enumerate(items):  # check everything before writing anything
            prompt = item.prompt.strip() if isinstance(item.prompt, str) else ""
            if not prompt:
                raise InvalidInput(f"pair {n}: the prompt is empty")
            if item.known not in (None, "a", "b"):
                raise InvalidInput(f"pair {n}: known must be 'a', 'b' or None")
            a, data_a = self.images.encode(item.image_a, f"pair {n} image a")
            b, data_b = self.images.encode(item.image_b, f"pair {n} image b")
            if a == b:
                raise InvalidInput(f"pair {n}: both images are identical")
            blobs[a], blobs[b] = data_a, data_b
            pid = pair_id_for(prompt, a, b)
            gold = item.known is not None and unit_hash(pid, "gold") < fraction
            try:
                meta = json.dumps(item.meta or {})
            except (TypeError, ValueError):
                raise InvalidInput(f"pair {n}: meta must be JSON (text, numbers, lists, dicts)") from None
            rows.append((pid, prompt, a, b, item.known, int(gold), str(item.source), meta, self.clock(), _rng.random()))
        for digest, data in blobs.items():
            self.images.write(digest, data)  # durable before any row points at it
        added = gold_added = 0
        ids = [r[0] for r in rows]
        with self._write() as db:
            for k, row in enumerate(rows):
                # The same comparison with its images the other way round is the same pair: a second id
                # would split its votes and show one annotator the same two images twice.
                swapped = db.execute("SELECT id FROM pairs WHERE prompt = ? AND image_a = ? AND image_b = ?",
                                     (row[1], row[3], row[2])).fetchone()  # fmt: skip
                if swapped is not None:
                    ids[k] = swapped[0]
                    continue
                cur = db.execute(
                    "INSERT OR IGNORE INTO pairs (id, prompt, image_a, image_b, known, gold, source, meta, created,"
                    " rank) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
                added += cur.rowcount
                gold_added += cur.rowcount * row[5]
        return ImportSummary(added=added, existing=len(rows) - added, gold=gold_added), ids

    def pair(self, pair_id: str) -> PairRecord:
        rows = self._read("SELECT * FROM pairs WHERE id = ?", (pair_id,))
        if not rows:
            raise UnknownPair(f"no pair with id {pair_id!r}")
        return self._pair(rows[0])

    def pairs(self) -> list[PairRecord]:
        return [self._pair(r) for r in self._read("SELECT * FROM pairs ORDER BY created, id")]

    @staticmethod
    def _pair(r: sqlite3.Row) -> PairRecord:
        return PairRecord(r["id"], r["prompt"], r["image_a"], r["image_b"], r["known"], bool(r["gold"]),
                          r["source"], json.loads(r["meta"]), r["created"], r["n_votes"])  # fmt: skip

    def image_path(self, digest: str) -> Path:
        return self.images.path(digest)

    def load_image(self, digest: str) -> Image.Image:
        return self.images.open(digest)

    # ---- the queue -----------------------------------------------------------------------------

    def next_pair(self, annotator: str) -> Assignment | None:
        """The pair to show this annotator now, or None when nothing is left for them. While a
        lease runs, asking again returns the same showing (a page reload shows the same pair)."""
        who = self._who(annotator)
        with self._write() as db:
            now = self.clock()  # read under the lock: a submit waiting on it must not judge leases by a stale clock
            row = db.execute(
                "SELECT a.*, p.prompt, p.image_a, p.image_b FROM assignments a JOIN pairs p ON p.id = a.pair_id"
                " WHERE a.annotator = ? AND a.label_seq IS NULL AND a.lease_until > ?"
                " ORDER BY a.shown_at DESC LIMIT 1",
                (who, now),
            ).fetchone()
            if row is not None:
                lease = now + self.config.lease_s
                db.execute("UPDATE assignments SET lease_until = ? WHERE pair_id = ? AND annotator = ?",
                           (lease, row["pair_id"], who))  # fmt: skip
                return self._assignment(row, row["left_image"], row["showing_id"], row["shown_at"], lease)
            pair = db.execute(_NEXT, {"r": self.config.overlap, "who": who, "now": now}).fetchone()
            if pair is None:
                return None
            left = "a" if _rng.random() < 0.5 else "b"
            showing = uuid.uuid4().hex
            lease = now + self.config.lease_s
            db.execute(
                "INSERT INTO assignments (pair_id, annotator, showing_id, left_image, shown_at, lease_until)"
                " VALUES (?,?,?,?,?,?)",
                (pair["id"], who, showing, left, now, lease),
            )
            return self._assignment(pair, left, showing, now, lease, pair_key="id")

    @staticmethod
    def _assignment(r, left, showing, shown_at, lease, pair_key="pair_id") -> Assignment:
        a, b = r["image_a"], r["image_b"]
        return Assignment(r[pair_key], r["prompt"], showing, left, a if left == "a" else b,
                          b if left == "a" else a, shown_at, lease)  # fmt: skip

    def submit(self, annotator: str, pair_id: str, label: str, submission_id: str | None = None,
               note: str | None = None) -> Ack:  # fmt: skip
        """Store a label and return its Ack once it is committed. `submission_id` (default: the
        showing id) makes retries safe: the same id returns the stored label, never a second one."""
        who = self._who(annotator)
        if label not in LABELS:
            raise InvalidInput(f"unknown label {label!r}; choose from {', '.join(LABELS)}")
        if submission_id is not None and not (isinstance(submission_id, str) and _ID.fullmatch(submission_id)):
            raise InvalidInput("a submission id is 1-128 letters, digits or ._:@-")
        if note is not None:
            if not isinstance(note, str):
                raise InvalidInput("a note must be text")
            note = note.strip() or None
            if note and len(note) > self.config.max_note_chars:
                raise InvalidInput(f"the note is {len(note)} characters; the limit is {self.config.max_note_chars}")
        if not isinstance(pair_id, str) or not pair_id:
            raise UnknownPair("no pair id given")
        with self._write() as db:
            now = self.clock()  # under the lock, as in next_pair
            if submission_id is not None:
                old = db.execute("SELECT * FROM labels WHERE submission_id = ?", (submission_id,)).fetchone()
                if old is not None:
                    if old["annotator"] != who or old["pair_id"] != pair_id:
                        raise InvalidInput("this submission id was already used for another label")
                    return self._ack(old, duplicate=True)
            pair = db.execute("SELECT id, n_votes FROM pairs WHERE id = ?", (pair_id,)).fetchone()
            if pair is None:
                raise UnknownPair(f"no pair with id {pair_id!r}")
            asg = db.execute("SELECT * FROM assignments WHERE pair_id = ? AND annotator = ?", (pair_id, who)).fetchone()
            if asg is None:
                raise NotAssigned(f"pair {pair_id} was not assigned to you; ask for the next pair")
            if asg["label_seq"] is not None:
                old = db.execute("SELECT * FROM labels WHERE seq = ?", (asg["label_seq"],)).fetchone()
                if submission_id is None:
                    return self._ack(old, duplicate=True)
                raise AlreadyLabelled(f"you already labelled pair {pair_id} ({old['label']}); it cannot be changed")
            if label != "skip" and asg["lease_until"] <= now:
                others = db.execute(
                    "SELECT COUNT(*) FROM assignments WHERE pair_id = ? AND annotator != ? AND label_seq IS NULL"
                    " AND lease_until > ?",
                    (pair_id, who, now),
                ).fetchone()[0]
                if pair["n_votes"] + others >= self.config.overlap:
                    raise LeaseExpired(
                        f"your time on pair {pair_id} ran out ({self.config.lease_s:.0f} s) and it went to "
                        "other annotators; nothing was stored"
                    )
            sid = submission_id or asg["showing_id"]
            verdict = verdict_for(label, asg["left_image"])
            cur = db.execute(
                "INSERT INTO labels (submission_id, pair_id, annotator, label, verdict, left_image, note, shown_at,"
                " created) VALUES (?,?,?,?,?,?,?,?,?)",
                (sid, pair_id, who, label, verdict, asg["left_image"], note, asg["shown_at"], now),
            )
            seq = cur.lastrowid
            db.execute("UPDATE assignments SET label_seq = ? WHERE pair_id = ? AND annotator = ?", (seq, pair_id, who))
            if label != "skip":
                db.execute("UPDATE pairs SET n_votes = n_votes + 1 WHERE id = ?", (pair_id,))
        return Ack(seq, sid, pair_id, who, label, verdict)

    @staticmethod
    def _ack(r: sqlite3.Row, duplicate: bool) -> Ack:
        return Ack(r["seq"], r["submission_id"], r["pair_id"], r["annotator"], r["label"], r["verdict"], duplicate)

    # ---- reading -------------------------------------------------------------------------------

    def labels(self, after_seq: int = 0) -> list[LabelRecord]:
        """Stored labels in commit order, with their pair's facts; only those after `after_seq`."""
        rows = self._read(
            "SELECT l.*, p.prompt, p.image_a, p.image_b, p.known, p.gold, p.source FROM labels l"
            " JOIN pairs p ON p.id = l.pair_id WHERE l.seq > ? ORDER BY l.seq",
            (after_seq,),
        )
        return [
            LabelRecord(r["seq"], r["submission_id"], r["pair_id"], r["annotator"], r["label"], r["verdict"],
                        r["left_image"], r["note"], r["shown_at"], r["created"], r["prompt"], r["image_a"],
                        r["image_b"], r["known"], bool(r["gold"]), r["source"])  # fmt: skip
            for r in rows
        ]

    def label_count(self) -> int:
        return self._read("SELECT COUNT(*) FROM labels")[0][0]

    def progress(self, annotator: str) -> Progress:
        who = self._who(annotator)
        r = self.config.overlap
        with self._read_lock:
            row = lambda sql, args=(): self._reader.execute(sql, args).fetchone()  # noqa: E731
            self._reader.execute("BEGIN")  # one snapshot for all the counts
            try:
                return self._progress(row, who, r, self.clock())
            finally:
                self._reader.execute("COMMIT")

    @staticmethod
    def _progress(row, who: str, r: int, now: float) -> Progress:
        # Pairs still open to `who` (short of R votes, never shown to them), split by whether a slot is
        # free now: what `next_pair` could hand out, or what other annotators' live leases hold.
        available, waiting = row(
            "SELECT COALESCE(SUM(free), 0), COALESCE(SUM(1 - free), 0) FROM ("
            " SELECT p.n_votes + (SELECT COUNT(*) FROM assignments a WHERE a.pair_id = p.id"
            "  AND a.label_seq IS NULL AND a.lease_until > ?) < ? AS free"
            " FROM pairs p WHERE p.n_votes < ? AND NOT EXISTS"
            "  (SELECT 1 FROM assignments s WHERE s.pair_id = p.id AND s.annotator = ?))",
            (now, r, r, who),
        )
        return Progress(
            labelled=row("SELECT COUNT(*) FROM labels WHERE annotator = ?", (who,))[0],
            available=available,
            waiting=waiting,
            queue=row("SELECT COUNT(*) FROM pairs WHERE n_votes < ?", (r,))[0],
            pairs=row("SELECT COUNT(*) FROM pairs")[0],
            labels=row("SELECT COUNT(*) FROM labels")[0],
        )
