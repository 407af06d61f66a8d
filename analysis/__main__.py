"""Rebuild a study's report from an MLflow store: `python -m analysis --tracking-uri URI --experiment NAME`;
with `--against OTHER` (and `--against-uri` if it lives elsewhere), the two experiments' frontiers side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.report import comparison_table, frontier_tables, hypervolume_table, lambda_table, side_by_side, write_report
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
    report = write_report(
        rows, args.out / "report.html", title=f"raysweep study {args.experiment!r}", failures=failed, plotlyjs=args.plotlyjs
    )
    print(frontier_tables(rows) + lambda_table(rows) + comparison_table(rows) + hypervolume_table(rows))
    if failed:
        print(f"{len(failed)} failed runs: " + ", ".join(failed))
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
