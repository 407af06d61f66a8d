"""Scaling: wall time of a study's tree vs the number of stage-3 learning rates and of stage-2
configurations. It should grow linearly, with the slope of one run divided by the concurrency
(issue 8), printed as measured slope / expected slope.

    python bench/scaling.py [--config search_spaces/smoke.yaml] [--n2 1 2 4 6] [--n3 1 2 4]

The study (default: the smoke study cut to one arm, no early stopping so every run has a fixed
length) is prepared once; the pretraining arm is trained once and copied into every point's node
store, so what is timed is the tree's stages 2 and 3 (warm worker slots, raysweep.pool: each slot
one TorchTrainer fit that trains stage-2 configurations, each followed by its stage-3 children,
one after another from the queue).
Each point runs in a fresh folder: nothing is reused between points.

Expected slopes, from the runs' own measured times:
- per stage-3 lr (n2 fixed): every stage-2 configuration gains one stage-3 run, and the
  configurations share the slots, so slope = t3 · n2 / slots (t3: one stage-3 run's training loop);
- per stage-2 config (n3 = 1): one more stage-2 run and its stage-3 run on one of the slots, so
  slope = (t2 + t3) / slots. A slot's fit start-up is paid once per slot, not per configuration
  (before warm slots, each configuration cost a fit and the slope was T1 / slots, T1 the whole
  n2 = 1 tree). n2 = 1 uses one slot only (there is one item), so the n2 = 1 → 2 step also pays
  the second slot's start-up; the line from n2 = 2 on is printed too.
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

ROOT = Path(__file__).resolve().parent.parent
STAGE2_LRS = [1e-3, 3e-3, 2e-3, 5e-4, 1.5e-3, 7e-4, 4e-3, 2.5e-3]
STAGE3_LRS = [1e-3, 3e-3, 1e-2, 3e-4, 2e-3, 6e-4, 5e-3, 1.5e-3]
BASE = ["pretrain.mix_fraction=[0.5]", "posttrain.patience=1000", "posttrain.dropout=[0.0]", "checkpoint_dir=null"]


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b·x; returns (a, b, R²)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys) or 1e-12
    return a, b, 1 - ss_res / ss_tot


def report(points: dict[tuple[int, int], dict], slots: int) -> None:
    """The table, and the fitted slopes against the ideal ones."""
    print(f"\nslots (warm worker groups): {slots}")
    print(f"{'n2':>3} {'n3':>3} {'tree s':>8} {'stage-2 run s':>14} {'stage-3 run s':>14}")
    for (n2, n3), pt in sorted(points.items()):
        print(f"{n2:>3} {n3:>3} {pt['tree']:>8.1f} {pt['t2']:>14.1f} {pt['t3']:>14.2f}")

    row3 = sorted((n3, pt) for (n2, n3), pt in points.items() if n2 == 2)
    if len(row3) >= 2:
        a, b, r2 = fit_line([n for n, _ in row3], [pt["tree"] for _, pt in row3])
        t3 = sum(pt["t3"] for _, pt in row3) / len(row3)
        expected = t3 * 2 / slots
        print(
            f"\nvs stage-3 lrs (n2 = 2): tree ≈ {a:.1f} + {b:.2f}·n3 s (R² {r2:.3f}); expected slope t3·n2/slots = "
            f"{t3:.2f}·2/{slots} = {expected:.2f} s; measured/expected = {b / expected:.2f}"
        )
    row2 = sorted((n2, pt) for (n2, n3), pt in points.items() if n3 == 1)
    if len(row2) >= 2:
        t2 = sum(pt["t2"] for _, pt in row2) / len(row2)
        t3 = sum(pt["t3"] for _, pt in row2) / len(row2)
        expected = (t2 + t3) / slots
        for label, row in (("", row2), (", from n2 = 2 on", [(n, pt) for n, pt in row2 if n >= 2])):
            if len(row) >= 2:
                a, b, r2 = fit_line([n for n, _ in row], [pt["tree"] for _, pt in row])
                print(
                    f"vs stage-2 configs (n3 = 1{label}): tree ≈ {a:.1f} + {b:.2f}·n2 s (R² {r2:.3f}); expected slope "
                    f"(t2+t3)/slots = ({t2:.2f}+{t3:.2f})/{slots} = {expected:.2f} s; measured/expected = {b / expected:.2f}"
                )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "search_spaces" / "smoke.yaml")
    p.add_argument("--n2", type=int, nargs="+", default=[1, 2, 4, 6], help="stage-2 configurations (with n3 = 1)")
    p.add_argument("--n3", type=int, nargs="+", default=[1, 2, 4], help="stage-3 learning rates (with n2 = 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    import ray
    import torch

    from raysweep.config import load_study
    from raysweep.study import run_study

    tmp = Path(tempfile.mkdtemp(prefix="raysweep-scaling-"))

    def study(folder: Path, n2: int, n3: int):
        lrs2 = ",".join(f"{x:g}" for x in STAGE2_LRS[:n2])
        lrs3 = ",".join(f"{x:g}" for x in STAGE3_LRS[:n3])
        return load_study(args.config, [*BASE, *args.overrides, f"output_dir={folder}", f"posttrain.lr=[{lrs2}]", f"finetune.lr=[{lrs3}]"])

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"ray {ray.__version__}, python {platform.python_version()}"
    )
    base = tmp / "base"
    run_study(study(base, 1, 1))  # data, tokenizer and the arm, made once (and Ray started)
    slots = study(base, 1, 1).max_concurrent_trials or int(ray.cluster_resources().get("CPU", 1))

    points: dict[tuple[int, int], dict] = {}
    for n2, n3 in sorted({(n, 1) for n in args.n2} | {(2, n) for n in args.n3}):
        folder = tmp / f"n2-{n2}-n3-{n3}"
        shutil.copytree(base / "cache", folder / "cache")
        shutil.copytree(base / "checkpoints" / "pretrain", folder / "checkpoints" / "pretrain")
        t0 = time.perf_counter()
        summary = run_study(study(folder, n2, n3))
        wall = time.perf_counter() - t0
        nodes = [json.loads(f.read_text()) for f in (folder / "checkpoints").glob("*/*/node.json")]
        per = {s: [n["result"]["train_seconds"] for n in nodes if n["spec"]["stage"] == s] for s in ("posttrain", "finetune")}
        points[n2, n3] = {
            "tree": summary["tree_seconds"],
            "wall": wall,
            "t2": sum(per["posttrain"]) / len(per["posttrain"]),
            "t3": sum(per["finetune"]) / len(per["finetune"]),
            "trained": summary["trained"],
        }
        print(
            f"[scaling] n2={n2} n3={n3}: tree {summary['tree_seconds']:.1f} s (study {wall:.1f} s), trained {summary['trained']}",
            flush=True,
        )

    report(points, slots)
    print(f"\nfolders: {tmp}")


if __name__ == "__main__":
    main()
