import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.figures import plot_frontiers
from analysis.pareto import frontier, frontiers
from analysis.report import frontier_tables, write_report
from tests.helpers import example_rows


def test_frontier_counts_non_finite_rows():
    info = frontier(example_rows(), "mixed", "L_ret", "L_ft")
    assert info.excluded == 1
    assert info.front() == [(0.5, 2.9, "r3"), (1.5, 1.5, "r4")]
    assert [p[2] for p in frontier(example_rows(), "unmixed", "L_ret", "L_ft").front()] == ["r0", "r1"]


def test_figure_traces_hold_exactly_the_frontier_points():
    infos = frontiers(example_rows())[("L_ret", "L_ft")]
    fig = plot_frontiers(infos)
    by_name = {t.name: t for t in fig.data}
    for info in infos:
        front = info.front()
        t = by_name[f"{info.method} frontier"]
        assert list(t.x) == [p[0] for p in front] and list(t.y) == [p[1] for p in front]
        assert len(by_name[f"{info.method} (all runs)"].x) == len(info.x)


def test_report_is_self_contained(tmp_path):
    path = write_report(example_rows(), tmp_path / "r.html")
    html = path.read_text()
    assert "Plotly.newPlot" in html and '<script src="http' not in html  # plotly.js embedded, opens offline
    assert len(html) > 1_000_000  # the library itself is inline
    assert html.count("<tr>") == len(example_rows()) + 1
    assert "1 runs with non-finite losses left out" in frontier_tables(example_rows())
    assert "(L_ret, L_ft) mixed vs unmixed: hypervolume" in html


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 4),
            st.integers(0, 4),
            st.sampled_from([0.0, 1.0, 2.0, 3.0, math.nan, math.inf]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_3d_set_equals_brute_force_and_counts_non_finite(points):
    from analysis.pareto import pareto_set, set_shares

    rows = [{"name": f"r{i}", "method": m, "L_ft": float(a), "L_ret": float(b), "L_pre": c} for i, (m, a, b, c) in enumerate(points)]
    info = pareto_set(rows)
    finite = [r for r in rows if all(math.isfinite(r[k]) for k in ("L_ft", "L_ret", "L_pre"))]
    key = lambda r: (r["L_ft"], r["L_ret"], r["L_pre"])
    dominated = lambda r: any(all(x <= y for x, y in zip(key(o), key(r))) and key(o) != key(r) for o in finite)
    assert sorted(r["name"] for r in info.rows) == sorted(r["name"] for r in finite if not dominated(r))
    assert info.excluded == len(rows) - len(finite) and info.considered == len(finite)
    shares = set_shares(rows)
    assert sum(on for on, _ in shares.values()) == len(info.rows)
    assert all(on <= n for on, n in shares.values())


def test_lambda_curves_pick_the_best_run_per_lambda_and_figures_show_them():
    from analysis.curves import lambda_curves
    from analysis.figures import plot_lambda

    rows = []
    for post in (1000, 3000):
        for lam in (0.0, 0.5, 1.0):
            for k in range(3):
                rows.append(
                    {
                        "name": f"p{post}-l{lam}-{k}",
                        "mode": "sweep",
                        "post_tokens": post,
                        "mix_fraction": lam,
                        "L_im": 2.0 + k - lam * 0 + post / 1e4,
                        "L_ret": 3.0 - lam + k * 0.1 + (math.nan if k == 0 and lam == 0.5 else 0),
                    }
                )
    curves = lambda_curves(rows)
    assert [(c.post_tokens, c.metric) for c in curves] == [(1000, "L_im"), (1000, "L_ret"), (3000, "L_im"), (3000, "L_ret")]
    for c in curves:
        for lam, best, name in zip(c.mix_fraction, c.best, c.best_run):
            at = [
                r[c.metric] for r in rows if r["post_tokens"] == c.post_tokens and r["mix_fraction"] == lam and math.isfinite(r[c.metric])
            ]
            assert best == min(at) and name.startswith(f"p{c.post_tokens}-l{lam}")
    fig = plot_lambda(curves, rows, "sweep")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [(list(t.x), list(t.y)) for t in lines] == [(list(c.mix_fraction), list(c.best)) for c in curves]
    assert sum(len(t.x) for t in fig.data if t.mode == "markers") == len(rows) * 2  # every run, once per metric


def test_lambda_curves_with_seeds_keep_each_seeds_best_and_the_table_counts_seeds_below_the_first_lambda():
    from analysis.curves import lambda_curves
    from analysis.report import lambda_table

    rng = np.random.default_rng(3)
    rows = [
        {"name": f"s{seed}-l{lam}-{k}", "mode": "sweep", "post_tokens": 1000, "mix_fraction": lam, "seed": seed}
        | {"L_im": float(rng.uniform(1, 2)), "L_ret": float(rng.uniform(1, 3))}
        for seed in (0, 1, 2)
        for lam in (0.0, 0.5, 1.0)
        for k in range(2)
    ]
    curves = {c.metric: c for c in lambda_curves(rows)}
    for metric, c in curves.items():
        assert c.seeds == (0, 1, 2)
        for lam, per_seed in zip(c.mix_fraction, c.seed_best):
            assert per_seed == tuple(min(r[metric] for r in rows if r["mix_fraction"] == lam and r["seed"] == s) for s in (0, 1, 2))
    table = lambda_table(rows)
    assert "mean [lowest, highest] over 3 seeds" in table
    from analysis.figures import plot_lambda

    bars = [t for t in plot_lambda(list(curves.values()), rows, "sweep").data if t.error_y and t.error_y.array is not None]
    for t, c in zip(bars, curves.values()):
        means = [float(np.mean(v)) for v in c.seed_best]
        assert list(t.y) == pytest.approx(means)
        assert [m + up for m, up in zip(means, t.error_y.array)] == pytest.approx([max(v) for v in c.seed_best])
        assert [m - down for m, down in zip(means, t.error_y.arrayminus)] == pytest.approx([min(v) for v in c.seed_best])
    assert len(bars) == 2
    for k, lam in enumerate((0.5, 1.0), start=1):
        below = [sum(v < v0 for v, v0 in zip(curves[m].seed_best[k], curves[m].seed_best[0])) for m in ("L_im", "L_ret")]
        line = next(line for line in table.splitlines() if line.split() and line.split()[0] == f"{lam:g}")
        assert line.split()[-2:] == [f"{below[0]}/3", f"{below[1]}/3"]
        mean_ret = np.mean(curves["L_ret"].seed_best[k])
        assert f"{mean_ret:.4f} [" in line


def test_3d_figure_holds_exactly_the_joint_set():
    from analysis.figures import plot_pareto_3d
    from analysis.pareto import pareto_set

    rows = example_rows()
    joint = pareto_set(rows)
    fig = plot_pareto_3d(rows, joint)
    bold = [t for t in fig.data if "on the 3D set" in t.name]
    assert sorted(n for t in bold for n in t.text) == sorted(r["name"] for r in joint.rows)
    assert sum(len(t.x) for t in fig.data) == joint.considered  # every finite run once; the NaN run is left out (and counted)
