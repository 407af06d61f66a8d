"""The comparison of two methods' frontiers in words: "mixed dominates unmixed", "unmixed
dominates mixed", or where along the x axis each is better (pure functions; lower is better).

A front is read as its attainment curve: y_A(t) is the lowest y among A's points with x <= t, the
best y method A reaches at a budget of t on x. A dominates B when y_A(t) <= y_B(t) for every t
and < for some, which is the same as every point of B's front being weakly dominated by a point
of A's. Both curves are step functions that change only at the fronts' x values, so comparing
them there is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.compare import resampled_seeds, seed_groups
from raysweep.frontier import front_points, hypervolume_2d, reference_point


@dataclass(frozen=True)
class Verdict:
    a: str
    b: str
    x_name: str
    y_name: str
    kind: str  # "a" (A dominates B), "b" (B dominates A), "same", "cross", "none" (a front is empty)
    a_better: tuple[tuple[float, float], ...]  # x ranges [lo, hi) where A's curve is lower
    b_better: tuple[tuple[float, float], ...]
    lean: float = math.nan  # hypervolume of A's front minus B's, on one reference point (the worst of both + 5%)

    @property
    def key(self) -> str:
        """What two verdicts must share to agree: the kind, and where the fronts cross, which front
        holds the larger hypervolume. Two crossings that favour different methods are different
        verdicts: the twin that first showed it crossed under every convention while the larger
        front changed side (docs/results.md, 2026-12-07)."""
        if self.kind != "cross" or not math.isfinite(self.lean) or self.lean == 0:
            return self.kind
        return "cross, A larger" if self.lean > 0 else "cross, B larger"

    @property
    def text(self) -> str:
        if self.kind == "a":
            return f"{self.a} dominates {self.b}"
        if self.kind == "b":
            return f"{self.b} dominates {self.a}"
        if self.kind == "same":
            return "the fronts coincide"
        if self.kind == "none":
            return "no verdict: a front is empty"
        return (
            f"the fronts cross: {self.a} reaches the lower {self.y_name} where {_ranges(self.x_name, self.a_better)}, "
            f"{self.b} where {_ranges(self.x_name, self.b_better)}"
        )


def attained(front: np.ndarray, t: np.ndarray) -> np.ndarray:
    """y_front(t): the lowest y of the points with x <= t (inf where there is none)."""
    f = front_points(front)
    out = np.full(len(t), np.inf)
    for x, y in f:
        out = np.where(np.asarray(t) >= x, np.minimum(out, y), out)
    return out


def verdict(
    a: np.ndarray, b: np.ndarray, a_name: str, b_name: str, x_name: str = "x", y_name: str = "y", reference: tuple | None = None
) -> Verdict:
    """Which front is better where, from two (n, 2) point sets (x, y); non-finite points ignored.
    Its `lean` is the hypervolume difference on `reference` (default: the worst finite point of
    either set + 5% of the range, analysis.compare.reference_point, as the comparison tables use)."""
    fa, fb = front_points(a), front_points(b)
    ref = reference if reference is not None else reference_point(np.vstack([np.reshape(a, (-1, 2)), np.reshape(b, (-1, 2))]))
    lean = hypervolume_2d(fa, ref) - hypervolume_2d(fb, ref)
    if not len(fa) or not len(fb):
        return Verdict(a_name, b_name, x_name, y_name, "none", (), (), lean)
    ts = np.unique(np.concatenate([fa[:, 0], fb[:, 0]]))  # the curves are constant on [ts[i], ts[i+1])
    ya, yb = attained(fa, ts), attained(fb, ts)
    ends = np.append(ts[1:], math.inf)
    a_better = _merge([(lo, hi) for lo, hi, p, q in zip(ts, ends, ya, yb) if p < q])
    b_better = _merge([(lo, hi) for lo, hi, p, q in zip(ts, ends, ya, yb) if q < p])
    kind = "same" if not a_better and not b_better else "a" if not b_better else "b" if not a_better else "cross"
    return Verdict(a_name, b_name, x_name, y_name, kind, a_better, b_better, lean)


def _merge(spans: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    out: list[tuple[float, float]] = []
    for lo, hi in spans:
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((float(lo), float(hi)))
    return tuple(out)


def _ranges(x_name: str, spans: tuple[tuple[float, float], ...]) -> str:
    def one(lo: float, hi: float) -> str:
        return f"{x_name} ≥ {lo:.4g}" if math.isinf(hi) else f"{lo:.4g} ≤ {x_name} < {hi:.4g}"

    return " or ".join(one(lo, hi) for lo, hi in spans)


def agreement(kinds: list[str], kind: str) -> float:
    """Share of resampled verdicts (e.g. a seed bootstrap's) with the same key (Verdict.key) as the full data's."""
    return float(np.mean([k == kind for k in kinds])) if kinds else math.nan


# Below this many seeds a bootstrap's share of agreeing resamples is not said: 2 seeds give only 3
# distinct resamples ({s0,s0}, {s0,s1}, {s1,s1}), so "100% of 1000 resamples agree" was printed for a
# verdict and for its opposite alike (issue 48). The seeds' own verdicts are said instead.
MIN_BOOTSTRAP_SEEDS = 3


def distinct_resamples(n: int) -> int:
    """How many different draws a bootstrap of `n` seeds with replacement can make (multisets of
    size n from n seeds: C(2n − 1, n)); 1, 3, 10, 35, 126 for 1 to 5 seeds."""
    return math.comb(2 * n - 1, n) if n > 0 else 0


def _view_points(runs: list[dict], method: str, view: tuple[str, str]) -> np.ndarray:
    """`method`'s runs as an (n, 2) array of the view's two losses."""
    x, y = view
    return np.array([[r[x], r[y]] for r in runs if r["method"] == method], dtype=float).reshape(-1, 2)


def view_verdict(rows: list[dict], a: str, b: str, view: tuple[str, str], reference: tuple | None = None) -> Verdict:
    """The verdict of A vs B in `view` from runs-table rows (its lean on `reference`, see verdict)."""
    return verdict(_view_points(rows, a, view), _view_points(rows, b, view), a, b, *view, reference)


def seed_verdicts(rows: list[dict], a: str, b: str, view: tuple[str, str]) -> list[Verdict]:
    """The verdict of A vs B in `view` from each seed's runs alone, seeds in order."""
    groups = seed_groups(rows, a, b).values()
    return [verdict(_view_points(runs, a, view), _view_points(runs, b, view), a, b, *view) for runs in groups]


def confidence_words(
    full_kind: str, seed_kinds: list[str], share: float | None, n_boot: int, slice_kinds: list[str] = ()
) -> tuple[bool, str]:
    """(whether the verdict stands, how sure it is in words that hold for the seeds and held-out
    slices at hand). It stands when every seed alone, and every slice alone (analysis.slices),
    gives the pooled verdict's kind. A bootstrap share is said only from MIN_BOOTSTRAP_SEEDS
    units on (seeds, or seeds × slices when slices were scored), with how many distinct
    resamples it draws from."""
    n, k = len(seed_kinds), len(slice_kinds)
    if n < 2 and k < 2:
        return True, ""
    parts, stands = [], True
    if n >= 2:
        agree = sum(s == full_kind for s in seed_kinds)
        stands = agree == n
        if n < MIN_BOOTSTRAP_SEEDS:  # two seeds
            parts.append("both seeds agree" if stands else "the two seeds disagree")
        else:
            parts.append(f"{agree} of {n} seeds agree on their own")
    if k >= 2:
        agree = sum(s == full_kind for s in slice_kinds)
        stands = stands and agree == k
        parts.append(f"{agree} of {k} held-out slices agree")
    if share is not None and max(1, n) * max(1, k) >= MIN_BOOTSTRAP_SEEDS and (k >= 2 or n >= MIN_BOOTSTRAP_SEEDS):
        what, distinct = (
            ("seed × slice", distinct_resamples(max(1, n)) * distinct_resamples(k)) if k >= 2 else ("seed", distinct_resamples(n))
        )
        parts.append(f"{share:.0%} of {n_boot} {what}-bootstrap resamples agree (drawn from {distinct} distinct ones)")
    return stands, "; ".join(parts)


def seed_agreement(
    rows: list[dict], a: str, b: str, view: tuple[str, str], n_boot: int = 1000, seed: int = 0
) -> tuple[Verdict, float | None]:
    """The verdict of A vs B in `view` on all runs, and the share of seed-bootstrap resamples (the
    draws analysis.compare.bootstrap makes) whose verdict is of the same kind; None with fewer
    than two seeds."""
    x, y = view
    by_seed = {s: (_view_points(runs, a, view), _view_points(runs, b, view)) for s, runs in seed_groups(rows, a, b).items()}
    seeds = list(by_seed)

    every = np.vstack([p for pair in by_seed.values() for p in pair]) if seeds else np.zeros((0, 2))
    ref = reference_point(every)  # the full data's, fixed across resamples (as analysis.compare.bootstrap)

    def one(draw) -> Verdict:
        return verdict(np.vstack([by_seed[s][0] for s in draw]), np.vstack([by_seed[s][1] for s in draw]), a, b, x, y, ref)

    full = one(seeds) if seeds else Verdict(a, b, x, y, "none", (), ())
    if len(seeds) < 2:
        return full, None
    return full, agreement([one(draw).key for draw in resampled_seeds(seeds, n_boot, seed)], full.key)
