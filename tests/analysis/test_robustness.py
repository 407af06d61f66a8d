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
