import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.compare import compare, dominated_share, hypervolume_2d, matched_gap
from analysis.pareto import FrontierInfo

cloud = st.lists(st.tuples(st.integers(0, 8).map(float), st.integers(0, 8).map(float)), min_size=1, max_size=25)


def grid_hypervolume(pts, ref, n=400):
    """Brute force: the share of a fine grid of cell centres in the box that some point dominates."""
    xs = np.linspace(0, ref[0], n, endpoint=False) + ref[0] / (2 * n)
    ys = np.linspace(0, ref[1], n, endpoint=False) + ref[1] / (2 * n)
    gx, gy = np.meshgrid(xs, ys)
    covered = np.zeros_like(gx, dtype=bool)
    for x, y in pts:
        covered |= (gx >= x) & (gy >= y)
    return covered.mean() * ref[0] * ref[1]


@settings(max_examples=60, deadline=None)
@given(cloud)
def test_hypervolume_matches_a_grid_estimate(pts):
    ref = (9.0, 9.0)
    exact = hypervolume_2d(np.array(pts), ref)
    assert exact == pytest.approx(grid_hypervolume(pts, ref), abs=81 * 0.01)


@given(cloud, cloud)
def test_adding_points_never_shrinks_the_hypervolume(a, b):
    ref = (9.0, 9.0)
    assert hypervolume_2d(np.array(a + b), ref) >= hypervolume_2d(np.array(a), ref) - 1e-9


def test_points_beyond_the_reference_and_nan_add_nothing():
    assert hypervolume_2d(np.array([[10.0, 1.0], [np.nan, 0.0]]), (9.0, 9.0)) == 0.0
    assert hypervolume_2d(np.array([[1.0, 1.0], [1.0, 1.0]]), (2.0, 3.0)) == 2.0  # duplicates count once


def test_dominated_share_and_gaps():
    b = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    a = b - 0.5
    assert dominated_share(a, b) == 1.0 and dominated_share(b, a) == 0.0
    lower = b - [0.0, 0.5]  # the same costs, each 0.5 better
    assert matched_gap(lower, b) == pytest.approx(0.5)
    assert matched_gap(b, lower) == pytest.approx(-0.5)
    assert matched_gap(b, b) == 0.0
    assert np.isnan(dominated_share(a, np.zeros((0, 2))))


def _info(method, pts):
    pts = np.array(pts, dtype=float)
    return FrontierInfo(method, "L_ret", "L_ft", tuple(pts[:, 0]), tuple(pts[:, 1]), tuple(map(str, range(len(pts)))),
                        tuple([True] * len(pts)), 0)


def test_compare_uses_one_reference_for_both():
    c = compare(_info("mixed", [[0.5, 2.5], [1.5, 1.5]]), _info("unmixed", [[1.0, 3.0], [2.0, 2.0]]))
    assert c.reference[0] > 2.0 and c.reference[1] > 3.0
    assert c.hypervolume_a > c.hypervolume_b
    assert c.share_of_b_dominated_by_a == 1.0 and c.share_of_a_dominated_by_b == 0.0
    assert c.y_gap_at_matched_x > 0 and c.x_gap_at_matched_y > 0
