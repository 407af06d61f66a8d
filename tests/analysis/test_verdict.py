"""The comparison in words (analysis.verdict), property-tested against brute force on random point
clouds: the verdict's kind against pairwise dominance, its ranges against the attainment curves
sampled everywhere, and the seed-bootstrap agreement on the runs table."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.verdict import seed_agreement, verdict
from tests.helpers import example_rows

# small integer grids make ties and shared x values common (the cases that break naive code)
cloud = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=8).map(lambda p: np.array(p, dtype=float))


def _weakly_covered(a: np.ndarray, b: np.ndarray) -> bool:
    """Every point of B is weakly dominated by some point of A (brute force over all pairs)."""
    return all(any((pa <= pb).all() for pa in a) for pb in b)


def _best_y(points: np.ndarray, t: float) -> float:
    ys = [y for x, y in points if x <= t]
    return min(ys) if ys else np.inf


def _inside(t: float, spans) -> bool:
    return any(lo <= t < hi for lo, hi in spans)


@settings(max_examples=300, deadline=None)
@given(cloud, cloud)
def test_the_kind_is_pairwise_dominance(a, b):
    v = verdict(a, b, "A", "B")
    a_covers, b_covers = _weakly_covered(a, b), _weakly_covered(b, a)
    want = "same" if a_covers and b_covers else "a" if a_covers else "b" if b_covers else "cross"
    assert v.kind == want
    assert v.text.startswith({"a": "A dominates B", "b": "B dominates A", "same": "the fronts coincide", "cross": "the fronts cross"}[want])


@settings(max_examples=300, deadline=None)
@given(cloud, cloud)
def test_the_ranges_are_where_each_attainment_curve_is_lower(a, b):
    v = verdict(a, b, "A", "B")
    for t in np.arange(-1.0, 8.0, 0.25):  # every x value, the gaps between them, and beyond both fronts
        ya, yb = _best_y(a, t), _best_y(b, t)
        assert _inside(t, v.a_better) == (ya < yb), t
        assert _inside(t, v.b_better) == (yb < ya), t


def test_crossing_fronts_are_described_in_words():
    a = np.array([[1.0, 5.0], [4.0, 1.0]])  # reaches low y only at large x
    b = np.array([[2.0, 3.0]])
    v = verdict(a, b, "mixed", "unmixed", "L_ret", "L_ft")
    assert v.kind == "cross"
    assert v.a_better == ((1.0, 2.0), (4.0, np.inf)) and v.b_better == ((2.0, 4.0),)
    assert v.text == ("the fronts cross: mixed reaches the lower L_ft where 1 ≤ L_ret < 2 or L_ret ≥ 4, unmixed where 2 ≤ L_ret < 4")


def test_non_finite_points_are_ignored_and_an_empty_front_gives_no_verdict():
    assert verdict(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]), "A", "B").kind == "none"
    assert verdict(np.array([[np.nan, 1.0], [0.5, 0.5]]), np.array([[1.0, 1.0]]), "A", "B").kind == "a"


def test_seed_agreement_is_reported_with_several_seeds_only():
    rows = example_rows()
    v, share = seed_agreement(rows, "mixed", "unmixed", ("L_ret", "L_ft"))
    assert share is None and v.kind == "a"  # one seed: mixed's (0.5, 2.9), (1.5, 1.5) cover unmixed's front
    two = rows + [{**r, "seed": 1, "name": r["name"] + "-s1"} for r in rows]
    v2, share2 = seed_agreement(two, "mixed", "unmixed", ("L_ret", "L_ft"), n_boot=200)
    assert v2.kind == "a" and share2 == 1.0  # identical seeds: every resample agrees


@given(st.lists(st.sampled_from(["a", "b", "cross", "same"]), min_size=0, max_size=6), st.sampled_from(["a", "b", "cross"]))
def test_confidence_is_said_in_words_that_hold_for_the_seeds_at_hand(kinds, full):
    """Two seeds have 3 distinct bootstrap resamples: no share is said for them, only whether they
    agree; from three seeds a share comes with its count of distinct resamples. The verdict stands
    only when every seed alone agrees with the pooled one (issue 48)."""
    import itertools

    from analysis.verdict import MIN_BOOTSTRAP_SEEDS, confidence_words, distinct_resamples

    n = len(kinds)
    share = 0.5 if n >= MIN_BOOTSTRAP_SEEDS else None
    stands, said = confidence_words(full, kinds, share, 1000)
    if n >= 1:
        assert distinct_resamples(n) == sum(1 for _ in itertools.combinations_with_replacement(range(n), n))
    if n < 2:  # one seed (or none): nothing to be sure of; the confidence table says why
        assert stands and said == ""
        return
    assert stands == all(k == full for k in kinds)
    if n == 2:
        assert "%" not in said and said == ("both seeds agree" if stands else "the two seeds disagree")
    else:
        assert said.startswith(f"{sum(k == full for k in kinds)} of {n} seeds") and f"from {distinct_resamples(n)} distinct" in said


def test_two_seeds_that_disagree_make_the_verdict_inconclusive():
    from analysis.report import verdict_line

    rows = example_rows()
    mirrored = [{**r, "seed": 1, "method": {"mixed": "unmixed", "unmixed": "mixed"}.get(r["method"], r["method"])} for r in rows]
    same = rows + [{**r, "seed": 1} for r in rows]
    assert verdict_line(same, "mixed", "unmixed", ("L_ret", "L_ft")) == "mixed dominates unmixed (both seeds agree)"
    line = verdict_line(rows + mirrored, "mixed", "unmixed", ("L_ret", "L_ft"))
    assert line.startswith("inconclusive (the two seeds disagree): all seeds pooled, ") and "%" not in line
