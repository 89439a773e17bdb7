"""Agreement statistics against published worked examples and values computed by hand."""

import pytest

from spatial.annotation import (
    AnnotationConfig, AnnotationStore, agreement_report, cohen_kappa, fleiss_kappa, import_world,
    krippendorff_alpha_nominal, majority, percent_agreement,
)  # fmt: skip
from spatial.world import check


def test_fleiss_kappa_matches_the_worked_example():
    # Fleiss' kappa worked example on Wikipedia ("Fleiss' kappa", 10 subjects x 14 raters,
    # 5 categories): P_bar = 0.378, P_e = 0.213, kappa = 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]  # fmt: skip
    items = {i: [c for c, k in enumerate(row) for _ in range(k)] for i, row in enumerate(table)}
    assert percent_agreement(items) == pytest.approx(0.378, abs=5e-4)
    assert fleiss_kappa(items) == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_alpha_matches_the_worked_example():
    # Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), the nominal example with
    # 4 observers, 12 units and missing values: alpha = 0.743.
    rows = ["1 2 3 3 2 1 4 1 2 . . .", "1 2 3 3 2 2 4 1 2 5 . 3", ". 3 3 3 2 3 4 2 2 5 1 .", "1 2 3 3 2 4 4 1 2 5 1 ."]
    obs = [r.split() for r in rows]
    items = {u: [o[u] for o in obs if o[u] != "."] for u in range(12)}
    assert krippendorff_alpha_nominal(items) == pytest.approx(0.743, abs=5e-4)


def test_cohen_kappa_matches_the_worked_example():
    # Wikipedia "Cohen's kappa": 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> 0.4.
    first = ["y"] * 25 + ["n"] * 25
    second = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)


def test_small_cases_computed_by_hand():
    items = {1: ["a", "a", "b"], 2: ["a", "a", "a"], 3: ["b", "tie"], 4: ["a"]}
    # P_i: 1/3, 1, 0 (item 4 has one rating and drops out); mean 4/9.
    assert percent_agreement(items) == pytest.approx(4 / 9)
    # p_a = 5/8, p_b = 2/8, p_tie = 1/8 -> P_e = (25 + 4 + 1) / 64 = 30/64; kappa = (4/9 - 30/64) / (34/64).
    assert fleiss_kappa(items) == pytest.approx((4 / 9 - 30 / 64) / (34 / 64))
    # Coincidences: item 1 gives o_aa = 1, o_ab = o_ba = 1; item 2 o_aa = 3; item 3 o_btie = o_tieb = 1.
    # n_a = 5, n_b = 2, n_tie = 1, n = 8; disagreements 4; sum_{c!=k} n_c n_k = 2 (10 + 5 + 2) = 34.
    assert krippendorff_alpha_nominal(items) == pytest.approx(1 - 7 * 4 / 34)
    assert fleiss_kappa({1: ["a", "a"], 2: ["a", "a"]}) is None  # one category only: undefined
    assert percent_agreement({1: ["a"]}) is None


def test_majority_needs_a_strict_winner():
    assert majority({"a": 2, "b": 1}) == "a"
    assert majority({"a": 1, "b": 1, "tie": 0}) is None
    assert majority({"both_wrong": 2, "a": 1}) == "both_wrong"
    assert majority({}) is None


def labelled_store(tmp_path, answer):
    """Three annotators label 12 SpatialWorld pairs (all gold); `answer(who, i, known_side)` picks the
    verdict each gives."""
    store = AnnotationStore(tmp_path / "s", AnnotationConfig(overlap=3, gold_fraction=1.0))
    import_world(store, 12, seed=21)
    index = {p.id: i for i, p in enumerate(store.pairs())}
    for who in ("ann", "bob", "cat"):
        while (a := store.next_pair(who)) is not None:
            verdict = answer(who, index[a.pair_id])
            label = ("left" if a.left_image == verdict else "right") if verdict in ("a", "b") else verdict
            store.submit(who, a.pair_id, label)
    return store


def test_the_report_counts_gold_position_and_cohen_as_labelled(tmp_path):
    # ann is always right; bob always says the rejected image is better; cat says tie on even pairs.
    store = labelled_store(tmp_path, lambda who, i: {"ann": "a", "bob": "b", "cat": "tie" if i % 2 == 0 else "a"}[who])
    rep = agreement_report(store.labels())
    per = {row["annotator"]: row for row in rep.per_annotator}
    assert (per["ann"]["gold_accuracy"], per["bob"]["gold_accuracy"], per["cat"]["gold_accuracy"]) == (1.0, 0.0, 0.5)
    assert rep.gold == {"labels": 36, "correct": 18, "accuracy": 0.5}
    assert rep.labels == 36 and rep.pairs_multi == 12
    cohen = {row["annotators"]: row["kappa"] for row in rep.cohen}
    # ann answers "a" throughout, so chance agreement with anyone equals observed agreement.
    assert cohen["ann / bob"] == pytest.approx(0.0) and cohen["ann / cat"] == pytest.approx(0.0)
    # Each pair: {a, b, tie} on even pairs (P_i = 0), {a, b, a} on odd (P_i = 1/3).
    assert rep.percent_agreement == pytest.approx(1 / 6)
    assert rep.position["left"] + rep.position["right"] == 30  # six tie labels have no side
    assert rep.position["left_share"] == pytest.approx(rep.position["left"] / 30)


def test_the_oracle_as_scorer_agrees_with_a_correct_majority(tmp_path):
    store = labelled_store(tmp_path, lambda who, i: "b" if (who == "cat" or i == 0) else "a")
    rep = agreement_report(store.labels(), score=lambda prompt, img: float(check(img, prompt).satisfied),
                           load_image=store.load_image)  # fmt: skip
    # Pair 0's majority is the rejected image: the oracle disagrees there and agrees on the other 11.
    assert rep.scorer == {"pairs": 12, "agree": 11, "tied": 0, "agreement": pytest.approx(11 / 12), "unreadable": 0}
    # A pair whose image file is gone is counted as such, not a crash of the whole report.
    store.image_path(store.pairs()[3].image_a).unlink()
    rep = agreement_report(store.labels(), score=lambda prompt, img: float(check(img, prompt).satisfied),
                           load_image=store.load_image)  # fmt: skip
    assert rep.scorer["pairs"] == 11 and rep.scorer["unreadable"] == 1
