"""Pareto sets, as pure functions (no plotting imports). Lower is better on every axis."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysweep.frontier import pareto_mask  # the definition halving's search shares


@dataclass(frozen=True)
class FrontierInfo:
    """One method's points in one 2D view and which of them form its Pareto front."""

    method: str
    x_name: str
    y_name: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    labels: tuple[str, ...]
    on_front: tuple[bool, ...]
    excluded: int  # rows dropped for a non-finite value (reported, never silent)

    def front(self) -> list[tuple[float, float, str]]:
        """Front points sorted by x (then y)."""
        pts = [(x, y, label) for x, y, label, f in zip(self.x, self.y, self.labels, self.on_front) if f]
        return sorted(pts)


def frontier(rows: list[dict], method: str, x: str, y: str) -> FrontierInfo:
    """The Pareto front of one method's rows in the (x, y) view."""
    mine = [r for r in rows if r["method"] == method]
    finite = [r for r in mine if np.isfinite(r[x]) and np.isfinite(r[y])]
    pts = np.array([[r[x], r[y]] for r in finite], dtype=float).reshape(-1, 2)
    mask = pareto_mask(pts) if len(pts) else np.zeros(0, dtype=bool)
    return FrontierInfo(
        method=method,
        x_name=x,
        y_name=y,
        x=tuple(float(v) for v in pts[:, 0]),
        y=tuple(float(v) for v in pts[:, 1]),
        labels=tuple(r["name"] for r in finite),
        on_front=tuple(bool(m) for m in mask),
        excluded=len(mine) - len(finite),
    )


VIEWS = (("L_ret", "L_ft"), ("L_pre", "L_ret"))  # the paper's two frontier views (Fig. 2)


def frontiers(rows: list[dict]) -> dict[tuple[str, str], list[FrontierInfo]]:
    """Every method's front in each of the paper's two views."""
    methods = sorted({r["method"] for r in rows}, key=lambda m: (m != "unmixed", m))
    return {view: [frontier(rows, m, *view) for m in methods] for view in VIEWS}


OBJECTIVES_3D = ("L_ft", "L_ret", "L_pre")  # the three losses after fine-tuning


@dataclass(frozen=True)
class SetInfo:
    """The Pareto set of some rows over any number of objectives."""

    axes: tuple[str, ...]
    rows: tuple[dict, ...]  # the rows on the set, sorted by the first axis
    considered: int  # rows with finite values on every axis
    excluded: int  # rows left out for a non-finite value (counted, never silent)


def pareto_set(rows: list[dict], axes: tuple[str, ...] = OBJECTIVES_3D) -> SetInfo:
    """The rows no other row beats on every axis at once (e.g. the 3D set over L_ft, L_ret, L_pre)."""
    finite = [r for r in rows if all(np.isfinite(r[a]) for a in axes)]
    pts = np.array([[r[a] for a in axes] for r in finite], dtype=float).reshape(-1, len(axes))
    mask = pareto_mask(pts) if len(pts) else np.zeros(0, dtype=bool)
    on = sorted((r for r, m in zip(finite, mask) if m), key=lambda r: tuple(r[a] for a in axes))
    return SetInfo(tuple(axes), tuple(on), len(finite), len(rows) - len(finite))


def set_shares(rows: list[dict], axes: tuple[str, ...] = OBJECTIVES_3D) -> dict[str, tuple[int, int]]:
    """Per method: (its points on the joint Pareto set of all methods, its points considered).

    A method that owns most of the joint set is the one to pick whatever the weighting of the losses."""
    joint = pareto_set(rows, axes)
    methods = sorted({r["method"] for r in rows})
    considered = {m: sum(1 for r in rows if r["method"] == m and all(np.isfinite(r[a]) for a in axes)) for m in methods}
    return {m: (sum(1 for r in joint.rows if r["method"] == m), considered[m]) for m in methods}
