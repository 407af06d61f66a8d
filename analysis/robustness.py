"""Does the verdict survive the conventions the paper leaves unstated? The study's comparison
under each robustness variant beside its own (pure functions; the verdicts are the main verdict's
own functions, analysis.verdict and analysis.slices, applied to each variant's runs).
"""

from __future__ import annotations

from analysis.compare import bootstrap
from analysis.pareto import VIEWS
from analysis.slices import agreeing_slices, joint_bootstrap, larger_front, slice_count
from analysis.verdict import MIN_BOOTSTRAP_SEEDS, view_verdict

OWN = "(the study's own)"


def pairs(rows: list[dict], baseline: str = "unmixed") -> list[str]:
    """The methods compared against the baseline."""
    methods = {r["method"] for r in rows}
    return sorted(methods - {baseline}) if baseline in methods else []


def hv_interval(rows: list[dict], a: str, b: str, view: tuple[str, str], n_boot: int) -> str:
    """The hypervolume difference with its interval from what the runs allow: seeds × held-out
    slices, or seeds alone, or none below MIN_BOOTSTRAP_SEEDS units."""
    seeds = len({r["seed"] for r in rows if r["method"] in (a, b)})
    k = slice_count(rows)
    if k >= 2 and seeds * k >= MIN_BOOTSTRAP_SEEDS:
        hv = joint_bootstrap(rows, a, b, view, n_boot=n_boot).hypervolume_diff
    elif seeds >= MIN_BOOTSTRAP_SEEDS:
        hv = bootstrap(rows, a, b, view, n_boot=n_boot).hypervolume_diff
    else:
        from analysis.compare import compare
        from analysis.pareto import frontier

        c = compare(frontier(rows, a, *view), frontier(rows, b, *view))
        return f"{c.hypervolume_a - c.hypervolume_b:+.3f} (no interval)"
    return f"{hv.estimate:+.3f} [{hv.low:+.3f}, {hv.high:+.3f}]"


def robustness_table(rows: list[dict], variants: list[tuple[str, list[dict]]], baseline: str = "unmixed", n_boot: int = 1000) -> str:
    """Plain text: per variant (the study's own first), view and method against the baseline, the
    verdict, whether it is the study's own, and the hypervolume difference with its interval."""
    if not variants:
        return ""
    lines = [
        f"Robustness: the study's comparison under each variant (one unstated convention changed), against {baseline}; "
        "hypervolume difference with its 90% interval (seeds × held-out slices where scored):"
    ]
    w = max(len(OWN), *(len(label) for label, _ in variants))
    for m in pairs(rows, baseline):
        for view in VIEWS:
            own = view_verdict(rows, m, baseline, view)
            lines.append(f"  ({view[0]}, {view[1]}) {m} vs {baseline}:")
            lines.append(f"    {OWN:<{w}}  {hv_interval(rows, m, baseline, view, n_boot):<28} {own.text}{larger_front(own)}")
            for label, vrows in variants:
                v = view_verdict(vrows, m, baseline, view)
                mark = "same verdict" if v.key == own.key else "FLIPS"
                lines.append(f"    {label:<{w}}  {hv_interval(vrows, m, baseline, view, n_boot):<28} {mark}: {v.text}{larger_front(v)}")
    return "\n".join(lines) + "\n"


def holds(rows: list[dict], variants: list[tuple[str, list[dict]]], baseline: str = "unmixed") -> dict:
    """Counts for the robustness line: variants under which every comparison's verdict is the study's
    own (in every view), and held-out slices (of the study's own runs, per view and comparison) on
    which it is; with the per-view counts."""
    methods = pairs(rows, baseline)
    own = {(m, view): view_verdict(rows, m, baseline, view).key for m in methods for view in VIEWS}
    # per variant and view: whether every comparison's verdict is the study's own there
    same = [{view: all(view_verdict(vr, m, baseline, view).key == own[m, view] for m in methods) for view in VIEWS} for _, vr in variants]
    agreeing = agreeing_slices(rows, baseline)
    per_view = {
        view: (sum(s[view] for s in same), sum(agreeing[m, view] for m in methods), len(methods) * slice_count(rows)) for view in VIEWS
    }
    every = sum(all(s.values()) for s in same)
    slices_ok = sum(s for _, s, _ in per_view.values())
    slices_all = sum(t for _, _, t in per_view.values())
    return {"variants": (every, len(variants)), "slices": (slices_ok, slices_all), "per_view": per_view, "methods": methods}


def robustness_line(rows: list[dict], variants: list[tuple[str, list[dict]]], baseline: str = "unmixed") -> str:
    """`robustness: the verdict holds under K of N variants and in S of T held-out slices (…)`; '' without variants."""
    if not variants or not pairs(rows, baseline):
        return ""
    h = holds(rows, variants, baseline)
    (k, n), (s, t) = h["variants"], h["slices"]
    views = "; ".join(f"({x}, {y}): {vk} of {n} variants, {sk} of {st} slices" for (x, y), (vk, sk, st) in h["per_view"].items())
    what = ", ".join(f"{m} vs {baseline}" for m in h["methods"])
    return f"robustness: the verdict holds under {k} of {n} variants and in {s} of {t} held-out slices ({what} in both views; {views})"


def robustness_metrics(rows: list[dict], variants: list[tuple[str, list[dict]]], baseline: str = "unmixed") -> dict[str, float]:
    """The study run's MLflow metrics of the robustness line: shares of variants and slices under which the verdict holds."""
    if not variants or not pairs(rows, baseline):
        return {}
    h = holds(rows, variants, baseline)
    (k, n), (s, t) = h["variants"], h["slices"]
    return {"robustness.variants_hold": k / n, **({"robustness.slices_hold": s / t} if t else {})}
