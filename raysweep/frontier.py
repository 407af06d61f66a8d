"""Pareto fronts and hypervolume, lower better on every axis: the one definition the halving search
(raysweep.sweep.halving) and the analysis (analysis.pareto, analysis.compare) share, so a search
keeps configurations by the same front and area the report then measures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """`a` is no worse than `b` on every axis and better on one (equal points do not dominate)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `points` (n, d).

    Exact duplicates do not dominate each other, so both copies of a frontier point stay.
    Rows with NaN are never on the front (callers count them: see analysis.pareto.FrontierInfo.excluded).
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2:
        raise ValueError(f"points must be (n, d), got shape {pts.shape}")
    mask = np.zeros(len(pts), dtype=bool)
    idx = np.flatnonzero(np.isfinite(pts).all(axis=1))
    sub = pts[idx]
    for j, p in zip(idx, sub):
        mask[j] = not ((sub <= p).all(axis=1) & (sub < p).any(axis=1)).any()
    return mask


def front_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting: 0 for the points no other point dominates, 1 for those dominated only
    by rank-0 points, and so on (every point finite)."""
    if not len(points):
        return []
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    ranks, left, r = [0] * len(pts), np.arange(len(pts)), 0
    while len(left):
        layer = pareto_mask(pts[left])
        for i in left[layer]:
            ranks[i] = r
        left, r = left[~layer], r + 1
    return ranks


def front_points(points: np.ndarray) -> np.ndarray:
    """The finite non-dominated points of (n, 2) `points`, without duplicates, sorted by x."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    front = np.unique(pts[pareto_mask(pts)], axis=0) if len(pts) else pts  # duplicates add no area
    return front[np.lexsort((front[:, 1], front[:, 0]))]


def hypervolume_2d(points: np.ndarray, reference: tuple[float, float]) -> float:
    """Area dominated by `points` (n, 2) and bounded by `reference`; points beyond it add nothing."""
    rx, ry = reference
    front = front_points(points)
    front = front[(front[:, 0] < rx) & (front[:, 1] < ry)]
    area = 0.0
    for i, (x, y) in enumerate(front):
        next_x = front[i + 1, 0] if i + 1 < len(front) else rx
        area += (next_x - x) * (ry - y)  # front sorted by x, so y falls as x rises
    return float(area)


def reference_point(points: np.ndarray, margin: float = 0.05) -> tuple[float, float]:
    """The worst finite point plus `margin` of the range on each axis (of 1 where all points share
    a value), so every point, the corners of a front included, adds area."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        return (float("nan"), float("nan"))
    span = np.ptp(pts, axis=0)
    return tuple(float(v) for v in pts.max(axis=0) + margin * np.where(span > 0, span, 1.0))
