"""plotly figures built from analysis.pareto's numbers; tests check their traces, not pixels."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from analysis.curves import LambdaCurve
from analysis.pareto import FrontierInfo, SetInfo

COLOURS = {
    "unmixed": "#1f77b4",
    "mixed": "#d62728",
    "mixed+dropout": "#ff7f0e",
    "mixed+replay": "#2ca02c",
    "unmixed+dropout": "#17becf",
    "unmixed+replay": "#9467bd",
    "mixed+dropout+replay": "#8c564b",
    "mixed+lora": "#e377c2",
    "unmixed+lora": "#7f7f7f",
}
_FALLBACK = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]


def colour(method: str, i: int = 0) -> str:
    return COLOURS.get(method, _FALLBACK[i % len(_FALLBACK)])


def plot_frontiers(infos: list[FrontierInfo], title: str = "") -> go.Figure:
    """All points faint, each method's Pareto front bold (the paper's Fig. 2 style)."""
    fig = go.Figure()
    for i, info in enumerate(infos):
        c = colour(info.method, i)
        fig.add_trace(
            go.Scatter(
                x=list(info.x),
                y=list(info.y),
                mode="markers",
                name=f"{info.method} (all runs)",
                marker={"color": c, "opacity": 0.3, "size": 8},
                text=list(info.labels),
                hovertemplate="%{text}<br>" + f"{info.x_name}=%{{x:.4f}}<br>{info.y_name}=%{{y:.4f}}<extra></extra>",
                legendgroup=info.method,
            )
        )
        front = info.front()
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in front],
                y=[p[1] for p in front],
                mode="lines+markers",
                name=f"{info.method} frontier",
                line={"color": c, "width": 3},
                marker={"color": c, "size": 10},
                text=[p[2] for p in front],
                hovertemplate="%{text}<br>" + f"{info.x_name}=%{{x:.4f}}<br>{info.y_name}=%{{y:.4f}}<extra></extra>",
                legendgroup=info.method,
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title=infos[0].x_name if infos else "",
        yaxis_title=infos[0].y_name if infos else "",
        template="plotly_white",
        width=620,
        height=480,
    )
    return fig


_MODE_TITLE = {
    "sweep": "Fig. 3a: λ-sweep (λ·|D_post| added to stage 1)",
    "compute_matched": "Fig. 3b: compute-matched (λ in stage 1, 1−λ in stage 2)",
}
_DASH = {"L_im": "dot", "L_ret": "solid"}


def _seed_bars(c: LambdaCurve, colour_: str, size: str) -> go.Scatter:
    """Each seed's best at each λ: their mean, with bars from the lowest to the highest."""
    mean = [sum(v) / len(v) for v in c.seed_best]
    return go.Scatter(
        x=list(c.mix_fraction),
        y=mean,
        mode="markers",
        name=f"{c.metric}, mean of {len(c.seeds)} seeds' bests, lowest to highest ({size})",
        marker={"color": colour_, "size": 11, "symbol": "diamond-open" if c.metric == "L_im" else "diamond"},
        error_y={
            "type": "data",
            "array": [max(v) - m for v, m in zip(c.seed_best, mean)],
            "arrayminus": [m - min(v) for v, m in zip(c.seed_best, mean)],
            "color": colour_,
        },
        hovertemplate="λ=%{x}: mean %{y:.4f} over seeds<extra></extra>",
        legendgroup=f"{c.metric}{size}",
    )


def plot_lambda(curves: list[LambdaCurve], rows: list[dict], mode: str) -> go.Figure:
    """L_im and L_ret against λ, one line pair per |D_post| (best run at each λ), every run faint;
    with several seeds also each seed's best, as their mean with bars from the lowest to the highest."""
    fig = go.Figure()
    mine = [c for c in curves if c.mode == mode]
    sizes = sorted({c.post_tokens for c in mine}, key=lambda v: v if v is not None else -1)
    for c in mine:
        colour_ = _FALLBACK[sizes.index(c.post_tokens) % len(_FALLBACK)]
        size = f"|D_post|={c.post_tokens:,}" if c.post_tokens is not None else "|D_post| unknown"
        pts = [r for r in rows if r["mode"] == mode and r["post_tokens"] == c.post_tokens]
        fig.add_trace(
            go.Scatter(
                x=[r["mix_fraction"] for r in pts],
                y=[r[c.metric] for r in pts],
                mode="markers",
                name=f"{c.metric}, every run ({size})",
                marker={"color": colour_, "opacity": 0.25, "size": 7, "symbol": "circle-open" if c.metric == "L_im" else "circle"},
                text=[r["name"] for r in pts],
                hovertemplate="%{text}<br>λ=%{x}<br>" + c.metric + "=%{y:.4f}<extra></extra>",
                legendgroup=f"{c.metric}{size}",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=list(c.mix_fraction),
                y=list(c.best),
                mode="lines+markers",
                name=f"{c.metric} ({size})",
                line={"color": colour_, "width": 3, "dash": _DASH.get(c.metric, "solid")},
                text=list(c.best_run),
                hovertemplate="best at λ=%{x}: %{text}<br>" + c.metric + "=%{y:.4f}<extra></extra>",
                legendgroup=f"{c.metric}{size}",
            )
        )
        if len(c.seeds) >= 2:
            fig.add_trace(_seed_bars(c, colour_, size))
    fig.update_layout(
        title=_MODE_TITLE.get(mode, mode),
        xaxis_title="λ (share of D_post mixed into pretraining)",
        yaxis_title="held-out loss on D_post",
        template="plotly_white",
        width=620,
        height=480,
    )
    return fig


def plot_pareto_3d(rows: list[dict], joint: SetInfo) -> go.Figure:
    """Every run in (L_ft, L_ret, L_pre), faint; the joint 3D Pareto set bold, coloured by method."""
    fig = go.Figure()
    on = {id(r) for r in joint.rows}
    x, y, z = joint.axes
    for i, m in enumerate(sorted({r["method"] for r in rows})):
        for front in (False, True):
            pts = [r for r in rows if r["method"] == m and (id(r) in on) == front and all(math.isfinite(r[a]) for a in joint.axes)]
            if not pts:
                continue
            fig.add_trace(
                go.Scatter3d(
                    x=[r[x] for r in pts],
                    y=[r[y] for r in pts],
                    z=[r[z] for r in pts],
                    mode="markers",
                    name=f"{m} ({'on the 3D set' if front else 'other runs'})",
                    text=[r["name"] for r in pts],
                    marker={"color": colour(m, i), "size": 6 if front else 3, "opacity": 1.0 if front else 0.25},
                    hovertemplate="%{text}<br>" + f"{x}=%{{x:.4f}}<br>{y}=%{{y:.4f}}<br>{z}=%{{z:.4f}}<extra></extra>",
                )
            )
    fig.update_layout(
        title=f"3D Pareto set over ({x}, {y}, {z})",
        template="plotly_white",
        width=620,
        height=520,
        scene={"xaxis_title": x, "yaxis_title": y, "zaxis_title": z},
    )
    return fig


def plot_theory(summary: dict) -> go.Figure:
    """The linear theory study (raysweep.sweep.linear.summary): the specialised features' learned gain
    after each stage, and the forgetting Δ = L_ret − L_im, against λ (one Δ line per stage-3 lr)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("specialised gain after each stage", "Δ = L(θ_ft; D_post) − L(θ_post; D_post)"))
    leaves = summary["leaves"]
    first = sorted({(r["mix_fraction"], r["alpha"]) for r in leaves})
    for stage, dash in (("pre", "dot"), ("post", "dash"), ("ft", "solid")):
        pts = [next(r for r in leaves if r["mix_fraction"] == mix) for mix, _ in first]
        fig.add_trace(
            go.Scatter(
                x=[r["mix_fraction"] for r in pts],
                y=[r[f"gains_{stage}"]["specialised"] for r in pts],
                mode="lines+markers",
                line={"dash": dash},
                name=f"after stage {'1' if stage == 'pre' else '2' if stage == 'post' else '3'}",
            ),
            1,
            1,
        )
    for i, ft_lr in enumerate(sorted({r["finetune_lr"] for r in leaves})):
        pts = sorted((r for r in leaves if r["finetune_lr"] == ft_lr), key=lambda r: r["mix_fraction"])
        fig.add_trace(
            go.Scatter(
                x=[r["mix_fraction"] for r in pts],
                y=[r["delta"] for r in pts],
                mode="lines+markers",
                name=f"Δ, stage-3 lr {ft_lr:g}",
                line={"color": _FALLBACK[i % len(_FALLBACK)]},
                text=[f"α={r['alpha']:.3f}" for r in pts],
            ),
            1,
            2,
        )
    fig.update_xaxes(title_text="λ (stage-1 mixing)")
    fig.update_layout(width=1000, height=420, title="Linear theory: early exposure and forgetting")
    return fig
