"""Halving against the grid (issue 35): the same frontiers for less compute? On a CPU twin with a
larger stage-2 grid (12 configurations per method, 3 stage-3 lrs) and seeds 0-2, the grid and
`posttrain.search: halving` run side by side from the same arms (the halving study starts from a
copy of the grid's data and arms, in its own node store, so it reuses none of the grid's stage-2
or stage-3 nodes). Per seed:

- stage-2 + stage-3 training tokens, counted from the nodes: the grid's stage-2 and stage-3 nodes;
  halving's furthest piece of each stage-2 run (a rung is a prefix of its run), its probes and its
  final stage-3 runs;
- each method's (L_ret, L_ft) frontier hypervolume as a share of the grid's (one reference point
  per seed, from the grid's runs);
- the verdict of mixed against unmixed in (L_ret, L_ft), of both;
- how well the first rung ranks configurations: Spearman's correlation, per method, between the
  order of the first rung's probes and the order of the grid's final stage-3 points (the same
  ranking rule, raysweep.sweep.halving.rank_configs).

    python bench/halving.py --quick        # the small twin, seeds 0-2 (about 10 minutes on 2 cores)
    python bench/halving.py                # the twin with larger budgets

Goals: ≤ 40% of the grid's tokens, ≥ 0.97 of each method's grid hypervolume, the same verdict in
every seed. Prints `halving: X% of the grid's tokens, hypervolume ≥ Y of the grid's, verdicts agree
in Z/3 seeds`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__:  # python -m bench.halving, or a test importing it
    from bench.terminal import output_to
else:  # python bench/halving.py: this folder is on the path
    from terminal import output_to

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "search_spaces" / "smoke.yaml"
GOALS = {"tokens": 0.40, "hypervolume": 0.97}
# 6 stage-2 lrs × 2 batch sizes = 12 configurations per method (λ = 0: unmixed, λ = 0.5: mixed)
TWIN = [
    "name=halving-twin",
    "pretrain.mix_fraction=[0.0, 0.5]",
    "posttrain.lr=[5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 8e-3]",
    "posttrain.batch_size=[8, 16]",
    "finetune.lr=[3e-4, 1e-3, 3e-3]",
]
LARGER = ["pretrain.tokens=120000", "posttrain.tokens=120000", "finetune.tokens=32000", "corpora.pre.train_docs=6000"]


def tokens_spent(checkpoints: Path) -> dict[str, int]:
    """Stage-2 and stage-3 training tokens behind a node store: each stage-2 run's furthest piece
    (its node, or its last rung), every probe, every stage-3 run."""
    furthest: dict[str, int] = {}
    out = {"posttrain": 0, "probe": 0, "finetune": 0}
    for path in checkpoints.glob("*/*/node.json"):
        if "." in path.parent.name:
            continue
        node = json.loads(path.read_text())
        spec, tokens = node["spec"], node["result"]["tokens"]
        if spec.get("rung_of") or spec["stage"] == "posttrain":
            run = (spec.get("rung_of") or {}).get("node_key", spec["node_key"])
            furthest[run] = max(furthest.get(run, 0), tokens)
        elif spec["stage"] == "finetune":
            out["probe" if path.parent.parent.name == "probe" else "finetune"] += tokens
    out["posttrain"] = sum(furthest.values())
    return out


def frontier_points(rows: list[dict], method: str) -> np.ndarray:
    return np.array([(r["L_ret"], r["L_ft"]) for r in rows if r["method"] == method], dtype=float).reshape(-1, 2)


def spearman(a: list[str], b: list[str]) -> float:
    """Rank correlation of two orders of the same items."""
    common = [x for x in a if x in b]
    if len(common) < 3:
        return float("nan")
    ra = np.array([a.index(x) for x in common], float)
    rb = np.array([b.index(x) for x in common], float)
    ra, rb = np.argsort(np.argsort(ra)), np.argsort(np.argsort(rb))
    return float(np.corrcoef(ra, rb)[0, 1])


def grid_order(checkpoints: Path) -> dict[str, list[str]]:
    """Per method, the grid's stage-2 configurations ordered by their final stage-3 points (the
    halving's own ranking rule), named as halving names them."""
    from raysweep.spec import finetune_losses
    from raysweep.sweep.halving import rank_configs
    from raysweep.sweep.plan import method_of

    labels, methods = {}, {}
    for path in (checkpoints / "posttrain").glob("*/node.json"):
        spec = json.loads(path.read_text())["spec"]
        labels[spec["node_key"]] = spec["label"].removeprefix("posttrain ")
        tuning = "lora" if spec["lora"] else "full"
        methods[spec["node_key"]] = method_of(spec["meta"]["mix_fraction"], spec["meta"]["replay"], spec["dropout"], tuning)
    points: dict[str, dict[str, list]] = {}
    for path in (checkpoints / "finetune").glob("*/node.json"):
        node = json.loads(path.read_text())
        parent = node["spec"]["meta"]["parent"]
        named = finetune_losses(node["result"]["losses"])
        points.setdefault(methods[parent], {}).setdefault(labels[parent], []).append((named["L_ret"], named["L_ft"]))
    return {m: [e["config"] for e in rank_configs(p)] for m, p in points.items()}


def one_seed(seed: int, root: Path, extra: list[str]) -> dict:
    from analysis.verdict import verdict
    from raysweep.config import load_study
    from raysweep.frontier import hypervolume_2d, reference_point
    from raysweep.study import run_study

    grid_out, halving_out = root / f"seed{seed}" / "grid", root / f"seed{seed}" / "halving"
    common = [f"seed={seed}", *TWIN, *extra]
    t0 = time.perf_counter()
    grid = run_study(load_study(SMOKE, [*common, f"output_dir={grid_out}"]))
    t_grid = time.perf_counter() - t0
    shutil.copytree(grid_out / "cache", halving_out / "cache")  # the same data
    shutil.copytree(grid_out / "checkpoints" / "pretrain", halving_out / "checkpoints" / "pretrain")  # the same arms
    halving = run_study(load_study(SMOKE, [*common, f"output_dir={halving_out}", "posttrain.search=halving"]))
    t_halving = time.perf_counter() - t0 - t_grid

    spent = {name: tokens_spent(out / "checkpoints") for name, out in (("grid", grid_out), ("halving", halving_out))}
    every = np.vstack([frontier_points(grid["rows"], m) for m in ("mixed", "unmixed")])
    ref = reference_point(every)
    shares = {}
    for m in ("mixed", "unmixed"):
        hv_grid = hypervolume_2d(frontier_points(grid["rows"], m), ref)
        shares[m] = hypervolume_2d(frontier_points(halving["rows"], m), ref) / hv_grid if hv_grid > 0 else float("nan")
    verdicts = {
        name: verdict(frontier_points(s["rows"], "mixed"), frontier_points(s["rows"], "unmixed"), "mixed", "unmixed", "L_ret", "L_ft").kind
        for name, s in (("grid", grid), ("halving", halving))
    }
    first = json.loads((halving_out / "halving.json").read_text())
    order = grid_order(grid_out / "checkpoints")
    rho = {m: spearman([e["config"] for e in first if e["rung"] == 1 and e["method"] == m], order.get(m, [])) for m in order}
    return {
        "seed": seed,
        "tokens": spent,
        "token_share": sum(spent["halving"].values()) / sum(spent["grid"].values()),
        "hv_share": shares,
        "verdicts": verdicts,
        "rho_rung1": rho,
        "seconds": {"grid": t_grid, "halving": t_halving},
        "failures": len(grid["failures"]) + len(halving["failures"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the small twin (the smoke study's budgets)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--keep", action="store_true", help="keep the studies' folders")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for both studies, e.g. posttrain.eta=2")
    args = p.parse_args()

    import ray
    import torch

    root = Path(tempfile.mkdtemp(prefix="raysweep-halving-"))
    extra = ([] if args.quick else LARGER) + args.overrides
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"ray {ray.__version__}, python {platform.python_version()}"
    )
    print(f"twin: smoke.yaml with {' '.join(TWIN[1:] + extra)}; seeds {args.seeds}; studies' output in {root / 'studies.log'}")
    results = []
    with output_to(root / "studies.log") as terminal:
        for seed in args.seeds:
            r = one_seed(seed, root, extra)
            results.append(r)
            g, h = r["tokens"]["grid"], r["tokens"]["halving"]
            print(
                f"seed {seed}: tokens {sum(h.values()):,} of {sum(g.values()):,} ({r['token_share']:.1%}: stage 2 {h['posttrain']:,} vs "
                f"{g['posttrain']:,}, probes {h['probe']:,}, stage 3 {h['finetune']:,} vs {g['finetune']:,}); hypervolume share "
                + ", ".join(f"{m} {v:.3f}" for m, v in r["hv_share"].items())
                + f"; verdict grid {r['verdicts']['grid']}, halving {r['verdicts']['halving']}; rung-1 rank correlation "
                + ", ".join(f"{m} {v:+.2f}" for m, v in r["rho_rung1"].items())
                + f"; {r['seconds']['grid']:.0f} s grid, {r['seconds']['halving']:.0f} s halving"
                + (f"; {r['failures']} FAILURES" if r["failures"] else ""),
                file=terminal,
                flush=True,
            )
    tokens = sum(sum(r["tokens"]["halving"].values()) for r in results) / sum(sum(r["tokens"]["grid"].values()) for r in results)
    hv = min(v for r in results for v in r["hv_share"].values())
    agree = sum(r["verdicts"]["grid"] == r["verdicts"]["halving"] for r in results)
    print(
        f"halving: {tokens:.0%} of the grid's tokens, hypervolume ≥ {hv:.3f} of the grid's, verdicts agree in {agree}/{len(results)} seeds "
        f"(goals: ≤ {GOALS['tokens']:.0%}, ≥ {GOALS['hypervolume']}, {len(results)}/{len(results)})"
    )
    (root / "halving.json").write_text(json.dumps(results, indent=1))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
