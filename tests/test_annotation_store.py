"""The annotation store's rules: overlap R, never twice, leases, random sides, idempotent labels,
and bad requests that change nothing."""

import sqlite3
import threading
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from spatial.annotation import (
    AlreadyLabelled, AnnotationConfig, AnnotationStore, InvalidInput, LeaseExpired, NotAssigned, PairInput,
    SourceError, UnknownPair, import_world,
)  # fmt: skip


class Clock:
    """A hand-wound clock, so leases expire without waiting."""

    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def tiny_pairs(n: int, known: str | None = None) -> list[PairInput]:
    """n pairs of distinct 8x8 images (fast; the store does not care what they show)."""
    out = []
    for i in range(n):
        a = Image.new("RGB", (8, 8), (i % 256, i // 256, 10))
        b = Image.new("RGB", (8, 8), (i % 256, i // 256, 200))
        out.append(PairInput(f"a red circle left of a blue square #{i}", a, b, "test", {"i": i}, known))
    return out


def store_with(tmp_path, n=6, clock=None, **config) -> AnnotationStore:
    store = AnnotationStore(tmp_path / "store", AnnotationConfig(**config), clock=clock or Clock())
    store.add_pairs(tiny_pairs(n))
    return store


def label_as(assignment, verdict: str) -> str:
    """The button an annotator presses to say `verdict` ('a', 'b', ...) given the sides shown."""
    if verdict in ("a", "b"):
        return "left" if assignment.left_image == verdict else "right"
    return verdict


def snapshot(store: AnnotationStore):
    db = sqlite3.connect(store.root / "annotation.sqlite3")
    out = [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in ("pairs", "assignments", "labels")]
    db.close()
    return out


def test_each_pair_gets_r_labels_then_leaves_the_queue(tmp_path):
    store = store_with(tmp_path, n=5, overlap=2)
    people = [f"ann{i}" for i in range(4)]
    while True:
        progress = False
        for who in people:
            a = store.next_pair(who)
            if a is not None:
                store.submit(who, a.pair_id, "tie")
                progress = True
        if not progress:
            break
    per_pair = Counter(r.pair_id for r in store.labels())
    assert len(per_pair) == 5 and set(per_pair.values()) == {2}
    assert store.progress("ann0").queue == 0
    assert all(store.next_pair(who) is None for who in people)


def test_an_annotator_never_sees_the_same_pair_twice(tmp_path):
    store = store_with(tmp_path, n=7, overlap=3)
    seen = []
    while (a := store.next_pair("solo")) is not None:
        seen.append(a.pair_id)
        store.submit("solo", a.pair_id, "skip" if len(seen) % 2 else "left")
    assert len(seen) == 7 and len(set(seen)) == 7
    assert store.progress("solo").available == 0


def test_asking_again_while_the_lease_runs_returns_the_same_showing(tmp_path):
    store = store_with(tmp_path, n=3)
    first, again = store.next_pair("ann"), store.next_pair("ann")
    assert (again.pair_id, again.showing_id, again.left_image) == (first.pair_id, first.showing_id, first.left_image)


def test_an_expired_lease_returns_the_slot_to_the_queue(tmp_path):
    clock = Clock()
    store = store_with(tmp_path, n=1, clock=clock, overlap=1, lease_s=60)
    held = store.next_pair("slow")
    assert store.next_pair("quick") is None  # the only slot is leased
    clock.t += 61
    got = store.next_pair("quick")
    assert got is not None and got.pair_id == held.pair_id
    assert store.next_pair("slow") is None  # never shown twice, even after the lease ran out
    before = snapshot(store)
    with pytest.raises(LeaseExpired, match="ran out"):
        store.submit("slow", held.pair_id, "left", held.showing_id)
    assert snapshot(store) == before
    store.submit("quick", got.pair_id, "right", got.showing_id)
    assert [r.annotator for r in store.labels()] == ["quick"]


def test_a_submit_that_waits_for_the_lock_past_its_lease_is_judged_by_the_time_it_gets_the_lock(tmp_path):
    clock = Clock()
    store = store_with(tmp_path, n=1, clock=clock, overlap=1, lease_s=60)
    held = store.next_pair("slow")
    clock.t += 59.9  # the click comes in time, but another write holds the store
    outcome = []
    with store._lock:
        waiter = threading.Thread(target=lambda: outcome.append(_try_submit(store, "slow", held)))
        waiter.start()
        time.sleep(0.2)
        clock.t += 0.2  # the lease runs out while it waits; the slot goes to someone else
        got = store.next_pair("quick")
    waiter.join()
    assert got is not None and outcome == ["LeaseExpired"]
    store.submit("quick", got.pair_id, "right", got.showing_id)
    assert store.pair(held.pair_id).n_votes == 1  # never more labels than the overlap


def _try_submit(store, who, a):
    try:
        store.submit(who, a.pair_id, "left", a.showing_id)
        return "stored"
    except LeaseExpired:
        return "LeaseExpired"


def test_a_late_label_is_kept_while_its_slot_is_still_free(tmp_path):
    clock = Clock()
    store = store_with(tmp_path, n=1, clock=clock, overlap=1, lease_s=60)
    a = store.next_pair("slow")
    clock.t += 3600
    ack = store.submit("slow", a.pair_id, "left", a.showing_id)
    assert not ack.duplicate and store.label_count() == 1


def test_a_skip_sends_the_pair_to_someone_else(tmp_path):
    store = store_with(tmp_path, n=1, overlap=1)
    a = store.next_pair("first")
    store.submit("first", a.pair_id, "skip")
    b = store.next_pair("second")
    assert b is not None and b.pair_id == a.pair_id
    store.submit("second", b.pair_id, "left")
    assert store.next_pair("third") is None
    assert store.pair(a.pair_id).n_votes == 1


def test_sides_are_drawn_per_showing_and_recorded_with_the_label(tmp_path):
    store = store_with(tmp_path, n=40, overlap=5)
    lefts = Counter()
    for who in ("p", "q", "r", "s", "t"):
        while (a := store.next_pair(who)) is not None:
            lefts[a.left_image] += 1
            assert a.left == (store.pair(a.pair_id).image_a if a.left_image == "a" else store.pair(a.pair_id).image_b)
            store.submit(who, a.pair_id, "left")
    assert sum(lefts.values()) == 200
    assert 60 < lefts["a"] < 140  # fair coin: outside this range has probability < 1e-8
    for r in store.labels():
        assert r.verdict == r.left_image  # "left" means whichever image was shown on the left


def test_a_double_submit_stores_one_label(tmp_path):
    store = store_with(tmp_path)
    a = store.next_pair("ann")
    first = store.submit("ann", a.pair_id, "left", a.showing_id)
    second = store.submit("ann", a.pair_id, "left", a.showing_id)
    assert (first.duplicate, second.duplicate) == (False, True)
    assert first.seq == second.seq and store.label_count() == 1
    assert store.pair(a.pair_id).n_votes == 1


def test_a_retry_without_a_submission_id_stores_one_label(tmp_path):
    store = store_with(tmp_path)
    a = store.next_pair("ann")
    store.submit("ann", a.pair_id, "tie")
    again = store.submit("ann", a.pair_id, "tie")
    assert again.duplicate and store.label_count() == 1


def test_a_second_answer_under_another_submission_id_is_refused(tmp_path):
    store = store_with(tmp_path)
    a = store.next_pair("ann")
    store.submit("ann", a.pair_id, "left", "click-1")
    before = snapshot(store)
    with pytest.raises(AlreadyLabelled, match="already labelled"):
        store.submit("ann", a.pair_id, "right", "click-2")
    assert snapshot(store) == before


@pytest.mark.parametrize(
    "case, error, match",
    [
        ("unknown pair", UnknownPair, "no pair with id"),
        ("not assigned", NotAssigned, "not assigned to you"),
        ("unknown label", InvalidInput, "unknown label"),
        ("long note", InvalidInput, "the limit is 20"),
        ("no annotator", InvalidInput, "sign in"),
        ("bad submission id", InvalidInput, "submission id"),
        ("submission id of someone else", InvalidInput, "already used"),
    ],
)
def test_bad_requests_get_a_clear_error_and_change_nothing(tmp_path, case, error, match):
    store = store_with(tmp_path, max_note_chars=20)
    mine = store.next_pair("me")
    other = store.next_pair("other")
    store.submit("other", other.pair_id, "left", "taken-id")
    unassigned = next(p.id for p in store.pairs() if p.id not in (mine.pair_id, other.pair_id))
    calls = {
        "unknown pair": lambda: store.submit("me", "0" * 20, "left"),
        "not assigned": lambda: store.submit("me", unassigned, "left"),
        "unknown label": lambda: store.submit("me", mine.pair_id, "better"),
        "long note": lambda: store.submit("me", mine.pair_id, "left", note="x" * 21),
        "no annotator": lambda: store.submit("  ", mine.pair_id, "left"),
        "bad submission id": lambda: store.submit("me", mine.pair_id, "left", "has spaces in it"),
        "submission id of someone else": lambda: store.submit("me", mine.pair_id, "left", "taken-id"),
    }
    before = snapshot(store)
    with pytest.raises(error, match=match):
        calls[case]()
    assert snapshot(store) == before


def test_concurrent_annotators_keep_every_rule(tmp_path):
    store = store_with(tmp_path, n=30, overlap=3)
    acks, errors = [], []

    def annotate(who: str):
        try:
            while True:
                a = store.next_pair(who)
                if a is None:
                    # None means "nothing free right now": another annotator's lease may still end in
                    # a skip, which frees the slot again. Done only when nothing is left for `who`.
                    progress = store.progress(who)
                    if progress.available == 0 and progress.waiting == 0:
                        return
                    time.sleep(0.005)
                    continue
                label = ("left", "right", "tie", "both_wrong", "skip")[hash((who, a.pair_id)) % 5]
                acks.append(store.submit(who, a.pair_id, label, a.showing_id))
                store.submit(who, a.pair_id, label, a.showing_id)  # a double click
        except Exception as e:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=annotate, args=(f"ann{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    labels = store.labels()
    assert len(labels) == len(acks)
    assert len({(r.pair_id, r.annotator) for r in labels}) == len(labels)
    votes = Counter(r.pair_id for r in labels if r.label != "skip")
    assert max(votes.values()) <= 3
    # every pair is full unless all 8 annotators were used up on it by skips
    for p in store.pairs():
        shown = sum(1 for r in labels if r.pair_id == p.id)
        assert votes[p.id] == 3 or shown == 8


def test_everything_is_there_after_reopening(tmp_path):
    store = store_with(tmp_path, n=3)
    a = store.next_pair("ann")
    store.submit("ann", a.pair_id, "both_wrong", note="no circle at all")
    store.close()
    again = AnnotationStore(tmp_path / "store")
    [label] = again.labels()
    assert (label.label, label.note, label.pair_id) == ("both_wrong", "no circle at all", a.pair_id)
    assert again.next_pair("ann").pair_id != a.pair_id


def test_a_pair_is_stored_once_and_its_images_once(tmp_path):
    store = AnnotationStore(tmp_path / "s")
    red, blue, green = (np.full((16, 16, 3), c, np.uint8) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0)))
    first = store.add_pair("a red square left of a blue square", red, blue, meta={"seed": 1})
    again = store.add_pair("a red square left of a blue square", Image.fromarray(red), Image.fromarray(blue))
    store.add_pair("a red square left of a green square", red, green)
    assert first == again and len(store.pairs()) == 2
    assert len(list((tmp_path / "s" / "images").glob("*/*.png"))) == 3
    rec = store.pair(first)
    assert (rec.source, rec.known, rec.gold, rec.meta) == ("generate", None, False, {"seed": 1})


def test_gold_pairs_are_a_configured_share_of_pairs_with_known_answers(tmp_path):
    every = AnnotationStore(tmp_path / "all", AnnotationConfig(gold_fraction=1.0))
    none = AnnotationStore(tmp_path / "none", AnnotationConfig(gold_fraction=0.0))
    assert every.add_pairs(tiny_pairs(10, known="a")).gold == 10
    assert every.add_pairs(tiny_pairs(12)).gold == 0  # unknown answers are never gold
    assert none.add_pairs(tiny_pairs(10, known="a")).gold == 0
    some = AnnotationStore(tmp_path / "some", AnnotationConfig(gold_fraction=0.3))
    summary = import_world(some, 40, seed=3)
    assert summary.added == 40 and 3 <= summary.gold <= 25
    assert {p.known for p in some.pairs()} == {"a"}


def test_a_bad_pair_in_a_batch_adds_nothing(tmp_path):
    store = AnnotationStore(tmp_path / "s")
    items = tiny_pairs(3) + [PairInput("a prompt", b"not an image", Image.new("RGB", (8, 8)))]
    with pytest.raises(SourceError, match="pair 3 image a is not a readable image"):
        store.add_pairs(items)
    assert store.pairs() == [] and not list((tmp_path / "s" / "images").glob("*/*.png"))


def test_pairs_held_on_other_annotators_leases_are_not_counted_as_left_for_you(tmp_path):
    store = store_with(tmp_path, n=2, overlap=1)
    store.next_pair("bob")
    store.next_pair("ann")
    assert store.progress("carl").available == 0 and store.next_pair("carl") is None  # the text and the queue agree
    # ... but they are not gone for carl: both come back if bob's and ann's leases end in skips.
    assert store.progress("carl").waiting == 2
    assert store.progress("bob").waiting == 1  # ann's pair; bob's own is not open to him again


def test_the_same_comparison_with_its_images_swapped_is_the_same_pair(tmp_path):
    store = store_with(tmp_path, n=1)
    [pair] = store.pairs()
    a, b = store.load_image(pair.image_a), store.load_image(pair.image_b)
    assert store.add_pair(pair.prompt, b, a) == pair.id  # not a second pair to show the same annotator
    assert len(store.pairs()) == 1
    summary = store.add_pairs([PairInput(pair.prompt, b, a, "again")])
    assert (summary.added, summary.existing) == (0, 1)


def test_an_image_too_large_to_decode_is_refused_before_it_is_decoded(tmp_path):
    store = store_with(tmp_path, n=0)
    huge = tmp_path / "huge.png"
    Image.new("1", (15000, 15000)).save(huge)  # 225 M pixels: PIL's own bomb check fires
    wide = tmp_path / "wide.png"
    Image.new("1", (9000, 10)).save(wide)
    for path, message in ((huge, "too large an image"), (wide, "9000x10 pixels")):
        with pytest.raises(SourceError, match=message):
            store.add_pair("a red circle left of a blue square", path, Image.new("RGB", (8, 8)))
