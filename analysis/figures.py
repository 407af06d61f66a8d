"""plotly figures built from analysis.pareto's numbers; tests check their traces, not pixels."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.pareto import FrontierInfo

COLOURS = {"unmixed": "#1f77b4", "mixed": "#d62728"}
_FALLBACK = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]


def colour(method: str, i: int = 0) -> str:
    return COLOURS.get(method, _FALLBACK[i % len(_FALLBACK)])


def plot_frontiers(infos: list[FrontierInfo], title: str = "") -> go.Figure:
    """All points faint, each method's Pareto front bold (the paper's Fig. 2 style)."""
    fig = go.Figure()
    for i, info in enumerate(infos):
        c = colour(info.method, i)
        fig.add_trace(go.Scatter(
            x=list(info.x), y=list(info.y), mode="markers", name=f"{info.method} (all runs)",
            marker={"color": c, "opacity": 0.3, "size": 8}, text=list(info.labels),
            hovertemplate="%{text}<br>" + f"{info.x_name}=%{{x:.4f}}<br>{info.y_name}=%{{y:.4f}}<extra></extra>",
            legendgroup=info.method,
        ))
        front = info.front()
        fig.add_trace(go.Scatter(
            x=[p[0] for p in front], y=[p[1] for p in front], mode="lines+markers", name=f"{info.method} frontier",
            line={"color": c, "width": 3}, marker={"color": c, "size": 10}, text=[p[2] for p in front],
            hovertemplate="%{text}<br>" + f"{info.x_name}=%{{x:.4f}}<br>{info.y_name}=%{{y:.4f}}<extra></extra>",
            legendgroup=info.method,
        ))
    fig.update_layout(title=title, xaxis_title=infos[0].x_name if infos else "", yaxis_title=infos[0].y_name if infos else "",
                      template="plotly_white", width=620, height=480)
    return fig
