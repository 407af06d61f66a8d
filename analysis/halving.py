"""What a halving search decided (raysweep.sweep.halving's log), in words: at each rung, per
method, which stage-2 configurations went on and why the others did not."""

from __future__ import annotations

import math


def halving_table(log: list[dict]) -> str:
    """One line per configuration and rung: its best probe point, its rank, kept or why pruned."""
    if not log:
        return ""
    lines = [
        "Halving: stage-2 configurations compared at each rung by their probes' (L_ret, L_ft), per method "
        "(non-dominated rank, then hypervolume added); pruned ones stop there:",
        f"  {'rung':>4}  {'share':>5}  {'method':<10} {'configuration':<34} {'best probe (L_ret, L_ft)':>26}  {'rank':>4}  outcome",
    ]
    for e in log:
        finite = [p for p in e["points"] if all(map(math.isfinite, p))]
        best = min(finite, key=lambda p: (p[0] + p[1], p)) if finite else None
        shown = f"({best[0]:.3f}, {best[1]:.3f})" if best else "none"
        rank = "-" if e["rank"] is None else str(e["rank"])
        outcome = "kept" if e["kept"] else f"pruned: {e['reason']}"
        lines.append(f"  {e['rung']:>4}  {e['share']:>5.3g}  {e['method']:<10} {e['config']:<34} {shown:>26}  {rank:>4}  {outcome}")
    return "\n".join(lines) + "\n"
