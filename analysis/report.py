"""The study report: a self-contained HTML page (plotly.js embedded, opens offline) and text tables."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from analysis.compare import bootstrap, compare
from analysis.curves import lambda_curves
from analysis.figures import plot_frontiers, plot_lambda, plot_pareto_3d
from analysis.halving import halving_table, plot_halving
from analysis.pareto import OBJECTIVES_3D, VIEWS, frontiers, pareto_set, set_shares
from analysis.runs import COLUMNS
from analysis.slices import LOSSES, joint_bootstrap, larger_front, slice_count, slice_verdicts, slices_table
from analysis.verdict import MIN_BOOTSTRAP_SEEDS, confidence_words, seed_agreement, seed_verdicts
from raysweep.frontier import hypervolume_2d, reference_point
from raysweep.store.storage import atomic_file, disk_full, is_disk_full

_NAMES = {"L_ret": "L_ret (D_post after fine-tuning)", "L_ft": "L_ft (D_ft)", "L_pre": "L_pre (D_pre after fine-tuning)"}


def frontier_tables(rows: list[dict]) -> str:
    """Plain-text frontier tables, one per view, for the end-of-run summary."""
    out = []
    w = max([9, *(len(r["method"]) for r in rows)])
    for (x, y), infos in frontiers(rows).items():
        out.append(f"Pareto frontier in ({x}, {y}), lower is better:")
        out.append(f"  {'method':<{w}} {x:>8} {y:>8}  run")
        for info in infos:
            for px, py, label in info.front():
                out.append(f"  {info.method:<{w}} {px:>8.4f} {py:>8.4f}  {label}")
            if info.excluded:
                out.append(f"  {info.method:<{w}} ({info.excluded} runs with non-finite losses left out)")
        out.append("")
    return "\n".join(out)


def lambda_table(rows: list[dict]) -> str:
    """L_im and L_ret against λ per (mode, |D_post|), when λ varies; else ''. One seed: the best run
    at each λ. Several: each seed's best at each λ, as mean [lowest, highest] over the seeds, and
    in how many seeds each λ beats the smallest λ (arms are paired, so seed by seed is the fair
    comparison)."""
    curves = {(c.mode, c.post_tokens, c.metric): c for c in lambda_curves(rows)}
    out = []
    for mode, post in sorted({(m, p) for m, p, _ in curves}, key=lambda g: (g[0], g[1] if g[1] is not None else -1)):
        im, ret = curves[mode, post, "L_im"], curves[mode, post, "L_ret"]
        if len(set(im.mix_fraction) | set(ret.mix_fraction)) < 2:
            continue
        size = f"{post:,}" if post is not None else "unknown"
        if len(im.seeds) >= 2 and im.seeds == ret.seeds and im.mix_fraction == ret.mix_fraction:
            out += _lambda_seed_lines(im, ret, mode, size)
            continue
        out.append(f"L_im and L_ret against λ ({mode}, |D_post| = {size}; best run at each λ):")
        out.append(f"  {'λ':>6} {'L_im':>8} {'L_ret':>8}")
        ret_at = dict(zip(ret.mix_fraction, ret.best))
        for mix, v in zip(im.mix_fraction, im.best):
            out.append(f"  {mix:>6g} {v:>8.4f} {ret_at.get(mix, float('nan')):>8.4f}")
        out.append("")
    return "\n".join(out)


def _lambda_seed_lines(im, ret, mode: str, size: str) -> list[str]:
    n = len(im.seeds)
    out = [
        f"L_im and L_ret against λ ({mode}, |D_post| = {size}; each seed's best run at each λ, "
        f"mean [lowest, highest] over {n} seeds; 'below λ={im.mix_fraction[0]:g}': seeds where it is lower than there):"
    ]
    out.append(f"  {'λ':>6} {'L_im':>26} {'L_ret':>26}  below λ={im.mix_fraction[0]:g}: L_im, L_ret")

    def cell(values) -> str:
        return f"{np.mean(values):.4f} [{min(values):.4f}, {max(values):.4f}]"

    for k, mix in enumerate(im.mix_fraction):
        below = "" if k == 0 else "  ".join(f"{sum(v < v0 for v, v0 in zip(c.seed_best[k], c.seed_best[0]))}/{n}" for c in (im, ret))
        out.append(f"  {mix:>6g} {cell(im.seed_best[k]):>26} {cell(ret.seed_best[k]):>26}  {below}")
    return [*out, ""]


def hypervolume_table(rows: list[dict]) -> str:
    """Every method's frontier hypervolume on one scale per view (one reference point: the worst
    finite point of all runs plus 5% of the range), so any two methods can be read against each
    other, e.g. mixed against mixed+replay; with several seeds, each seed's frontier too (on the
    same reference point), so an ordering of methods can be checked seed by seed. '' with fewer
    than two methods."""
    views = frontiers(rows)
    if len({i.method for infos in views.values() for i in infos}) < 2:
        return ""
    seeds = sorted({r.get("seed", 0) for r in rows})
    per_seed = {s: frontiers([r for r in rows if r.get("seed", 0) == s]) for s in seeds} if len(seeds) > 1 else {}
    out = []
    for (x, y), infos in views.items():
        every = np.vstack([np.column_stack([i.x, i.y]).reshape(-1, 2) for i in infos])
        ref = reference_point(every)
        head = f"Hypervolume of each method's frontier in ({x}, {y}), one reference point ({ref[0]:.3f}, {ref[1]:.3f}); larger is better"
        ranked = sorted(((_hv(i, ref), i.method) for i in infos), reverse=True)
        w = max(len(m) for _, m in ranked)
        if not per_seed:
            out += [head + ":", *(f"  {m:<{w}} {h:8.3f}" for h, m in ranked), ""]
            continue
        by_seed = {s: {i.method: _hv(i, ref) for i in per_seed[s].get((x, y), [])} for s in seeds}
        out.append(head + f"; seeds pooled, then each seed's own runs ({len(seeds)} seeds) and its rank among the methods:")
        out.append(f"  {'':<{w}} {'pooled':>8} " + " ".join(f"{'seed ' + str(s):>13}" for s in seeds))
        for h, m in ranked:
            cells = []
            for s in seeds:
                mine = by_seed[s].get(m)
                if mine is None:
                    cells.append(f"{'-':>13}")
                else:
                    cells.append(f"{mine:8.3f} (#{1 + sum(v > mine for v in by_seed[s].values())})")
            out.append(f"  {m:<{w}} {h:8.3f} " + " ".join(f"{c:>13}" for c in cells))
        out.append("")
    return "\n".join(out)


def _hv(info, ref: tuple[float, float]) -> float:
    return hypervolume_2d(np.column_stack([info.x, info.y]), ref)


def side_by_side(a_rows: list[dict], b_rows: list[dict], a: str, b: str) -> str:
    """Two experiments' frontiers side by side (e.g. the same study before and after a change, or
    at two seeds): per view and method, the hypervolume of each on one reference point made from
    both experiments' runs, its ratio, and the size of each front."""
    fa, fb = frontiers(a_rows), frontiers(b_rows)
    out = []
    for view in sorted(set(fa) | set(fb)):
        ia, ib = {i.method: i for i in fa.get(view, [])}, {i.method: i for i in fb.get(view, [])}
        every = np.vstack([np.column_stack([i.x, i.y]).reshape(-1, 2) for i in [*ia.values(), *ib.values()]])
        ref = reference_point(every)
        out.append(f"Frontiers in {view}, {a} vs {b} (one reference point ({ref[0]:.3f}, {ref[1]:.3f}); hypervolume, larger is better):")
        w = max(len(m) for m in (*ia, *ib))
        out.append(f"  {'method':<{w}} {a[:14]:>14} {b[:14]:>14}  ratio  front sizes")
        for m in sorted(set(ia) | set(ib)):
            ha, hb = (_hv(i, ref) if i is not None else float("nan") for i in (ia.get(m), ib.get(m)))
            sizes = "/".join(str(sum(i.on_front)) if i is not None else "-" for i in (ia.get(m), ib.get(m)))
            ratio = f"{hb / ha:5.2f}" if ha and ha == ha and hb == hb else "    -"
            out.append(f"  {m:<{w}} {ha:14.3f} {hb:14.3f}  {ratio}  {sizes}")
        out.append("")
    return "\n".join(out)


def comparisons(rows: list[dict], baseline: str = "unmixed") -> list:
    """Every other method against the baseline, in each view."""
    out = []
    for infos in frontiers(rows).values():
        base = next((i for i in infos if i.method == baseline), None)
        out += [compare(i, base) for i in infos if base is not None and i.method != baseline]
    return out


def comparison_table(rows: list[dict], baseline: str = "unmixed") -> str:
    """Plain text: hypervolume, dominated shares and matched gaps of each method vs the baseline."""
    if not any(r["method"] == baseline for r in rows):
        return f"Frontier comparison: no {baseline!r} runs in this study to compare against.\n"
    lines = [f"Frontier comparison against {baseline} (hypervolume: larger is better, same reference point per view):"]
    for c in comparisons(rows, baseline):
        lines.append(
            f"  ({c.x_name}, {c.y_name}) {c.a} vs {c.b}: hypervolume {c.hypervolume_a:.3f} vs {c.hypervolume_b:.3f}; "
            f"{c.share_of_b_dominated_by_a:.0%} of {c.b}'s front dominated by {c.a}'s, {c.share_of_a_dominated_by_b:.0%} the other way; "
            + (
                f"{c.x_name} lower by {c.x_gap_at_matched_y:+.3f} at matched {c.y_name}"
                if np.isfinite(c.x_gap_at_matched_y)
                else f"no matched {c.y_name} (the fronts' {c.y_name} ranges do not overlap)"
            )
        )
        lines.append(f"    verdict: {verdict_line(rows, c.a, c.b, (c.x_name, c.y_name))}")
    intervals = confidence_table(rows, baseline)
    return "\n".join(lines) + "\n" + intervals + slices_table(rows, baseline)


def verdict_line(rows: list[dict], a: str, b: str, view: tuple[str, str], n_boot: int = 1000) -> str:
    """The comparison in words (analysis.verdict), with how sure it is in words that hold for the
    number of seeds and held-out slices (analysis.verdict.confidence_words); "inconclusive" where
    the seeds or the slices disagree."""
    sliced = [s.key for s in slice_verdicts(rows, a, b, view)]
    # with slices the bootstrap draws seeds and slices together (analysis.slices); else seeds alone,
    # and only from MIN_BOOTSTRAP_SEEDS seeds on (below, its share is not said: none is drawn)
    seeds = len({r["seed"] for r in rows if r["method"] in (a, b)})
    v, share = seed_agreement(rows, a, b, view, n_boot=n_boot if not sliced and seeds >= MIN_BOOTSTRAP_SEEDS else 0)
    if sliced:
        share = joint_bootstrap(rows, a, b, view, n_boot=n_boot).share(v.key)
    keys = [s.key for s in seed_verdicts(rows, a, b, view)]
    stands, said = confidence_words(v.key, keys, share, n_boot, sliced)
    text = v.text + larger_front(v)  # where the fronts cross, which is larger: part of what must agree (Verdict.key)
    if not said:
        return text
    return f"{text} ({said})" if stands else f"inconclusive ({said}): all seeds pooled, {text}"


def confidence_table(rows: list[dict], baseline: str = "unmixed", n_boot: int = 1000) -> str:
    """Seed-bootstrap intervals of each comparison, or a line saying why there are none."""
    seeds = sorted({r["seed"] for r in rows})
    if len(seeds) < 2:
        return (
            f"Confidence intervals: none, the runs come from {len(seeds)} seed; run the study again with "
            "--set seed=<n> into the same experiment and rebuild with `python -m analysis`.\n"
        )
    lines = [f"Seed-bootstrap 90% intervals ({len(seeds)} seeds, {n_boot} resamples of whole seeds):"]
    methods = sorted({r["method"] for r in rows} - {baseline})
    for view in VIEWS:
        for m in methods:
            b = bootstrap(rows, m, baseline, view, n_boot=n_boot)
            if b is None:
                continue
            hv, dom, gap = b.hypervolume_diff, b.share_of_b_dominated_by_a, b.x_gap_at_matched_y
            lines.append(
                f"  ({b.x_name}, {b.y_name}) {m} vs {baseline}: hypervolume difference {hv.estimate:+.3f} [{hv.low:+.3f}, {hv.high:+.3f}]; "
                f"share dominated {dom.estimate:.0%} [{dom.low:.0%}, {dom.high:.0%}]; "
                + (
                    f"{b.x_name} gap {gap.estimate:+.3f} [{gap.low:+.3f}, {gap.high:+.3f}]"
                    if np.isfinite(gap.estimate)
                    else f"no {b.x_name} gap (the fronts' {b.y_name} ranges do not overlap)"
                )
            )
    return "\n".join(lines) + "\n"


def pareto_3d_table(rows: list[dict]) -> str:
    """The joint Pareto set over (L_ft, L_ret, L_pre): who owns it, and its runs."""
    joint = pareto_set(rows, OBJECTIVES_3D)
    lines = [f"3D Pareto set over {OBJECTIVES_3D} (all methods together), lower is better:"]
    for m, (n_on, n) in set_shares(rows).items():
        lines.append(f"  {m:<16} {n_on:>3} of its {n} runs on the set")
    for r in joint.rows:
        lines.append(f"  {r['method']:<16} " + " ".join(f"{r[a]:.4f}" for a in OBJECTIVES_3D) + f"  {r['name']}")
    if joint.excluded:
        lines.append(f"  ({joint.excluded} runs with non-finite losses left out)")
    return "\n".join(lines) + "\n"


def write_csvs(rows: list[dict], folder: Path) -> list[Path]:
    """runs.csv (every fine-tuned checkpoint) and one frontier CSV per view, for spreadsheets and MLflow."""
    import csv
    import io

    texts = {}
    if rows:
        f = io.StringIO(newline="")
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "slices"], extrasaction="ignore")
        w.writeheader()
        w.writerows(sorted(rows, key=lambda r: r["name"]))
        texts["runs.csv"] = f.getvalue()
    if slice_count(rows) >= 2:  # each run's losses on each held-out slice (analysis.slices)
        f = io.StringIO(newline="")
        w = csv.writer(f)
        w.writerow(["name", "seed", "slice", *LOSSES])
        for r in sorted(rows, key=lambda r: (r["name"], r["seed"])):
            w.writerows([r["name"], r["seed"], k, *(s[n] for n in LOSSES)] for k, s in enumerate(r["slices"]))
        texts["slices.csv"] = f.getvalue()
    for (x, y), infos in frontiers(rows).items():
        f = io.StringIO(newline="")
        w = csv.writer(f)
        w.writerow(["method", x, y, "run"])
        for info in infos:
            w.writerows([info.method, px, py, label] for px, py, label in info.front())
        texts[f"frontier_{x}_{y}.csv"] = f.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    return [write_whole(folder / name, text, f"writing {name}") for name, text in texts.items()]


def write_whole(path: Path, text: str, what: str) -> Path:
    """Write a file whole or not at all (a temporary file renamed into place); a full disk is said
    with the path, the bytes free there and the bytes the file needed (raysweep.store.storage.DiskFull)."""
    data = text.encode("utf-8")
    try:
        with atomic_file(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(path, len(data), what) from None
        raise
    return path


def runs_table_html(rows: list[dict]) -> str:
    cols = COLUMNS
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{r[c]:.4f}</td>" if isinstance(r[c], float) and c.startswith("L_") else f"<td>{html.escape(str(r[c]))}</td>" for c in cols
        )
        + "</tr>"
        for r in sorted(rows, key=lambda r: r["name"])
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _failures_html(failures) -> str:
    if not failures:
        return ""
    items = "".join(f"<li>{html.escape(f)}</li>" for f in failures)
    return (
        f"<h2>Failed runs ({len(failures)})</h2><p>Not in any figure or table above; running the same command "
        f"again retrains only these.</p><ul>{items}</ul>"
    )


def report_figures(rows: list[dict]) -> list:
    """Every figure of the report, in order: the two frontier views (Fig. 2 / Fig. 4 with more
    methods), L_im and L_ret against λ per mode when λ varies (Fig. 3a / 3b), the 3D set."""
    figs = [plot_frontiers(infos, title=f"{_NAMES.get(y, y)} vs {_NAMES.get(x, x)}") for (x, y), infos in frontiers(rows).items()]
    curves = lambda_curves(rows)
    for mode in sorted({r["mode"] for r in rows}):
        if len({r["mix_fraction"] for r in rows if r["mode"] == mode}) > 1:
            figs.append(plot_lambda(curves, rows, mode))
    if rows:
        figs.append(plot_pareto_3d(rows, pareto_set(rows, OBJECTIVES_3D)))
    return figs


def write_report(
    rows: list[dict],
    path: Path,
    title: str = "raysweep study",
    failures: list[str] = (),
    plotlyjs: str = "inline",
    halving: list[dict] = (),
    robustness: str = "",
) -> Path:
    """The report page. plotlyjs "inline" embeds plotly.js once (≈3.5 MB, opens offline); "cdn" links
    it (a few kB, for pages kept in git such as docs/figures/; needs a network to view). `halving`:
    a halving search's decisions (raysweep.sweep.halving's log), shown, drawn, before the runs."""
    embed = True if plotlyjs == "inline" else "cdn"
    figures = report_figures(rows) + ([plot_halving(halving)] if halving else [])
    figs = [f.to_html(full_html=False, include_plotlyjs=(embed if i == 0 else False)) for i, f in enumerate(figures)]
    search_fig = figs.pop() if halving else ""  # drawn with its table, under Search
    search = halving_table(halving)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} .figs{{display:flex;flex-wrap:wrap;gap:1em}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<p>Each point is one fine-tuned checkpoint θ_ft; lower is better on both axes. Bold lines are each method's Pareto frontier
(unmixed: λ = 0; mixed: λ &gt; 0; +dropout / +replay: with that stage-2 regulariser). Hover a point for its run and config.
{len(rows)} runs.</p>
<div class="figs">{"".join(f"<div>{f}</div>" for f in figs)}</div>
<h2>Frontiers</h2><pre>{html.escape(frontier_tables(rows))}</pre>
<h2>Against λ</h2><pre>{html.escape(lambda_table(rows) or "λ does not vary in this study.")}</pre>
<h2>Comparison</h2><pre>{html.escape(comparison_table(rows))}
{html.escape(hypervolume_table(rows))}</pre>
<h2>All three losses at once</h2><pre>{html.escape(pareto_3d_table(rows))}</pre>
{f"<h2>Search</h2><div>{search_fig}</div><pre>{html.escape(search)}</pre>" if search else ""}
{f"<h2>Robustness</h2><pre>{html.escape(robustness)}</pre>" if robustness else ""}
{_failures_html(failures)}<h2>All runs</h2>{runs_table_html(rows)}
</body></html>"""
    # a temporary file renamed into place: a full disk leaves no half-written report behind
    return write_whole(path, page, "writing the report")
