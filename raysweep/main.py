"""Run a study: `python -m raysweep.main [--config FILE] [--set key=value ...] [--dry-run]`.

With no arguments it runs search_spaces/default.yaml on a local Ray instance, the built-in
offline corpora and a local MLflow store. Running the same command again resumes: finished
nodes are skipped. On a cluster: `ray job submit --working-dir . -- python -m raysweep.main`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from raysweep import packages
from raysweep.config import Study, StudyConfigError, load_study

# Train V2 polls worker health every 2 s by default, which adds ~5 s to the end of every fit.
_RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m raysweep.main", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=None, help="study YAML (default: search_spaces/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set pretrain.mix_fraction=[0,0.5,1] (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved tree and its cost, then exit")
    p.add_argument("--sync-mlflow", action="store_true",
                   help="train nothing: write to MLflow whatever it is missing of the finished nodes (after a tracking "
                        "outage, or into a new tracking_uri); idempotent")
    return p.parse_args(argv)


def _corpus(c) -> str:
    return {"synthetic": f"{c.name} (built-in)", "hub": f"{c.dataset}" + (f"/{c.subset}" if c.subset else "") + " (hub)"}.get(c.source, f"{c.path} (local)")


def describe_tree(study: Study) -> str:
    """The tree's size and cost, from the config alone (no data, no Ray)."""
    from raysweep.models import estimate_parameters

    p1, p2, p3 = study.pretrain, study.posttrain, study.finetune
    if study.model.kind == "linear":
        return _describe_linear(study)
    n_arms = len(p1.mix_fraction)
    optuna = p2.search == "optuna"
    n_post = n_arms * (p2.trials if optuna else len(p2.lr) * len(p2.dropout) * len(p2.replay) * len(p2.tuning) * len(p2.batch_sizes))
    n_ft = n_post * len(p3.lr)
    vocab = 49_152 if study.tokenizer.pretrained else study.tokenizer.vocab_size  # SmolLM2's, for a pretrained one
    n_params = estimate_parameters(study.model.preset, vocab)
    t1 = sum(p1.tokens + lam * p1.post_tokens for lam in p1.mix_fraction)
    per_arm = n_post // n_arms
    if p1.mode == "compute_matched":  # stage 2 makes one pass over the (1−λ)·|D_post| stage 1 left
        t2 = per_arm * sum(min(p2.tokens, (1 - lam) * p1.post_tokens) for lam in p1.mix_fraction)
    else:
        t2 = n_post * p2.tokens
    t3 = n_ft * p3.tokens
    flops = 6 * n_params * (t1 + t2 + t3)
    lines = [
        f"study {study.name!r} (hash {study.content_hash()}), model {study.model.preset} ≈{n_params / 1e6:.2f}M params, seq {study.model.seq_len}",
        f"  corpora  pre {_corpus(study.corpora.pre)} · post {_corpus(study.corpora.post)} · ft {_corpus(study.corpora.ft)}",
        f"  level 1  pretrain   {n_arms:>4} runs  λ ∈ {p1.mix_fraction} ({p1.mode}); {p1.tokens:,} D_pre tokens + λ·{p1.post_tokens:,} D_post each",
        f"  level 2  posttrain  {n_post:>4} runs  "
        + (f"Optuna: {p2.trials} per λ, {p2.optuna_batch} at a time, lr log-uniform in [{min(p2.lr):g}, {max(p2.lr):g}], dropout ∈ {p2.dropout}, "
           f"replay ∈ {p2.replay}, tuning ∈ {p2.tuning}, batch ∈ {p2.batch_sizes}, told the stage-3 children's (L_ret, L_ft); " if optuna else
           f"lr ∈ {p2.lr} × dropout ∈ {p2.dropout} × replay ∈ {p2.replay} × tuning ∈ {p2.tuning} × batch ∈ {p2.batch_sizes} per λ; ")
        + (f"one pass over (1−λ)·{p1.post_tokens:,} D_post tokens" if p1.mode == "compute_matched" else f"≤ {p2.tokens:,} tokens each (early stopping)"),
        f"  level 3  finetune   {n_ft:>4} runs  lr ∈ {p3.lr} per stage-2 run; {p3.tokens:,} tokens each",
        f"  tokens at most: {t1 + t2 + t3:,.0f} ({t1:,.0f} / {t2:,.0f} / {t3:,.0f}); compute ≈ 6·N·D = {flops:.3g} FLOPs"
        f" ≈ {flops / (989e12 * 0.4) / 3600:.3g} H100-hours at 40% MFU (bf16 dense peak 989 TFLOP/s)",
        f"  output: {study.out}",
    ]
    return "\n".join(lines)


def _describe_linear(study: Study) -> str:
    from raysweep.theory_tree import mixture_weight

    th, p1, p2, p3 = study.theory, study.pretrain, study.posttrain, study.finetune
    f = th.features
    d = f.invariant + f.inconsistent + f.specialised + f.ft_only
    n_arms, n_post = len(p1.mix_fraction), len(p1.mix_fraction) * len(p2.lr)
    alphas = ", ".join(f"{mixture_weight(study, lam):.3f}" for lam in p1.mix_fraction)
    return "\n".join([
        f"study {study.name!r} (hash {study.content_hash()}), two-layer linear network {d}→{th.width}→{d} (raysweep/theory.py)",
        f"  features invariant {f.invariant} · inconsistent {f.inconsistent} · specialised {f.specialised} · ft_only {f.ft_only}; co-occurrence ρ={th.co_occurrence:g}",
        f"  level 1  pretrain   {n_arms:>4} runs  λ ∈ {p1.mix_fraction} → stage-1 mixture weight α ∈ [{alphas}]; {th.steps.pretrain:,} GD steps, lr {p1.lr:g}",
        f"  level 2  posttrain  {n_post:>4} runs  lr ∈ {p2.lr} per λ; ≤ {th.steps.posttrain:,} GD steps (until L_post < {th.converged:g})",
        f"  level 3  finetune   {n_post * len(p3.lr):>4} runs  lr ∈ {p3.lr} per stage-2 run; {th.steps.finetune:,} GD steps each",
        f"  runs in the driver in seconds (no Ray); output: {study.out}",
    ])


def _init_ray(study: Study) -> None:
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        return
    from raysweep.tracking import http_env

    env = {**_RAY_ENV, **http_env(), "PYTHONUNBUFFERED": "1"}
    os.environ.update(env)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env})
    else:
        # Always a private local instance (never silently joining a `ray start` cluster that
        # happens to run here; set RAY_ADDRESS for that), dashboard off.
        ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": env}, configure_logging=True, logging_level="WARNING")


def _write_data_summary(data, path: Path) -> Path:
    """What every stream holds (tokens per source, blocks, waste) and what was read, for MLflow and audits."""
    streams = {f"pretrain λ={lam:g}": s.stats for lam, s in data.pretrain.items()}
    streams.update({f"posttrain λ={lam:g} replay={r:g}": s.stats for (lam, r), s in data.posttrain.items()})
    streams["finetune"] = data.finetune.stats
    streams.update({f"heldout {r}": s.stats for r, s in data.heldout.items()})
    path.write_text(json.dumps({"tokenizer": data.tokenizer_id, "corpora": data.corpora, "streams": streams}, indent=1))
    return path


def check_writable(study: Study) -> None:
    """Fail before any compute if the output or node folder cannot be written (a read-only mount, a
    path through a file, a full disk), naming the key to change."""
    from raysweep import storage

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
        raise StudyConfigError("storage", problems)


def run(study: Study, train: bool = True) -> dict:
    """Prepare data, train the tree, write the report; returns the summary. `train=False`
    (--sync-mlflow) trains nothing and brings MLflow up to date from the node store."""
    from analysis.report import comparison_table, frontier_tables, hypervolume_table, lambda_table, write_csvs, write_report
    from raysweep.prepare import prepare
    from raysweep.tracking import Tracker, default_tracking_uri, http_env
    from raysweep.tree import collect, run_tree

    t0 = time.perf_counter()
    packages.check(study)
    check_writable(study)
    out = study.out
    os.environ.update(http_env())
    uri = study.tracking_uri or default_tracking_uri(out)
    tracker = Tracker(uri, study.name, artifact_root=out / "mlartifacts")
    tracker.start()
    study_run = tracker.guard("creating the study's MLflow run", tracker.study_run, study.content_hash(), study.name, study.model_dump(mode="json"))
    if study_run is None:
        tracker.online = False  # trials skip MLflow; everything is synced from the node store later

    if study.model.kind == "linear":
        from raysweep import theory_tree

        t_ray = t_data = time.perf_counter()
        tree = theory_tree.run_tree(study, tracker, study_run)
        rows = theory_tree.collect(study)
        summary = theory_tree.summary(study)
        (out / "theory.json").write_text(json.dumps(summary, indent=1))
        theory_text = theory_tree.summary_table(summary)
        (out / "theory.txt").write_text(theory_text)
        from analysis.figures import plot_theory

        plot_theory(summary).write_html(out / "theory.html", include_plotlyjs=True)
        for name in ("theory.json", "theory.txt", "theory.html"):
            tracker.guard("logging an artifact", tracker.log_artifact, study_run, out / name)
    else:
        _init_ray(study)
        t_ray = time.perf_counter()
        data = prepare(study)
        t_data = time.perf_counter()
        tracker.guard("logging an artifact", tracker.log_artifact, study_run, _write_data_summary(data, out / "data.json"))
        tree = run_tree(study, data, tracker, study_run, train=train)
        if "search" in tree:
            tracker.guard("logging an artifact", tracker.log_artifact, study_run, out / "search.json")
        rows = collect(study, data, tree["subtrees"])

    diverged = list(dict.fromkeys(tree.get("diverged", [])))  # a search's rounds report an arm once each
    report = write_report(rows, out / "report.html", title=f"raysweep study {study.name!r}", failures=tree["failures"] + diverged)
    tracker.guard("logging an artifact", tracker.log_artifact, study_run, report)
    tables = frontier_tables(rows) + lambda_table(rows) + comparison_table(rows) + hypervolume_table(rows)
    (out / "frontiers.txt").write_text(tables)
    tracker.guard("logging an artifact", tracker.log_artifact, study_run, out / "frontiers.txt")
    for path in write_csvs(rows, out / "tables"):
        tracker.guard("logging an artifact", tracker.log_artifact, study_run, path, "tables")
    tracker.guard("closing the study's MLflow run", tracker.finish, study_run,
             {"finetune_runs": len(rows), "failures": len(tree["failures"]), "diverged": len(diverged)}, failed=bool(tree["failures"]))

    total = time.perf_counter() - t0
    print("\n" + "=" * 78)
    print(f"raysweep study {study.name!r}: {len(rows)} fine-tuned checkpoints in {total:.0f}s "
          f"(Ray start {t_ray - t0:.0f}s, data {t_data - t_ray:.0f}s, tree {tree['seconds']:.0f}s)")
    print(f"trained now: {tree['trained']}; the rest were already finished")
    print(tables)
    if study.model.kind == "linear":
        print(theory_text)
    if tree["failures"]:
        print(f"{len(tree['failures'])} FAILED:")
        for f in tree["failures"]:
            print(f"  - {f}")
    if diverged:
        print(f"{len(diverged)} diverged (a non-finite loss is an outcome of the config: recorded, not retried):")
        for d in diverged:
            print(f"  - {d}")
    print(f"report:      {report}")
    print(f"MLflow:      {uri}")
    if tracker.online:
        print(f"  browse:    mlflow ui --host 127.0.0.1 --backend-store-uri {uri}")
    else:
        print("  UNREACHABLE during this run; every result is in the node store. Once it is back:")
        print("             the same command with --sync-mlflow (trains nothing, idempotent)")
    print("=" * 78)
    return {"rows": rows, "failures": tree["failures"], "diverged": diverged, "trained": tree["trained"], "report": report,
            "tracking_uri": uri, "tracking_online": tracker.online, "seconds": total, "tree_seconds": tree["seconds"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        study = load_study(args.config, args.overrides)
    except StudyConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe_tree(study))
        for line in packages.missing(study):  # a dry run may plan for another machine: said, not fatal
            print(f"  not installed here: {line}")
        return 0
    print(describe_tree(study), flush=True)
    try:
        summary = run(study, train=not args.sync_mlflow)
    except StudyConfigError as e:  # data budgets are checked once the corpora are tokenized
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
