"""Rebuild a study's report from an MLflow store: `python -m analysis --tracking-uri URI --experiment NAME`;
with `--against OTHER` (and `--against-uri` if it lives elsewhere), the two experiments' frontiers side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.report import comparison_table, frontier_tables, hypervolume_table, lambda_table, side_by_side, write_report
from analysis.robustness import robustness_line, robustness_table
from analysis.runs import failed_runs_from_mlflow, rows_from_mlflow


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    p.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///runs/default/mlflow.db or http://127.0.0.1:5000")
    p.add_argument("--experiment", required=True, help="the study's name (its MLflow experiment)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for report.html (default: here)")
    p.add_argument(
        "--plotlyjs",
        choices=("inline", "cdn"),
        default="inline",
        help="inline: plotly.js inside the page (opens offline); cdn: linked (small files, e.g. for docs/)",
    )
    p.add_argument("--against", help="another experiment: its frontiers side by side with this one's (no report is written)")
    p.add_argument("--against-uri", help="the other experiment's tracking URI (default: --tracking-uri)")
    p.add_argument(
        "--robustness",
        action="store_true",
        help="also the study's robustness variants (the experiments named <experiment>.<convention>-<value>), every seed "
        "tracked into them: each variant's verdict beside the study's own",
    )
    args = p.parse_args(argv)
    rows = rows_from_mlflow(args.tracking_uri, args.experiment)
    if args.against:
        other = rows_from_mlflow(args.against_uri or args.tracking_uri, args.against)
        if not rows or not other:
            print(f"no finished fine-tuning runs in experiment {args.experiment if not rows else args.against!r}")
            return 1
        print(side_by_side(rows, other, args.experiment, args.against))
        return 0
    if not rows:
        print(f"no finished fine-tuning runs in experiment {args.experiment!r}")
        return 1
    failed = failed_runs_from_mlflow(args.tracking_uri, args.experiment)
    variants = variant_rows(args.tracking_uri, args.experiment) if args.robustness else []
    robust = robustness_table(rows, variants)
    report = write_report(
        rows, args.out / "report.html", f"raysweep study {args.experiment!r}", failed, plotlyjs=args.plotlyjs, robustness=robust
    )
    print(frontier_tables(rows) + lambda_table(rows) + comparison_table(rows) + hypervolume_table(rows))
    if args.robustness:
        print(robust or f"no robustness variants of {args.experiment!r} in this store")
        print(robustness_line(rows, variants))
    if failed:
        print(f"{len(failed)} failed runs: " + ", ".join(failed))
    print(f"report: {report}")
    return 0


def variant_rows(tracking_uri: str, experiment: str) -> list[tuple[str, list[dict]]]:
    """(variant label, runs-table rows) of each robustness variant of `experiment` (raysweep.robustness names them)."""
    from mlflow.tracking import MlflowClient

    names = sorted(e.name for e in MlflowClient(tracking_uri).search_experiments() if e.name.startswith(experiment + "."))
    out = []
    for name in names:
        key, _, value = name.removeprefix(experiment + ".").partition("-")
        out.append((f"{key}={value}", rows_from_mlflow(tracking_uri, name)))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
