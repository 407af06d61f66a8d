"""The robustness table and line (analysis.robustness): each variant's verdict is the main verdict's
own function applied to the variant's runs, and a flip is counted and named."""

from analysis.report import verdict_line
from analysis.robustness import holds, robustness_line, robustness_metrics, robustness_table, view_verdict
from tests.helpers import example_rows, sliced

VIEW = ("L_ret", "L_ft")


def flipped(rows):
    """The same runs with the methods' losses swapped: the opposite verdict in every view."""
    swap = {"mixed": "unmixed", "unmixed": "mixed"}
    return [{**r, "method": swap.get(r["method"], r["method"])} for r in rows]


def test_a_variant_s_verdict_is_the_main_verdict_of_its_own_runs():
    rows, other = example_rows(), flipped(example_rows())
    assert view_verdict(other, "mixed", "unmixed", VIEW).text == verdict_line(other, "mixed", "unmixed", VIEW)
    table = robustness_table(rows, [("schedule=wsd", rows), ("packing=seq", other)])
    assert "schedule=wsd" in table and "same verdict: mixed dominates unmixed" in table
    assert "packing=seq" in table and "FLIPS: unmixed dominates mixed" in table


def test_the_line_counts_variants_and_slices_in_both_views():
    rows = sliced(example_rows(), [lambda r: 0.0, lambda r: -2.0 if r["method"] == "unmixed" else 0.0])
    h = holds(rows, [("a", rows), ("b", flipped(rows))])
    assert h["variants"] == (1, 2)  # the flipped variant disagrees
    assert h["slices"][1] == 4 and h["slices"][0] < 4  # two slices in each of two views; slice 1 flips (L_ret, L_ft)
    line = robustness_line(rows, [("a", rows), ("b", flipped(rows))])
    assert line.startswith("robustness: the verdict holds under 1 of 2 variants and in ") and "held-out slices" in line
    assert robustness_metrics(rows, [("a", rows), ("b", flipped(rows))])["robustness.variants_hold"] == 0.5
    assert robustness_line(rows, []) == "" and robustness_table(rows, []) == ""


def crossing(mixed, unmixed, seed=0):
    """Rows whose (L_ret, L_ft) points are the given ones (L_pre mirrors L_ft)."""
    rows = []
    for method, points in (("mixed", mixed), ("unmixed", unmixed)):
        for i, (ret, ft) in enumerate(points):
            rows.append(
                {**example_rows()[0], "name": f"{method}{i}-s{seed}", "method": method, "L_ret": ret, "L_ft": ft, "L_pre": ft, "seed": seed}
            )
    return rows


def test_crossing_fronts_that_favour_different_methods_are_different_verdicts():
    """Two crossings agree only when the same front holds the larger hypervolume (Verdict.key):
    the robustness twin first said 'holds under 6 of 6 variants' while the larger front changed side."""
    leans_mixed = crossing([(0.0, 2.0), (2.0, 0.2)], [(0.5, 1.8), (3.0, 0.1)])
    leans_unmixed = crossing([(0.5, 1.8), (3.0, 0.1)], [(0.0, 2.0), (2.0, 0.2)])
    v, w = view_verdict(leans_mixed, "mixed", "unmixed", VIEW), view_verdict(leans_unmixed, "mixed", "unmixed", VIEW)
    assert v.kind == w.kind == "cross" and v.key != w.key and (v.lean > 0) != (w.lean > 0)
    table = robustness_table(leans_mixed, [("packing=seq", leans_unmixed)])
    assert "FLIPS: the fronts cross" in table
    assert holds(leans_mixed, [("packing=seq", leans_unmixed)])["per_view"][VIEW][0] == 0
    # two seeds that cross with different fronts larger: inconclusive, not "both seeds agree"
    two = leans_mixed + [{**r, "seed": 1, "name": r["name"] + "-1"} for r in leans_unmixed]
    assert verdict_line(two, "mixed", "unmixed", VIEW).startswith("inconclusive (the two seeds disagree)")
