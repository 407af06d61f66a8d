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
        best = e["best"]  # raysweep.spec.balanced_point of its probes
        shown = f"({best[0]:.3f}, {best[1]:.3f})" if best else "none"
        rank = "-" if e["rank"] is None else str(e["rank"])
        outcome = "kept" if e["kept"] else f"pruned: {e['reason']}"
        lines.append(f"  {e['rung']:>4}  {e['share']:>5.3g}  {e['method']:<10} {e['config']:<34} {shown:>26}  {rank:>4}  {outcome}")
    return "\n".join(lines) + "\n"


def plot_halving(log: list[dict]):
    """One panel per rung: every configuration's probe points in (L_ret, L_ft), by method, the kept
    ones filled and the pruned ones hollow (hover: the configuration and why it was pruned)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from analysis.figures import colour

    rungs = sorted({e["rung"] for e in log})
    fig = make_subplots(rows=1, cols=len(rungs), shared_yaxes=True, subplot_titles=[f"rung {r}" for r in rungs])
    methods = sorted({e["method"] for e in log})
    for col, rung in enumerate(rungs, start=1):
        for m in methods:
            for kept in (True, False):
                mine = [e for e in log if e["rung"] == rung and e["method"] == m and e["kept"] == kept]
                pts = [(p, e) for e in mine for p in e["points"] if all(map(math.isfinite, p))]
                if not pts:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=[p[0] for p, _ in pts],
                        y=[p[1] for p, _ in pts],
                        mode="markers",
                        name=f"{m}, {'kept' if kept else 'pruned'}",
                        legendgroup=f"{m}{kept}",
                        showlegend=col == 1,
                        marker={"color": colour(m), "size": 8, "symbol": "circle" if kept else "circle-open"},
                        text=[e["config"] + ("" if kept else f"<br>pruned: {e['reason']}") for _, e in pts],
                        hovertemplate="%{text}<br>L_ret %{x:.3f}, L_ft %{y:.3f}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
        fig.update_xaxes(title_text="L_ret (probe)", row=1, col=col)
    fig.update_yaxes(title_text="L_ft (probe)", row=1, col=1)
    fig.update_layout(title="Halving: each configuration's probes at each rung (filled: went on)", width=420 * len(rungs), height=420)
    return fig
