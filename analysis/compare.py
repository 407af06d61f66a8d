"""Comparisons between two methods' frontiers, as pure functions (lower is better on both axes).

- `hypervolume_2d`: the area a front dominates inside the box bounded by a reference point;
  with one shared reference, a larger area is a better front.
- `dominated_share`: the share of B's front points that some point of A's front dominates.
- `matched_gap`: how much lower A's y is than B's at the same x, averaged over the x range both
  fronts cover; each front is read as a step function (the best y reachable at cost <= x),
  which is exactly what a Pareto front promises and needs no smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.pareto import FrontierInfo, pareto_mask


def _front_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    front = pts[pareto_mask(pts)] if len(pts) else pts
    front = np.unique(front, axis=0)  # duplicates add no area
    return front[np.lexsort((front[:, 1], front[:, 0]))]


def hypervolume_2d(points: np.ndarray, reference: tuple[float, float]) -> float:
    """Area dominated by `points` (n, 2) and bounded by `reference`; points beyond it add nothing."""
    rx, ry = reference
    front = _front_points(points)
    front = front[(front[:, 0] < rx) & (front[:, 1] < ry)]
    area = 0.0
    for i, (x, y) in enumerate(front):
        next_x = front[i + 1, 0] if i + 1 < len(front) else rx
        area += (next_x - x) * (ry - y)  # front sorted by x, so y falls as x rises
    return float(area)


def dominated_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of B's front points dominated by some point of A's front (nan if B has none)."""
    fa, fb = _front_points(a), _front_points(b)
    if len(fb) == 0:
        return float("nan")
    hit = [bool(((fa <= p).all(axis=1) & (fa < p).any(axis=1)).any()) for p in fb]
    return float(np.mean(hit))


def best_y_at(front: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The lowest y of any front point with x' <= x (inf left of the front)."""
    front = _front_points(front)
    out = np.full(len(x), np.inf)
    for px, py in front:
        out = np.where(x >= px, np.minimum(out, py), out)
    return out


def matched_gap(a: np.ndarray, b: np.ndarray, grid: int = 512) -> float:
    """Mean of best_y_B(x) - best_y_A(x) for x from where both fronts start to where the later ends.

    Positive: A reaches a lower y than B at the same x. nan when either front is empty.
    """
    fa, fb = _front_points(a), _front_points(b)
    if not len(fa) or not len(fb):
        return float("nan")
    lo = max(fa[:, 0].min(), fb[:, 0].min())
    hi = max(fa[:, 0].max(), fb[:, 0].max())  # >= lo: best_y stays defined right of a front
    xs = np.linspace(lo, hi, grid) if hi > lo else np.array([lo])
    return float(np.mean(best_y_at(fb, xs) - best_y_at(fa, xs)))


@dataclass(frozen=True)
class Comparison:
    """Method A against method B in one view, with the shared reference point used."""

    a: str
    b: str
    x_name: str
    y_name: str
    reference: tuple[float, float]
    hypervolume_a: float
    hypervolume_b: float
    share_of_b_dominated_by_a: float
    share_of_a_dominated_by_b: float
    y_gap_at_matched_x: float  # > 0: A's y is lower than B's at the same x
    x_gap_at_matched_y: float  # > 0: A's x is lower than B's at the same y (in (L_ret, L_ft): the L_ret gap at matched L_ft)


def compare(a: FrontierInfo, b: FrontierInfo, margin: float = 0.05) -> Comparison:
    """Compare two methods' fronts in the same view; the reference is the worst finite point of
    either method plus `margin` of the range, so every point counts."""
    pa = np.column_stack([a.x, a.y]).reshape(-1, 2)
    pb = np.column_stack([b.x, b.y]).reshape(-1, 2)
    both = np.vstack([pa, pb])
    both = both[np.isfinite(both).all(axis=1)]
    if len(both):
        span = np.ptp(both, axis=0)
        ref = tuple(float(v) for v in both.max(axis=0) + margin * np.where(span > 0, span, 1.0))
    else:
        ref = (float("nan"), float("nan"))
    return Comparison(
        a=a.method, b=b.method, x_name=a.x_name, y_name=a.y_name, reference=ref,
        hypervolume_a=hypervolume_2d(pa, ref), hypervolume_b=hypervolume_2d(pb, ref),
        share_of_b_dominated_by_a=dominated_share(pa, pb), share_of_a_dominated_by_b=dominated_share(pb, pa),
        y_gap_at_matched_x=matched_gap(pa, pb),
        x_gap_at_matched_y=matched_gap(pa[:, ::-1], pb[:, ::-1]),
    )
