"""raysweep.frontier: Pareto masks, non-dominated sorting, hypervolume and the reference point,
the one definition the halving search and the analysis share (property tests against brute force)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysweep.frontier import dominates, front_ranks, hypervolume_2d, pareto_mask, reference_point

# small integer grids make ties and exact duplicates common
coord = st.one_of(st.integers(0, 5).map(float), st.just(math.nan))
cloud = st.lists(st.tuples(coord, coord), min_size=0, max_size=40)


def brute_force(pts):
    out = []
    for i, p in enumerate(pts):
        if not all(math.isfinite(v) for v in p):
            out.append(False)
            continue
        dominated = any(
            all(math.isfinite(v) for v in q) and all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p))
            for j, q in enumerate(pts)
            if j != i
        )
        out.append(not dominated)
    return out


@given(cloud)
def test_pareto_mask_equals_brute_force(pts):
    arr = np.array(pts, dtype=float).reshape(-1, 2)
    assert pareto_mask(arr).tolist() == brute_force(pts)


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=30))
def test_no_dominated_point_on_a_3d_front(pts):
    arr = np.array(pts)
    mask = pareto_mask(arr)
    assert mask.any()
    for i in np.flatnonzero(mask):
        assert not any((arr[j] <= arr[i]).all() and (arr[j] < arr[i]).any() for j in range(len(arr)))


grid_cloud = st.lists(st.tuples(st.integers(0, 8).map(float), st.integers(0, 8).map(float)), min_size=1, max_size=25)
points_st = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)).map(lambda p: (float(p[0]), float(p[1]))), max_size=25)


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
@given(grid_cloud)
def test_hypervolume_matches_a_grid_estimate(pts):
    ref = (9.0, 9.0)
    exact = hypervolume_2d(np.array(pts), ref)
    assert exact == pytest.approx(grid_hypervolume(pts, ref), abs=81 * 0.01)


@given(grid_cloud, grid_cloud)
def test_adding_points_never_shrinks_the_hypervolume(a, b):
    ref = (9.0, 9.0)
    assert hypervolume_2d(np.array(a + b), ref) >= hypervolume_2d(np.array(a), ref) - 1e-9


def test_points_beyond_the_reference_and_nan_add_nothing():
    assert hypervolume_2d(np.array([[10.0, 1.0], [np.nan, 0.0]]), (9.0, 9.0)) == 0.0
    assert hypervolume_2d(np.array([[1.0, 1.0], [1.0, 1.0]]), (2.0, 3.0)) == 2.0  # duplicates count once


@given(points_st)
def test_non_dominated_sorting_puts_each_point_one_layer_below_a_point_that_dominates_it(points):
    ranks = front_ranks(points)
    for i, p in enumerate(points):
        dominated_by = [ranks[j] for j, q in enumerate(points) if dominates(q, p)]
        assert ranks[i] == (max(dominated_by) + 1 if dominated_by else 0)


@given(points_st, st.tuples(st.integers(0, 20), st.integers(0, 20)))
def test_hypervolume_never_falls_when_a_point_is_added_and_a_dominated_one_adds_nothing(points, extra):
    ref = (21.0, 21.0)
    extra = (float(extra[0]), float(extra[1]))
    assert hypervolume_2d([*points, extra], ref) >= hypervolume_2d(points, ref)
    if any(dominates(q, extra) or q == extra for q in points):
        assert hypervolume_2d([*points, extra], ref) == hypervolume_2d(points, ref)


def test_the_reference_point_sits_beyond_the_worst_point_so_every_front_point_adds_area():
    assert reference_point(np.array([[1.0, 4.0], [3.0, 2.0], [np.nan, 9.0]])) == pytest.approx((3.1, 4.1))
    # every point on one value of an axis: a margin of 1, not 0, so the corner still counts
    assert reference_point(np.array([[2.0, 1.0], [2.0, 3.0]])) == pytest.approx((2.05, 3.1))
    assert all(math.isnan(v) for v in reference_point(np.zeros((0, 2))))
    pts = np.array([[1.0, 4.0], [3.0, 2.0]])
    ref = reference_point(pts)
    for p in pts:  # each front point adds area of its own
        assert hypervolume_2d(pts, ref) > hypervolume_2d(pts[(pts != p).any(axis=1)], ref)
