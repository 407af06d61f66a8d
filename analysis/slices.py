"""Verdicts on held-out slices: does a comparison survive another choice of held-out documents?
(pure functions; lower is better on both axes.)

Each run is scored on K disjoint slices of every held-out set (raysweep.data.slices); a row holds
them as `row["slices"]`, one {L_im, L_ft, L_ret, L_pre} per slice. A set made of some slices scores
each run with the mean of its losses on them (every slice scores the same number of tokens), so a
bootstrap can resample slices as it resamples seeds: a resample draws seeds with replacement and
slices with replacement, and judges the runs of the drawn seeds on the drawn slices. The verdict
and the hypervolume difference on each slice alone are said beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.compare import Interval, _interval, resampled_seeds, seed_groups
from analysis.verdict import MIN_BOOTSTRAP_SEEDS, Verdict, _view_points, distinct_resamples, view_verdict
from raysweep.frontier import reference_point

LOSSES = ("L_im", "L_ft", "L_ret", "L_pre")


def slice_count(rows: list[dict]) -> int:
    """Slices every row was scored on (0 when a row has none: slices are compared only all together)."""
    counts = [len(r.get("slices") or ()) for r in rows]
    return min(counts) if counts else 0


def on_slices(rows: list[dict], ks) -> list[dict]:
    """The rows as scored on the held-out set made of slices `ks` (repeats count again): each loss
    the mean of the row's losses on them."""
    ks = list(ks)
    return [{**r, **{name: float(np.mean([r["slices"][k][name] for k in ks])) for name in LOSSES}} for r in rows]


def slice_verdicts(rows: list[dict], a: str, b: str, view: tuple[str, str]) -> list[Verdict]:
    """The verdict of A vs B in `view` on each slice alone (all seeds pooled), slices in order."""
    return [view_verdict(on_slices(rows, [k]), a, b, view) for k in range(slice_count(rows))]


def slice_hypervolume_diffs(rows: list[dict], a: str, b: str, view: tuple[str, str]) -> list[float]:
    """Hypervolume of A's front minus B's on each slice alone, each on its own slice's reference
    point (the worst point of either on that slice plus 5% of the range, as for the whole set):
    each slice's verdict's lean."""
    return [v.lean for v in slice_verdicts(rows, a, b, view)]


def _reference(rows: list[dict], a: str, b: str, view: tuple[str, str]) -> tuple[float, float]:
    return reference_point(np.vstack([_view_points(rows, a, view), _view_points(rows, b, view)]))


@dataclass(frozen=True)
class SliceBootstrap:
    """Seeds and slices resampled together, for A vs B in one view."""

    seeds: int
    slices: int
    resamples: int
    distinct: int  # how many different resamples there are to draw
    level: float
    hypervolume_diff: Interval  # on all slices together, fixed reference point
    kinds: tuple[str, ...]  # each resample's verdict key (Verdict.key: its kind, and where fronts cross the larger one)

    def share(self, kind: str) -> float:
        return float(np.mean([k == kind for k in self.kinds])) if self.kinds else float("nan")


def joint_bootstrap(
    rows: list[dict], a: str, b: str, view: tuple[str, str], n_boot: int = 1000, level: float = 0.9, seed: int = 0
) -> SliceBootstrap | None:
    """Percentile interval of the hypervolume difference, and each resample's verdict kind, from
    drawing seeds (the runs of one seed share θ_pre, so a seed is the unit) and slices together,
    each with replacement. The reference point is that of all runs on all slices, fixed across
    resamples. None without slices."""
    k = slice_count(rows)
    if k < 2:
        return None
    by_seed = seed_groups(rows, a, b)
    seeds = list(by_seed)
    whole = on_slices([r for s in seeds for r in by_seed[s]], range(k))
    ref = _reference(whole, a, b, view)
    rng = np.random.default_rng(seed + 1)  # the slices' own stream, beside the seeds'
    diffs, kinds = [], []
    for seed_draw in resampled_seeds(seeds, n_boot, seed):
        sample = on_slices([r for s in seed_draw for r in by_seed[s]], rng.choice(k, size=k, replace=True))
        v = view_verdict(sample, a, b, view, ref)
        diffs.append(v.lean)
        kinds.append(v.key)
    return SliceBootstrap(
        len(seeds),
        k,
        n_boot,
        distinct_resamples(len(seeds)) * distinct_resamples(k),
        level,
        _interval(diffs, view_verdict(whole, a, b, view, ref).lean, level),
        tuple(kinds),
    )


def larger_front(v: Verdict) -> str:
    """Where the fronts cross, which holds the larger hypervolume (what Verdict.key adds to the kind)."""
    return f", {v.a if v.lean > 0 else v.b}'s the larger" if v.kind == "cross" and v.lean == v.lean and v.lean != 0 else ""


def slices_table(rows: list[dict], baseline: str = "unmixed", n_boot: int = 1000) -> str:
    """Plain text: per view and method against the baseline, the verdict and hypervolume difference
    on each held-out slice alone, and the seeds × slices bootstrap's interval; or why there is none."""
    from analysis.pareto import VIEWS

    k = slice_count(rows)
    if k < 2:  # why is said where the study's data is made ("[data] held-out slices: none ...")
        return ""
    seeds = len({r["seed"] for r in rows})
    lines = [
        f"Held-out slices: every run scored on {k} disjoint slices of each held-out set (by document); the verdict on each "
        f"slice alone, then {seeds} seed{'s' if seeds != 1 else ''} and {k} slices resampled together ({n_boot} resamples):"
    ]
    methods = sorted({r["method"] for r in rows} - {baseline})
    if baseline not in {r["method"] for r in rows}:
        return lines[0] + f"\n  no {baseline!r} runs to compare against.\n"
    for view in VIEWS:
        for m in methods:
            per = slice_verdicts(rows, m, baseline, view)
            main = view_verdict(rows, m, baseline, view)
            agree = sum(v.key == main.key for v in per)
            odd = [f"slice {i}: {v.text}{larger_front(v)}" for i, v in enumerate(per) if v.key != main.key]
            diffs = " ".join(f"{d:+.3f}" for d in slice_hypervolume_diffs(rows, m, baseline, view))
            jb = joint_bootstrap(rows, m, baseline, view, n_boot=n_boot)
            hv = jb.hypervolume_diff
            if jb.seeds * jb.slices >= MIN_BOOTSTRAP_SEEDS:
                interval = f"seeds × slices {jb.level:.0%} interval {hv.estimate:+.3f} [{hv.low:+.3f}, {hv.high:+.3f}] (from {jb.distinct} distinct resamples)"
            else:
                interval = f"no interval: {jb.seeds} seed × {jb.slices} slices give {jb.distinct} distinct resamples"
            lines.append(
                f"  ({view[0]}, {view[1]}) {m} vs {baseline}: '{main.text}' holds on {agree} of {k} slices"
                + (f" ({'; '.join(odd)})" if odd else "")
                + f"; hypervolume difference per slice {diffs}; {interval}"
            )
    return "\n".join(lines) + "\n"


def agreeing_slices(rows: list[dict], baseline: str = "unmixed") -> dict[tuple[str, tuple[str, str]], int]:
    """Per method (against the baseline) and view, how many slices alone give the whole set's verdict (Verdict.key)."""
    from analysis.pareto import VIEWS

    out = {}
    for m in sorted({r["method"] for r in rows} - {baseline}):
        for view in VIEWS:
            main = view_verdict(rows, m, baseline, view)
            out[m, view] = sum(v.key == main.key for v in slice_verdicts(rows, m, baseline, view))
    return out


def slices_summary(rows: list[dict], baseline: str = "unmixed") -> str:
    """One line for the end of a study: in how many slices each comparison's verdict holds; '' without slices."""
    k = slice_count(rows)
    if k < 2 or baseline not in {r["method"] for r in rows}:
        return ""
    per_method: dict[str, list[str]] = {}
    for (m, (x, y)), agree in agreeing_slices(rows, baseline).items():
        per_method.setdefault(m, []).append(f"{agree} of {k} slices in ({x}, {y})")
    parts = [" and ".join(views) + f" ({m} vs {baseline})" for m, views in per_method.items()]
    return "held-out slices: the verdict holds in " + "; ".join(parts)


def slice_agreement(rows: list[dict], baseline: str = "unmixed") -> dict[str, float]:
    """Per method and view, the share of slices whose verdict is the whole set's (MLflow metrics of the study's run)."""
    k = slice_count(rows)
    if k < 2:
        return {}
    return {
        f"slices_agree.{m}_vs_{baseline}.{x}_{y}".replace("+", "_"): agree / k
        for (m, (x, y)), agree in agreeing_slices(rows, baseline).items()
    }
