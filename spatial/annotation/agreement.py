"""Agreement statistics over labels: how much annotators agree, whether they favour a side, how
they do on gold pairs, and how often a scorer (SpatialScore, the oracle) agrees with the majority.

Agreement is measured on verdicts in terms of the pair's own images (a, b, tie, both_wrong), so a
label is compared with another whatever sides each annotator saw; skips are not ratings.
The generic functions take `{item: [category, ...]}` (ratings per item) and accept any categories.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Hashable, Iterable, Mapping, Sequence

from scipy.stats import binomtest

CATEGORIES = ("a", "b", "tie", "both_wrong")


def _pairable(items: Mapping[Hashable, Sequence[Hashable]]) -> list[Counter]:
    return [Counter(r) for r in items.values() if len(r) >= 2]


def percent_agreement(items: Mapping[Hashable, Sequence[Hashable]]) -> float | None:
    """Share of agreeing rater pairs, averaged over items with at least two ratings:
    P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1))."""
    rows = _pairable(items)
    if not rows:
        return None
    return sum(_p_i(c) for c in rows) / len(rows)


def _p_i(c: Counter) -> float:
    n = sum(c.values())
    return sum(k * (k - 1) for k in c.values()) / (n * (n - 1))


def fleiss_kappa(items: Mapping[Hashable, Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa (P_bar - P_e) / (1 - P_e), P_bar the mean of P_i over items with >= 2 ratings,
    P_e = sum_j p_j^2 with p_j the share of category j among those ratings. With a constant number
    of raters per item this is Fleiss (1971); with varying numbers each item weighs the same.
    None when undefined (fewer than one pairable item, or every rating in one category)."""
    rows = _pairable(items)
    if not rows:
        return None
    total = Counter()
    for c in rows:
        total.update(c)
    n = sum(total.values())
    p_e = sum((v / n) ** 2 for v in total.values())
    if p_e >= 1.0:
        return None
    p_bar = sum(_p_i(c) for c in rows) / len(rows)
    return (p_bar - p_e) / (1.0 - p_e)


def krippendorff_alpha_nominal(items: Mapping[Hashable, Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal data, from the coincidence matrix:
    o_ck = sum_u (number of c-k pairs of values in unit u) / (m_u - 1), n_c = sum_k o_ck,
    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k.
    Units with fewer than two values are not pairable and drop out. None when undefined."""
    rows = _pairable(items)
    o: Counter = Counter()
    for c in rows:
        m = sum(c.values())
        for x, y in itertools.product(c, repeat=2):
            pairs = c[x] * (c[y] - (1 if x == y else 0))
            o[x, y] += pairs / (m - 1)
    n_c: Counter = Counter()
    for (x, _), v in o.items():
        n_c[x] += v
    n = sum(n_c.values())
    disagree = sum(v for (x, y), v in o.items() if x != y)
    expected = sum(n_c[x] * n_c[y] for x in n_c for y in n_c if x != y)
    if n <= 1 or expected == 0:
        return None
    return 1.0 - (n - 1) * disagree / expected


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e)."""
    if len(first) != len(second):
        raise ValueError("both raters must rate the same items")
    n = len(first)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(first, second)) / n
    c1, c2 = Counter(first), Counter(second)
    p_e = sum(c1[k] * c2[k] for k in c1) / n**2
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def majority(votes: Mapping[str, int]) -> str | None:
    """The category with strictly more votes than any other, or None on a tie at the top."""
    ranked = sorted(((v, k) for k, v in votes.items() if v > 0), reverse=True)
    if not ranked or (len(ranked) > 1 and ranked[0][0] == ranked[1][0]):
        return None
    return ranked[0][1]


@dataclass
class AgreementReport:
    labels: int = 0
    """Stored labels, skips included."""
    skips: int = 0
    pairs_labelled: int = 0
    """Pairs with at least one non-skip label."""
    pairs_multi: int = 0
    """Pairs with at least two non-skip labels (the ones agreement is measured on)."""
    percent_agreement: float | None = None
    fleiss_kappa: float | None = None
    krippendorff_alpha: float | None = None
    per_annotator: list[dict] = field(default_factory=list)
    cohen: list[dict] = field(default_factory=list)
    """Cohen's kappa for each pair of annotators with at least `min_shared` pairs in common."""
    position: dict = field(default_factory=dict)
    """`left`/`right` answers, the share of `left`, and a two-sided binomial p-value against 0.5."""
    gold: dict = field(default_factory=dict)
    scorer: dict | None = None
    """Agreement of a scorer with the human majority on pairs the majority resolves to a or b."""

    def to_dict(self) -> dict:
        return asdict(self)


def agreement_report(labels: Iterable, score: Callable | None = None, load_image: Callable | None = None,
                     min_shared: int = 2) -> AgreementReport:  # fmt: skip
    """Statistics over LabelRecords (see AnnotationStore.labels). `score(prompt, image) -> float`
    with `load_image(sha256) -> PIL.Image` adds the scorer's agreement with the human majority."""
    labels = list(labels)
    rep = AgreementReport(labels=len(labels), skips=sum(r.label == "skip" for r in labels))
    rated = [r for r in labels if r.verdict != "skip"]
    per_item: dict[str, dict[str, str]] = defaultdict(dict)
    facts = {}
    for r in rated:
        per_item[r.pair_id][r.annotator] = r.verdict
        facts[r.pair_id] = r
    items = {pid: list(v.values()) for pid, v in per_item.items()}
    rep.pairs_labelled = len(items)
    rep.pairs_multi = sum(len(v) >= 2 for v in items.values())
    rep.percent_agreement = percent_agreement(items)
    rep.fleiss_kappa = fleiss_kappa(items)
    rep.krippendorff_alpha = krippendorff_alpha_nominal(items)

    by_annotator: dict[str, list] = defaultdict(list)
    for r in labels:
        by_annotator[r.annotator].append(r)
    for who in sorted(by_annotator):
        mine = by_annotator[who]
        gold = [r for r in mine if r.gold and r.known and r.verdict != "skip"]
        sides = Counter(r.label for r in mine if r.label in ("left", "right"))
        rep.per_annotator.append({
            "annotator": who,
            "labels": len(mine),
            "skips": sum(r.label == "skip" for r in mine),
            "gold": len(gold),
            "gold_accuracy": sum(r.verdict == r.known for r in gold) / len(gold) if gold else None,
            "left_share": sides["left"] / (sides["left"] + sides["right"]) if sides else None,
        })  # fmt: skip

    names = sorted(by_annotator)
    for x, y in itertools.combinations(names, 2):
        shared = [pid for pid, v in per_item.items() if x in v and y in v]
        if len(shared) >= min_shared:
            k = cohen_kappa([per_item[p][x] for p in shared], [per_item[p][y] for p in shared])
            rep.cohen.append({"annotators": f"{x} / {y}", "shared": len(shared), "kappa": k})

    sides = Counter(r.label for r in labels if r.label in ("left", "right"))
    n_lr = sides["left"] + sides["right"]
    rep.position = {
        "left": sides["left"],
        "right": sides["right"],
        "left_share": sides["left"] / n_lr if n_lr else None,
        "p_value": binomtest(sides["left"], n_lr, 0.5).pvalue if n_lr else None,
    }
    gold = [r for r in rated if r.gold and r.known]
    correct = sum(r.verdict == r.known for r in gold)
    rep.gold = {"labels": len(gold), "correct": correct, "accuracy": correct / len(gold) if gold else None}

    if score is not None:
        if load_image is None:
            raise ValueError("scoring needs load_image to open the pair's images")
        agree = tied = n = unreadable = 0
        for pid, verdicts in items.items():
            winner = majority(Counter(verdicts))
            if winner not in ("a", "b"):
                continue
            r = facts[pid]
            try:
                s_a, s_b = float(score(r.prompt, load_image(r.image_a))), float(score(r.prompt, load_image(r.image_b)))
            except (OSError, ValueError):  # an image file gone from the store: that pair cannot be scored
                unreadable += 1
                continue
            n += 1
            if s_a == s_b:
                tied += 1
            elif (s_a > s_b) == (winner == "a"):
                agree += 1
        rep.scorer = {"pairs": n, "agree": agree, "tied": tied, "agreement": agree / n if n else None,
                      "unreadable": unreadable}  # fmt: skip
    return rep
