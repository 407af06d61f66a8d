import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.compare import compare, dominated_share, hypervolume_2d, matched_gap
from analysis.pareto import FrontierInfo

cloud = st.lists(st.tuples(st.integers(0, 8).map(float), st.integers(0, 8).map(float)), min_size=1, max_size=25)


def test_dominated_share_and_gaps():
    b = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    a = b - 0.5
    assert dominated_share(a, b) == 1.0 and dominated_share(b, a) == 0.0
    lower = b - [0.0, 0.5]  # the same costs, each 0.5 better
    assert matched_gap(lower, b) == pytest.approx(0.5)
    assert matched_gap(b, lower) == pytest.approx(-0.5)
    assert matched_gap(b, b) == 0.0
    assert np.isnan(matched_gap(b, b + [10.0, 0.0]))  # no x in common: nothing to match
    assert np.isnan(dominated_share(a, np.zeros((0, 2))))


@given(cloud, st.floats(-2, 2))
def test_matched_gap_of_a_shifted_front_is_the_shift(pts, d):
    b = np.array(pts)
    assert matched_gap(b - [0.0, d], b) == pytest.approx(d, abs=1e-9)  # same x, every y lower by d


def _info(method, pts):
    pts = np.array(pts, dtype=float)
    return FrontierInfo(
        method, "L_ret", "L_ft", tuple(pts[:, 0]), tuple(pts[:, 1]), tuple(map(str, range(len(pts)))), tuple([True] * len(pts)), 0
    )


def test_compare_uses_one_reference_for_both():
    c = compare(_info("mixed", [[0.5, 2.5], [1.5, 1.5]]), _info("unmixed", [[1.0, 3.0], [2.0, 2.0]]))
    assert c.reference[0] > 2.0 and c.reference[1] > 3.0
    assert c.hypervolume_a > c.hypervolume_b
    assert c.share_of_b_dominated_by_a == 1.0 and c.share_of_a_dominated_by_b == 0.0
    assert c.y_gap_at_matched_x > 0 and c.x_gap_at_matched_y > 0


def _seed_rows(n_seeds: int, shift: float, noise: float = 0.05):
    """Method 'a' is method 'b' moved down by `shift` on both losses, in every seed."""
    rng = np.random.default_rng(3)
    rows = []
    for seed in range(n_seeds):
        for k in range(6):
            ret, ft = 1.0 + k * 0.2 + rng.normal(0, noise), 3.0 - k * 0.2 + rng.normal(0, noise)
            for m, d in (("b", 0.0), ("a", -shift)):
                rows.append({"name": f"{m}{seed}-{k}", "method": m, "seed": seed, "L_ret": ret + d, "L_ft": ft + d, "L_pre": 1.0})
    return rows


def test_bootstrap_needs_several_seeds():
    from analysis.compare import bootstrap

    assert bootstrap(_seed_rows(1, 0.3), "a", "b", ("L_ret", "L_ft")) is None


def test_bootstrap_interval_excludes_zero_when_a_wins_in_every_seed_and_not_when_equal():
    from analysis.compare import bootstrap

    win = bootstrap(_seed_rows(5, 0.3), "a", "b", ("L_ret", "L_ft"), n_boot=200)
    assert win.seeds == 5 and win.hypervolume_diff.low > 0 and win.share_of_b_dominated_by_a.low == 1.0
    tie = bootstrap(_seed_rows(5, 0.0), "a", "b", ("L_ret", "L_ft"), n_boot=200)
    assert tie.hypervolume_diff.low <= 0 <= tie.hypervolume_diff.high
    again = bootstrap(_seed_rows(5, 0.3), "a", "b", ("L_ret", "L_ft"), n_boot=200)
    assert again == win  # seeded: the same intervals every time


def test_report_tables_say_how_sure_we_are():
    from analysis.report import comparison_table

    rows = [dict(r, method={"a": "mixed", "b": "unmixed"}[r["method"]]) for r in _seed_rows(4, 0.3)]
    table = comparison_table(rows)
    assert "Seed-bootstrap 90% intervals (4 seeds" in table and "mixed vs unmixed: hypervolume difference +" in table
    # the verdict in words under each comparison line, with how many seed resamples agree
    said = "4 of 4 seeds agree on their own; 100% of 1000 seed-bootstrap resamples agree (drawn from 35 distinct ones)"
    assert table.count(f"    verdict: mixed dominates unmixed ({said})") == 2  # both views
    one = [r for r in rows if r["seed"] == 0]
    assert "Confidence intervals: none, the runs come from 1 seed" in comparison_table(one)
    assert "    verdict: mixed dominates unmixed\n" in comparison_table(one)


def test_hypervolume_table_ranks_every_method_on_one_scale():
    from analysis.report import hypervolume_table

    rows = [
        {
            "name": f"{m}{i}",
            "method": m,
            "mode": "sweep",
            "post_tokens": 1,
            "mix_fraction": 0.0,
            "seed": 0,
            "L_im": 1.0,
            "L_ft": ft,
            "L_ret": ret,
            "L_pre": 1.0,
        }
        for m, pts in {"unmixed": [(3.0, 2.0), (2.0, 3.0)], "mixed": [(2.0, 1.5), (1.5, 2.5)], "mixed+replay": [(1.0, 1.0)]}.items()
        for i, (ft, ret) in enumerate(pts)
    ]
    text = hypervolume_table(rows)
    ref = (3.0 + 0.05 * 2.0, 3.0 + 0.05 * 2.0)  # (L_ret, L_ft): worst of all runs + 5% of the range
    block = text.split("\n\n")[0].splitlines()
    assert f"({ref[0]:.3f}, {ref[1]:.3f})" in block[0]
    order = [line.split()[0] for line in block[1:]]
    assert order == ["mixed+replay", "mixed", "unmixed"]
    got = {line.split()[0]: float(line.split()[1]) for line in block[1:]}
    assert got["mixed+replay"] == pytest.approx(hypervolume_2d(np.array([[1.0, 1.0]]), ref), abs=1e-3)
    assert hypervolume_table([r for r in rows if r["method"] == "mixed"]) == ""


def test_hypervolume_table_with_seeds_gives_each_seeds_frontier_and_rank_on_the_pooled_reference():
    from analysis.report import hypervolume_table

    def row(m, seed, i, ft, ret):
        return {"name": f"{m}{seed}-{i}", "method": m, "mode": "sweep", "post_tokens": 1, "mix_fraction": 0.0, "seed": seed} | {
            "L_im": 1.0,
            "L_ft": ft,
            "L_ret": ret,
            "L_pre": 1.0,
        }

    points = {  # seed 0: mixed ahead; seed 1: unmixed ahead
        (0, "mixed"): [(1.0, 1.0)],
        (0, "unmixed"): [(2.0, 2.0)],
        (1, "mixed"): [(2.5, 2.5)],
        (1, "unmixed"): [(1.5, 1.5), (3.0, 1.0)],
    }
    rows = [row(m, seed, i, ft, ret) for (seed, m), pts in points.items() for i, (ft, ret) in enumerate(pts)]
    block = hypervolume_table(rows).split("\n\n")[0].splitlines()
    every = np.array([(ret, ft) for pts in points.values() for ft, ret in pts])
    ref = tuple(every.max(axis=0) + 0.05 * (every.max(axis=0) - every.min(axis=0)))
    assert f"({ref[0]:.3f}, {ref[1]:.3f})" in block[0] and "2 seeds" in block[0]
    cells = {line.split()[0]: line.split()[1:] for line in block[2:]}
    for (seed, m), pts in points.items():
        hv = hypervolume_2d(np.array([(ret, ft) for ft, ret in pts]), ref)
        value, rank = cells[m][1 + 2 * seed], cells[m][2 + 2 * seed]
        assert float(value) == pytest.approx(hv, abs=1e-3)
        assert rank == ("(#1)" if (seed, m) in {(0, "mixed"), (1, "unmixed")} else "(#2)")


def test_a_gap_without_a_matched_range_is_said_not_printed_as_nan():
    from analysis.report import comparison_table
    from tests.helpers import example_rows

    table = comparison_table(example_rows())  # in (L_pre, L_ret) each front is one point, at different L_ret
    assert "no matched L_ret (the fronts' L_ret ranges do not overlap)" in table and "nan" not in table
    rows = example_rows()
    seeded = comparison_table(rows + [{**r, "seed": 1, "name": r["name"] + "-s1"} for r in rows])  # with intervals
    assert "Seed-bootstrap 90% intervals" in seeded and "no L_pre gap (the fronts' L_ret ranges do not overlap)" in seeded
    assert "nan" not in seeded


def test_two_experiments_frontiers_side_by_side():
    """`python -m analysis --against`: per view and method, each experiment's hypervolume on one
    reference point, their ratio and front sizes; an experiment whose fronts are all better has the larger ones."""
    from analysis.report import side_by_side
    from tests.helpers import example_rows

    a = example_rows()
    b = [{**r, "L_ret": r["L_ret"] - 0.2, "L_ft": r["L_ft"] - 0.2, "L_pre": r["L_pre"] - 0.2} for r in a]  # better everywhere
    text = side_by_side(a, b, "before", "after")
    assert "before" in text and "after" in text and "(L_ret, L_ft)" in text.replace("('L_ret', 'L_ft')", "(L_ret, L_ft)")
    for line in (x for x in text.splitlines() if x.startswith("  ") and not x.strip().startswith("method")):
        ha, hb, ratio = (float(v) for v in line.split()[1:4])
        assert hb > ha and ratio > 1, line
