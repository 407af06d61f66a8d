"""Comparisons between two methods' frontiers, as pure functions (lower is better on both axes).

- `hypervolume_2d`: the area a front dominates inside the box bounded by a reference point;
  with one shared reference, a larger area is a better front.
- `dominated_share`: the share of B's front points that some point of A's front dominates.
- `matched_gap`: how much lower A's y is than B's at the same x (e.g. the L_ret gap at matched
  L_ft), averaged over the x range both fronts span; each front is interpolated linearly between
  its points, which is monotone along a front, and never extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.pareto import FrontierInfo, frontier
from raysweep.frontier import front_points, hypervolume_2d, reference_point  # shared with halving's search


def dominated_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of B's front points dominated by some point of A's front (nan if B has none)."""
    fa, fb = front_points(a), front_points(b)
    if len(fb) == 0:
        return float("nan")
    hit = [bool(((fa <= p).all(axis=1) & (fa < p).any(axis=1)).any()) for p in fb]
    return float(np.mean(hit))


def front_y_at(front: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The front's y at each x, interpolated linearly between consecutive front points.

    Along a Pareto front y falls as x rises, so the interpolation is monotone; outside the
    front's x range it is nan (no extrapolation)."""
    f = front_points(front)  # sorted by x; x strictly increasing on a front without duplicates
    if not len(f):
        return np.full(len(x), np.nan)
    return np.interp(x, f[:, 0], f[:, 1], left=np.nan, right=np.nan)


def matched_gap(a: np.ndarray, b: np.ndarray, grid: int = 512) -> float:
    """Mean of y_B(x) - y_A(x) over the x range both fronts span (monotone interpolation along each).

    Positive: A reaches a lower y than B at the same x. nan when either front is empty or their
    x ranges do not overlap (then there is no matched x to compare at).
    """
    fa, fb = front_points(a), front_points(b)
    if not len(fa) or not len(fb):
        return float("nan")
    lo = max(fa[:, 0].min(), fb[:, 0].min())
    hi = min(fa[:, 0].max(), fb[:, 0].max())
    if lo > hi:
        return float("nan")
    xs = np.linspace(lo, hi, grid) if hi > lo else np.array([lo])
    return float(np.mean(front_y_at(fb, xs) - front_y_at(fa, xs)))


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


def compare(a: FrontierInfo, b: FrontierInfo, margin: float = 0.05, reference: tuple[float, float] | None = None) -> Comparison:
    """Compare two methods' fronts in the same view; the reference point is shared by both (by
    default the worst finite point of either plus `margin` of the range)."""
    pa = np.column_stack([a.x, a.y]).reshape(-1, 2)
    pb = np.column_stack([b.x, b.y]).reshape(-1, 2)
    ref = reference if reference is not None else reference_point(np.vstack([pa, pb]), margin)
    return Comparison(
        a=a.method,
        b=b.method,
        x_name=a.x_name,
        y_name=a.y_name,
        reference=ref,
        hypervolume_a=hypervolume_2d(pa, ref),
        hypervolume_b=hypervolume_2d(pb, ref),
        share_of_b_dominated_by_a=dominated_share(pa, pb),
        share_of_a_dominated_by_b=dominated_share(pb, pa),
        y_gap_at_matched_x=matched_gap(pa, pb),
        x_gap_at_matched_y=matched_gap(pa[:, ::-1], pb[:, ::-1]),
    )


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class BootstrapResult:
    """Seed-level bootstrap intervals for A vs B in one view."""

    a: str
    b: str
    x_name: str
    y_name: str
    seeds: int
    level: float
    hypervolume_diff: Interval  # hypervolume_a - hypervolume_b (> 0: A's front is better)
    share_of_b_dominated_by_a: Interval
    x_gap_at_matched_y: Interval


def _interval(values: list[float], estimate: float, level: float) -> Interval:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return Interval(estimate, float("nan"), float("nan"))
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(lo), float(hi))


def seed_groups(rows: list[dict], a: str, b: str) -> dict:
    """The runs of methods A and B by seed, seeds in order (the unit a seed bootstrap resamples)."""
    seeds = sorted({r["seed"] for r in rows if r["method"] in (a, b)})
    return {s: [r for r in rows if r["seed"] == s and r["method"] in (a, b)] for s in seeds}


def resampled_seeds(seeds: list, n_boot: int, seed: int = 0):
    """`n_boot` draws of len(seeds) seeds with replacement, from one seeded generator."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.choice(seeds, size=len(seeds), replace=True)


def bootstrap(
    rows: list[dict], a: str, b: str, view: tuple[str, str], n_boot: int = 1000, level: float = 0.9, seed: int = 0
) -> BootstrapResult | None:
    """Percentile intervals from resampling whole seeds with replacement (the runs of one seed are
    not independent: they share θ_pre). The reference point is the full data's, fixed across
    resamples so hypervolumes stay comparable. None with fewer than two seeds."""
    by_seed = seed_groups(rows, a, b)
    seeds = list(by_seed)
    if len(seeds) < 2:
        return None
    x, y = view
    pooled = [r for s in seeds for r in by_seed[s]]
    ref = reference_point(np.array([[r[x], r[y]] for r in pooled], dtype=float))

    def stats(sample: list[dict]) -> tuple[float, float, float]:
        c = compare(frontier(sample, a, x, y), frontier(sample, b, x, y), reference=ref)
        return c.hypervolume_a - c.hypervolume_b, c.share_of_b_dominated_by_a, c.x_gap_at_matched_y

    full = stats(pooled)
    draws = [stats([r for s in draw for r in by_seed[s]]) for draw in resampled_seeds(seeds, n_boot, seed)]
    cols = list(zip(*draws))
    return BootstrapResult(a, b, x, y, len(seeds), level, *(_interval(list(c), e, level) for c, e in zip(cols, full)))
