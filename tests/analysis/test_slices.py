"""Verdicts on held-out slices (analysis.slices): per slice, resampled with the seeds, in words."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.report import verdict_line
from analysis.slices import joint_bootstrap, on_slices, slice_count, slice_hypervolume_diffs, slice_verdicts, slices_summary, slices_table
from analysis.verdict import verdict
from tests.helpers import example_rows, sliced

VIEW = ("L_ret", "L_ft")


def test_a_set_of_slices_scores_the_mean_of_their_losses():
    rows = sliced(example_rows()[:2], [lambda r: 0.0, lambda r: 1.0, lambda r: 3.0])
    assert slice_count(rows) == 3 and slice_count(example_rows()) == 0
    [r] = on_slices(rows[:1], [1, 2, 2])
    assert np.isclose(r["L_ft"], rows[0]["L_ft"] + 7 / 3)


def test_slices_that_agree_give_the_whole_set_s_verdict_on_each_and_in_every_resample():
    rows = sliced(example_rows(), [lambda r: 0.0, lambda r: 0.1, lambda r: -0.1])  # a shift of every point: same fronts
    whole = verdict(
        *(np.array([[r["L_ret"], r["L_ft"]] for r in rows if r["method"] == m]) for m in ("mixed", "unmixed")), "mixed", "unmixed"
    )
    assert [v.kind for v in slice_verdicts(rows, "mixed", "unmixed", VIEW)] == [whole.kind] * 3
    jb = joint_bootstrap(rows, "mixed", "unmixed", VIEW, n_boot=50)
    assert jb.share(whole.kind) == 1.0 and jb.distinct == 10  # one seed, 3 slices: C(5, 3) multisets
    assert jb.hypervolume_diff.low <= jb.hypervolume_diff.estimate <= jb.hypervolume_diff.high
    assert verdict_line(rows, "mixed", "unmixed", VIEW).endswith(
        "(3 of 3 held-out slices agree; 100% of 1000 seed × slice-bootstrap resamples agree (drawn from 10 distinct ones))"
    )
    assert "holds in 3 of 3 slices in (L_ret, L_ft)" in slices_summary(rows)


def test_a_slice_that_flips_the_verdict_makes_it_inconclusive_and_is_named():
    # on slice 1, unmixed's runs score 2 lower: its front dominates there
    rows = sliced(example_rows(), [lambda r: 0.0, lambda r: -2.0 if r["method"] == "unmixed" else 0.0])
    kinds = [v.kind for v in slice_verdicts(rows, "mixed", "unmixed", VIEW)]
    assert kinds == ["a", "b"]
    diffs = slice_hypervolume_diffs(rows, "mixed", "unmixed", VIEW)
    assert diffs[0] > 0 > diffs[1]
    line = verdict_line(rows, "mixed", "unmixed", VIEW)
    assert line.startswith("inconclusive (1 of 2 held-out slices agree): all seeds pooled, mixed dominates unmixed"), line
    assert "%" not in line  # one seed × two slices: 3 distinct resamples, no share said
    table = slices_table(rows)
    assert "holds on 1 of 2 slices (slice 1: unmixed dominates mixed)" in table and "no interval: 1 seed × 2 slices" in table


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "cross"]), max_size=4),
    st.lists(st.sampled_from(["a", "b", "cross"]), max_size=6),
    st.sampled_from(["a", "b"]),
)
def test_confidence_with_slices_is_said_in_words_that_hold_for_the_counts_at_hand(seed_kinds, slice_kinds, full):
    from analysis.verdict import MIN_BOOTSTRAP_SEEDS, confidence_words, distinct_resamples

    n, k = len(seed_kinds), len(slice_kinds)
    stands, said = confidence_words(full, seed_kinds, 0.5, 1000, slice_kinds)
    if n < 2 and k < 2:
        assert stands and said == ""
        return
    assert stands == ((all(s == full for s in seed_kinds) or n < 2) and (all(s == full for s in slice_kinds) or k < 2))
    if k >= 2:
        assert f"{sum(s == full for s in slice_kinds)} of {k} held-out slices agree" in said
    units = max(1, n) * max(1, k)
    if units < MIN_BOOTSTRAP_SEEDS or (k < 2 and n < MIN_BOOTSTRAP_SEEDS):
        assert "%" not in said
    elif k >= 2:
        assert (
            f"seed × slice-bootstrap resamples agree (drawn from {distinct_resamples(max(1, n)) * distinct_resamples(k)} distinct" in said
        )


def test_several_seeds_are_resampled_with_the_slices():
    rows = example_rows()
    two = sliced(rows + [{**r, "seed": 1, "name": r["name"] + "-s1"} for r in rows], [lambda r: 0.0, lambda r: 0.05])
    jb = joint_bootstrap(two, "mixed", "unmixed", VIEW, n_boot=40)
    assert (jb.seeds, jb.slices, jb.distinct) == (2, 2, 9)
    assert "seeds × slices 90% interval" in slices_table(two)
