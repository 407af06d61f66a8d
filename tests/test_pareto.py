import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from analysis.figures import plot_frontiers
from analysis.pareto import frontier, frontiers, pareto_mask
from analysis.report import frontier_tables, write_report

# small integer grids make ties and exact duplicates common
coord = st.one_of(st.integers(0, 5).map(float), st.just(math.nan))
cloud = st.lists(st.tuples(coord, coord), min_size=0, max_size=40)


def brute_force(pts):
    out = []
    for i, p in enumerate(pts):
        if not all(math.isfinite(v) for v in p):
            out.append(False)
            continue
        dominated = any(
            all(math.isfinite(v) for v in q) and all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p))
            for j, q in enumerate(pts) if j != i
        )
        out.append(not dominated)
    return out


@given(cloud)
def test_pareto_mask_equals_brute_force(pts):
    arr = np.array(pts, dtype=float).reshape(-1, 2)
    assert pareto_mask(arr).tolist() == brute_force(pts)


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=30))
def test_no_dominated_point_on_a_3d_front(pts):
    arr = np.array(pts)
    mask = pareto_mask(arr)
    assert mask.any()
    for i in np.flatnonzero(mask):
        assert not any((arr[j] <= arr[i]).all() and (arr[j] < arr[i]).any() for j in range(len(arr)))


def _rows():
    rows = []
    for i, (m, ret, ft) in enumerate([("unmixed", 1.0, 3.0), ("unmixed", 2.0, 2.0), ("unmixed", 2.5, 2.5),
                                     ("mixed", 0.5, 2.9), ("mixed", 1.5, 1.5), ("mixed", math.nan, 1.0)]):
        rows.append({"name": f"r{i}", "method": m, "L_ret": ret, "L_ft": ft, "L_pre": 3.0 - ft, "L_im": 1.0,
                     "mix_fraction": 0.0 if m == "unmixed" else 1.0, "posttrain_lr": 1e-3, "dropout": 0.0, "replay": 0.0, "finetune_lr": 1e-3})
    return rows


def test_frontier_counts_non_finite_rows():
    info = frontier(_rows(), "mixed", "L_ret", "L_ft")
    assert info.excluded == 1
    assert info.front() == [(0.5, 2.9, "r3"), (1.5, 1.5, "r4")]
    assert [p[2] for p in frontier(_rows(), "unmixed", "L_ret", "L_ft").front()] == ["r0", "r1"]


def test_figure_traces_hold_exactly_the_frontier_points():
    infos = frontiers(_rows())[("L_ret", "L_ft")]
    fig = plot_frontiers(infos)
    by_name = {t.name: t for t in fig.data}
    for info in infos:
        front = info.front()
        t = by_name[f"{info.method} frontier"]
        assert list(t.x) == [p[0] for p in front] and list(t.y) == [p[1] for p in front]
        assert len(by_name[f"{info.method} (all runs)"].x) == len(info.x)


def test_report_is_self_contained(tmp_path):
    path = write_report(_rows(), tmp_path / "r.html")
    html = path.read_text()
    assert "Plotly.newPlot" in html and '<script src="http' not in html  # plotly.js embedded, opens offline
    assert len(html) > 1_000_000  # the library itself is inline
    assert html.count("<tr>") == len(_rows()) + 1
    assert "1 runs with non-finite losses left out" in frontier_tables(_rows())
    assert "(L_ret, L_ft) mixed vs unmixed: hypervolume" in html
