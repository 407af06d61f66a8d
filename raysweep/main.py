"""Run a study: `python -m raysweep.main [--config FILE] [--set key=value ...] [--dry-run]`.

With no arguments it runs search_spaces/default.yaml on a local Ray instance, the built-in
offline corpora and a local MLflow store. Running the same command again resumes: finished
nodes are skipped. On a cluster: `ray job submit --working-dir . -- python -m raysweep.main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Ray folds worker lines that look alike once their numbers are ignored into one "[repeated Nx across
# cluster]" line, so a run's progress lines (alike but for their numbers) were dropped or folded, and
# Ray added a line about its own settings. raysweep's own lines pass unfolded; Ray's messages are still
# folded. Read when Ray is imported, so set before anything imports it.
os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", r"^\[(pretrain|posttrain|finetune|tree|data|mlflow|checkpoint)\b")
# A worker's lines reach the terminal as the driver's own: raysweep's start with their run's label,
# so Ray's "(slot_trial pid=…)" prefix, in colour, says nothing a reader needs; and escape codes
# garble a log file or a CI log. Ray reads the first when imported, the second when it prints.
os.environ.setdefault("RAY_DISABLE_WORKER_LOG_PREFIX", "1")
if not sys.stdout.isatty():
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")

from raysweep import packages  # noqa: E402
from raysweep.config import StudyConfigError, load_study  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m raysweep.main", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=None, help="study YAML (default: search_spaces/default.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key, e.g. --set pretrain.mix_fraction=[0,0.5,1] (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved tree and its cost, then exit")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's, Tune's and MLflow's own messages here too (by default they go to <output_dir>/logs/libraries.log)",
    )
    p.add_argument(
        "--sync-mlflow",
        action="store_true",
        help="train nothing: write to MLflow whatever it is missing of the finished nodes (after a tracking "
        "outage, or into a new tracking_uri); idempotent",
    )
    return p.parse_args(argv)


def check_plan(study, source: str) -> None:
    """What the config alone cannot check, before anything runs: a halving budget no η can keep."""
    if study.posttrain.search == "halving":
        from raysweep.sweep.halving import eta_of

        try:
            eta_of(study)
        except ValueError as e:
            raise StudyConfigError(source, [str(e)]) from None


def main(argv: list[str] | None = None) -> int:
    from raysweep.sweep.describe import describe_tree

    args = parse_args(argv)
    try:
        study = load_study(args.config, args.overrides)
        check_plan(study, str(args.config or "the default study"))
    except StudyConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe_tree(study))
        for line in packages.missing(study):  # a dry run may plan for another machine: said, not fatal
            print(f"  not installed here: {line}")
        return 0
    print(describe_tree(study), flush=True)
    from raysweep.console import quiet_libraries
    from raysweep.ray_instance import RayStartError
    from raysweep.signals import stop_on_signals
    from raysweep.study import run_study

    log = None if args.verbose else quiet_libraries(study.out / "logs")
    stop_on_signals()
    try:
        summary = run_study(study, train=not args.sync_mlflow)
    except StudyConfigError as e:  # data budgets are checked once the corpora are tokenized
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RayStartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if log is not None and log.exists():
        print(f"libraries' own messages: {log} (--verbose shows them here)")
    said = ray_logs(study.out / "logs")
    if said:
        print(said)
    if summary.get("interrupted"):
        import signal

        return 128 + signal.Signals[summary["interrupted"]]  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM
    return 1 if summary["failures"] else 0


def ray_logs(logs: Path) -> str | None:
    """Where the local Ray instance kept its own logs (outside output_dir, where a user cleaning up
    a study would not look): linked as logs/ray-session beside the study's logs and said in one line."""
    from raysweep.ray_instance import session_dir

    where = session_dir()
    if where is None or not Path(where).is_dir():
        return None
    link = logs / "ray-session"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(where, target_is_directory=True)
    except OSError:
        return f"Ray's own logs: {where}"
    size = sum(f.stat().st_size for f in Path(where).rglob("*") if f.is_file() and not f.is_symlink())
    return f"Ray's own logs: {where} ({size / 1e6:.1f} MB; linked as {link}; delete it with the study)"


def cli(argv: list[str]) -> int:
    """The command line. A study that trains runs in a driver process of its own, which this process
    watches and passes stop signals to (raysweep.supervisor: a signal to this process's group, as
    `timeout`, Slurm and `docker stop` send it, must not reach the local Ray instance's head)."""
    from raysweep import supervisor

    if supervisor.inside():
        return main(argv)
    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help, or a malformed command line: argparse has said why
        return e.code if isinstance(e.code, int) else 2
    if args.dry_run or args.sync_mlflow:  # no Ray, nothing to stop cleanly
        return main(argv)
    return supervisor.supervise(argv)


if __name__ == "__main__":
    try:
        sys.exit(cli(sys.argv[1:]))
    except BrokenPipeError:  # `--dry-run | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
