"""One study, end to end: checks, MLflow, data, the tree, the report and the summary.

    run_study: packages and storage checked -> the study's MLflow run -> Ray up -> data prepared
               (raysweep.data) -> tree trained (raysweep.sweep) -> rows -> report, tables, CSVs
               (analysis) -> the summary printed and returned

The CLI (raysweep.main) calls `run_study`; so do the tests and benchmarks that run whole studies.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from raysweep import packages, signals
from raysweep.config import Study, StudyInputError
from raysweep.ray_instance import init_ray, stop_own_ray
from raysweep.store import storage


def write_data_summary(data, path: Path) -> Path:
    """What every stream holds (tokens per source, blocks, waste) and what was read, for MLflow and audits."""
    streams = {f"pretrain λ={mix:g}": s.stats for mix, s in data.pretrain.items()}
    streams.update({f"posttrain λ={mix:g} replay={r:g}": s.stats for (mix, r), s in data.posttrain.items()})
    streams["finetune"] = data.finetune.stats
    streams.update({f"heldout {r}": s.stats for r, s in data.heldout.items()})
    path.write_text(json.dumps({"tokenizer": data.tokenizer_id, "corpora": data.corpora, "streams": streams}, indent=1))
    return path


def check_writable(study: Study) -> None:
    """Fail before any compute if the output or node folder cannot be written (a read-only mount, a
    path through a file, a full disk), naming the key to change."""
    from raysweep.store import storage

    problems = []
    places = [("output_dir", study.out)]
    if not storage.is_remote(study.checkpoints):
        places.append(("checkpoint_dir", Path(study.checkpoints)))
    for key, folder in places:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".raysweep-write-test-{os.getpid()}"
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as e:
            problems.append(f"{key}: cannot write to {folder} ({e.strerror or e}); choose a writable folder with --set {key}=PATH")
    if problems:
        raise StudyInputError("storage", problems)


def tree_description(study: Study) -> str:
    """The study run's description in MLflow: its tree, level by level, with the run counts."""
    n = study.run_counts()
    per_arm, per_post = n["posttrain"] // max(1, n["pretrain"]), n["finetune"] // max(1, n["posttrain"])
    return (
        f"raysweep study '{study.name}': {n['pretrain']} pretraining arms (λ ∈ {study.pretrain.mix_fraction}) → "
        f"{per_arm} stage-2 runs per arm ({n['posttrain']}) → {per_post} fine-tuning runs per stage-2 run ({n['finetune']}); "
        f"{sum(n.values())} runs nested under this one by stage."
    )


def make_study_run(study: Study, tracker) -> str | None:
    """The study's parent MLflow run, found by the study's hash or created (None where MLflow fails)."""
    return tracker.guard(
        "creating the study's MLflow run",
        tracker.study_run,
        study.content_hash(),
        study.name,
        study.model_dump(mode="json"),
        tree_description(study),
    )


def open_tracking(study: Study):
    """The study's tracker and its parent run (None, and the tracker offline, when MLflow fails now)."""
    from raysweep.tracking.store import Tracker, default_tracking_uri, http_env

    os.environ.update(http_env())
    uri = study.tracking_uri or default_tracking_uri(study.out)
    tracker = Tracker(uri, study.name, artifact_root=study.out / "mlartifacts")
    tracker.start()
    study_run = make_study_run(study, tracker)
    if study_run is None:
        tracker.online = False  # trials skip MLflow; everything is synced from the node store later
    return tracker, study_run


def settle_tracking(study: Study, tracker, study_run: str | None, resync) -> tuple[str | None, list[str]]:
    """After the tree: a store that lost this study during the run (its SQLite file deleted, its
    tables dropped) is rebuilt and `resync(study_run)` writes every run again from the node store;
    any other outage (`tracker.outages`: the driver's calls that failed) is said with the command that repairs
    it. Returns the study's run (a new one after a rebuild) and the summary's lines about MLflow."""
    outages = tracker.outages
    repair = "the same command with --sync-mlflow (trains nothing, idempotent)"
    lost = tracker.lost(study_run)
    if lost and resync is not None:
        print(f"[mlflow] the store lost this study during the run ({lost}); rebuilding it from the node store", flush=True)
        mark = len(outages)
        tracker.guard("rebuilding the MLflow store", tracker.rebuild)
        study_run = make_study_run(study, tracker)
        if study_run is not None:
            resync(study_run)
        still = tracker.lost(study_run) if study_run is not None else "its study run could not be made"
        if not still and len(outages) == mark:
            return study_run, [
                f"  REBUILT: the store lost this study during the run ({lost}); every run was written again from the node store"
            ]
        lost = f"{lost}; not rebuilt: {still or outages[mark]}"
    if lost:
        return study_run, [f"  LOST during this run ({lost}); every result is in the node store: {repair}"]
    failed = len(outages)
    if not failed:
        return study_run, []
    if resync is not None and study_run is not None:
        resync(study_run)  # cheap where MLflow is up to date: one read per run
    said = f"  MLflow failed during this run ({failed} call{'s' if failed != 1 else ''} of the driver; first: {outages[0]})"
    if len(outages) == failed and resync is not None:
        return study_run, [f"{said}; the end-of-study sync wrote everything they missed"]
    return study_run, [f"{said}; what they missed is in the node store: {repair} once the store is reachable"]


def train_language_models(study: Study, tracker, study_run, train: bool, trainer=None):
    """Ray, the data and the tree of `model.kind: lm`; returns (tree, leaf records, timings).
    `train=False` (--sync-mlflow): no Ray, the cached data, nothing trained."""
    from raysweep.data.prepare import prepare, prepare_cached
    from raysweep.robustness import run_variants
    from raysweep.sweep.slices import slices_of_tree
    from raysweep.sweep.tree import collect, train_tree
    from raysweep.train.trainer import TrainerConfig

    t0 = time.perf_counter()
    if train:
        init_ray()
    trainer = (trainer or TrainerConfig()) if train else None  # None: nothing trained
    t_ray = time.perf_counter()
    data = prepare(study) if train else prepare_cached(study)
    t_data = time.perf_counter()
    tracker.guard("logging an artifact", tracker.log_artifact, study_run, write_data_summary(data, study.out / "data.json"))
    tree = train_tree(study, data, tracker, study_run, trainer)
    if tree.halving is not None:
        tracker.guard("logging an artifact", tracker.log_artifact, study_run, study.own_file("halving.json"))
    if tree.search is not None:
        tracker.guard("logging an artifact", tracker.log_artifact, study_run, study.own_file("search.json"))
        if study_run is not None:  # the proposals depend on the sampler's code too: say which made them
            import optuna

            from raysweep.sweep.search import tpe_options
            from raysweep.tags import SAMPLER

            said = f"optuna {optuna.__version__}, TPESampler {json.dumps(tpe_options(study.posttrain), sort_keys=True)}"
            tracker.guard("tagging the study run", lambda: tracker.client.set_tag(study_run, SAMPLER, said))
    slices = slices_of_tree(study, data, tree, tracker, study_run)  # scored from the stored weights
    if study.robustness:  # each variant's tree, sharing every node its change leaves alone (--sync-mlflow: synced only)
        tree.variants = run_variants(study, data, tree, trainer, open_tracking, prepare if train else prepare_cached)
    return tree, collect(study, data, tree.subtrees, slices), {"ray": t_ray - t0 if train else None, "data": t_data - t_ray}


def train_linear(study: Study, tracker, study_run) -> tuple:
    """The linear theory backend's tree (in the driver, no Ray), its summary files and table."""
    from analysis.figures import plot_theory
    from raysweep.sweep import linear

    tree = linear.train_tree(study, tracker, study_run)
    summary = linear.summary(study)
    out = study.out
    (out / "theory.json").write_text(json.dumps(summary, indent=1))
    text = linear.summary_table(summary)
    (out / "theory.txt").write_text(text)
    plot_theory(summary).write_html(out / "theory.html", include_plotlyjs=True)
    for name in ("theory.json", "theory.txt", "theory.html"):
        tracker.guard("logging an artifact", tracker.log_artifact, study_run, out / name)
    return tree, linear.collect(study), text


def write_outputs(study: Study, rows: list[dict], tree, tracker, study_run) -> tuple[Path, str]:
    """The report, the frontier tables and the CSVs, each also an artifact of the study's run."""
    from analysis.halving import halving_table
    from analysis.report import comparison_table, frontier_tables, hypervolume_table, lambda_table, write_csvs, write_report, write_whole
    from analysis.robustness import robustness_table

    out = study.out
    log = tree.halving or []
    failures = tree.failures + tree.diverged
    robust = robustness_table(rows, [(v.label, v.rows) for v in tree.variants])
    report = write_report(rows, out / "report.html", f"raysweep study {study.name!r}", failures, halving=log, robustness=robust)
    tracker.guard("logging an artifact", tracker.log_artifact, study_run, report)
    tables = (
        frontier_tables(rows)
        + lambda_table(rows)
        + comparison_table(rows)
        + hypervolume_table(rows)
        + ("\n" + halving_table(log) if log else "")
        + ("\n" + robust if robust else "")
    )
    write_whole(out / "frontiers.txt", tables, "writing the frontier tables")
    tracker.guard("logging an artifact", tracker.log_artifact, study_run, out / "frontiers.txt")
    for path in write_csvs(rows, out / "tables"):
        tracker.guard("logging an artifact", tracker.log_artifact, study_run, path, "tables")
    return report, tables


def print_summary(study: Study, rows: list[dict], tree, tables: str, report: Path, tracker, timings: dict) -> None:
    from analysis.robustness import robustness_line
    from analysis.slices import slices_summary
    from raysweep.tracking.store import UI_ENV, UI_PORT, runs_url

    ray_said = "no Ray" if timings["ray"] is None else f"Ray start {timings['ray']:.0f}s"  # --sync-mlflow starts none
    print("\n" + "=" * 78)
    print(
        f"raysweep study {study.name!r}: {len(rows)} fine-tuned checkpoints in {timings['total']:.0f}s "
        f"({ray_said}, data {timings['data']:.0f}s, tree {tree.seconds:.0f}s)"
    )
    elsewhere = getattr(tree, "finished_elsewhere", 0)
    also = f"; {elsewhere} finished meanwhile by another driver sharing the node store" if elsewhere else ""
    print(f"trained now: {tree.trained}; the rest were already finished{also}")
    print(tables)
    for line in filter(None, [slices_summary(rows), timings.get("theory")]):
        print(line)
    if tree.failures:
        print(f"{len(tree.failures)} FAILED:")
        for f in tree.failures:
            print(f"  - {f}")
    if tree.diverged:
        print(f"{len(tree.diverged)} diverged (a non-finite loss is an outcome of the config: recorded, not retried):")
        for d in tree.diverged:
            print(f"  - {d}")
    print(f"report:      {report}")
    print(f"MLflow:      {tracker.tracking_uri}")
    for line in timings.get("mlflow", []):
        print(line)
    if tracker.online and tracker.tracking_uri.startswith(("http://", "https://")):
        print(f"  browse:    {runs_url(tracker.tracking_uri, tracker.experiment_id)} (the study's runs in the server's UI)")
    elif tracker.online:
        # one worker: with several, workers kept dying under load on a 2-core laptop (2026-12-01)
        env = " ".join(f"{k}={v}" for k, v in UI_ENV.items())
        print(f"  browse:    {env} mlflow ui --host 127.0.0.1 --port {UI_PORT} --workers 1 --backend-store-uri {tracker.tracking_uri}")
        print(f"  then open: {runs_url(f'http://127.0.0.1:{UI_PORT}', tracker.experiment_id)} (the study's runs)")
    else:
        print("  UNREACHABLE during this run; every result is in the node store. Once it is back:")
        print("             the same command with --sync-mlflow (trains nothing, idempotent)")
    if said := robustness_line(rows, [(v.label, v.rows) for v in tree.variants]):
        print(said)  # the study's last word: how far its verdict holds
    print("=" * 78)


def report_interrupted(study: Study, tracker, study_run: str | None, stop: KeyboardInterrupt, seconds: float) -> dict:
    """After Ctrl-C or SIGTERM: stop the slots, keep what finished (synced to MLflow), mark the
    runs that were training KILLED, and say how to resume. Nothing is counted as failed."""
    from raysweep.spec import all_nodes
    from raysweep.store.nodes import node_settled
    from raysweep.sweep.sync import sync_tree

    stop_own_ray()  # the slots stop now, so nothing trains or logs behind this summary
    arms, subtrees = getattr(stop, "arms", None), getattr(stop, "subtrees", None)
    if getattr(stop, "clear_leases", None) is not None:
        stop.clear_leases()  # the stopped workers never released theirs
    settled: set[str] = set()
    if arms is not None:
        nodes = all_nodes(arms, subtrees)
        settled = {m.spec.node_key for m in nodes if node_settled(m.spec.node_dir)}
        sync_tree(tracker, study_run, arms, subtrees)
        kept = f"{len(settled)} of {len(nodes)} runs of the tree are finished and kept"
    else:
        kept = "before the tree started training (prepared data is kept)"
    killed = close_stopped(tracker, study_run, settled, "KILLED")
    name = signals.received(stop)
    boxed(
        f"raysweep study {study.name!r}: interrupted by {name} after {seconds:.0f}s; {kept}.",
        "  run the same command to resume: finished runs are not trained again, and a run stopped",
        "  mid-way continues from its last progress checkpoint",
        f"MLflow:      {tracker.tracking_uri}"
        + (f" ({killed} unfinished run{'s' if killed != 1 else ''} marked KILLED)" if killed else ""),
    )
    return stopped_summary(tracker, seconds, interrupted=name, finished=len(settled))


def boxed(*lines: str) -> None:
    """The end-of-study lines, between two rules."""
    print("\n" + "=" * 78)
    for line in lines:
        print(line)
    print("=" * 78)


def close_stopped(tracker, study_run: str | None, settled: set, status: str, tags: dict | None = None) -> int:
    """What a stopped study leaves open in MLflow, closed: its unfinished runs KILLED (the nodes in
    `settled` are not), the study's own run `status` (with `tags`). Returns how many runs were killed."""
    killed = tracker.guard("closing the unfinished runs", tracker.kill_running, settled) or 0
    if study_run is not None:
        tracker.guard("closing the study's MLflow run", tracker.finish, study_run, {}, status=status, tags=tags)
    return killed


def close_failed(study: Study, tracker, study_run: str | None, error: BaseException) -> None:
    """An error on the way (a corpus without text found by the tokenizer, a budget beyond the corpus,
    Ray failing to start, a bug): the study's MLflow run is FAILED with the error as its
    `raysweep.failure` tag and its workers' open runs KILLED, never left RUNNING; the caller
    re-raises, so the error is said as before. Finished nodes are kept in the node store."""
    from raysweep.tags import FAILURE, OUTCOME

    stop_own_ray()  # nothing trains or logs behind the error
    message = f"{type(error).__name__}: {error}" if not isinstance(error, StudyInputError) else str(error)
    close_stopped(tracker, study_run, set(), "FAILED", {OUTCOME: "failed", FAILURE: message[:4000]})


def stopped_summary(tracker, seconds: float, **what) -> dict:
    """What run_study returns for a study stopped before its report (interrupted, or a full disk)."""
    summary = {"rows": [], "failures": [], "diverged": [], "interrupted": None, **what}
    return {**summary, "tracking_uri": tracker.tracking_uri, "tracking_online": tracker.online, "seconds": seconds}


def report_disk_full(study: Study, tracker, study_run: str | None, error: OSError, seconds: float) -> dict:
    """A disk filled up under the driver (the data cache, the report, the tables): one line that
    names the path, the bytes free and the bytes needed; finished nodes are kept (they were written
    whole or not at all), the study's MLflow run is FAILED, and the summary says how to go on."""
    stop_own_ray()
    if not isinstance(error, storage.DiskFull):
        error = storage.disk_full(getattr(error, "filename", None) or study.out, None, "writing the study's outputs")
    killed = close_stopped(tracker, study_run, set(), "FAILED")
    boxed(
        f"raysweep study {study.name!r}: stopped after {seconds:.0f}s: {error}",
        "  finished runs are kept (a node is written whole or not at all); once there is space, the same",
        "  command goes on from there and writes the report",
        f"MLflow:      {tracker.tracking_uri} (the study's run marked FAILED" + (f", {killed} unfinished runs KILLED)" if killed else ")"),
    )
    return stopped_summary(tracker, seconds, failures=[str(error)], disk_full=str(error))


def finish_study_run(tracker, study_run: str | None, rows: list[dict], tree) -> None:
    """The study's MLflow run closed with its summary: runs, failures, and how far its verdict holds."""
    from analysis.robustness import robustness_metrics
    from analysis.slices import slice_agreement

    variants = [(v.label, v.rows) for v in getattr(tree, "variants", [])]
    summary = {"finetune_runs": len(rows), "failures": len(tree.failures), "diverged": len(tree.diverged)}
    summary |= slice_agreement(rows) | robustness_metrics(rows, variants)
    tracker.guard("closing the study's MLflow run", tracker.finish_study, study_run, summary, failed=bool(tree.failures))


def run_study(study: Study, train: bool = True, trainer=None) -> dict:
    """Prepare data, train the tree, write the report; returns the summary. `train=False`
    (--sync-mlflow) trains nothing and brings MLflow up to date from the node store. `trainer`:
    what each worker builds its trainer from (default: the training loop, raysweep.train.trainer.TrainerConfig,
    whose loop carries the fault drills the environment asks for; the cluster simulation hands in
    its stand-in, bench/standin.py)."""
    from analysis.runs import make_row

    t0 = time.perf_counter()
    if study.model.kind == "lm":
        # torch before pyarrow's S3 client: loaded after it (an s3:// checkpoint_dir, data already
        # prepared), torch's oneMKL failed to load ("Cannot load libtorch_cpu.so") and the driver exited
        import torch  # noqa: F401
    packages.check(study)
    check_writable(study)
    if study.model.kind == "lm" and train:  # --sync-mlflow reads the data cache, not the corpora
        from raysweep.data.prepare import check_corpora

        check_corpora(study)  # local files read far enough to know they are text, before Ray starts
    tracker, study_run = open_tracking(study)
    try:
        if study.model.kind == "linear":
            tree, records, theory_text = train_linear(study, tracker, study_run)
            timings = {"ray": 0.0, "data": 0.0, "theory": theory_text}
            resync = None
        else:
            from raysweep.sweep.sync import sync_all

            tree, records, timings = train_language_models(study, tracker, study_run, train, trainer)
            resync = lambda run: sync_all(tracker, run, tree)  # noqa: E731
        study_run, timings["mlflow"] = settle_tracking(study, tracker, study_run, resync)
        rows = [make_row(**r) for r in records]
        report, tables = write_outputs(study, rows, tree, tracker, study_run)
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP (raysweep.signals)
        return report_interrupted(study, tracker, study_run, stop, time.perf_counter() - t0)
    except BaseException as e:  # noqa: BLE001 -- a full disk is said; anything else closed in MLflow, then raised as it came
        if isinstance(e, OSError) and storage.is_disk_full(e):
            return report_disk_full(study, tracker, study_run, e, time.perf_counter() - t0)
        close_failed(study, tracker, study_run, e)
        raise
    finish_study_run(tracker, study_run, rows, tree)
    timings["total"] = time.perf_counter() - t0
    print_summary(study, rows, tree, tables, report, tracker, timings)
    return {
        "interrupted": None,
        "rows": rows,
        "failures": tree.failures,
        "diverged": tree.diverged,
        "trained": tree.trained,
        "report": report,
        "tracking_uri": tracker.tracking_uri,
        "tracking_online": tracker.online,
        "seconds": timings["total"],
        "tree_seconds": tree.seconds,
    }
