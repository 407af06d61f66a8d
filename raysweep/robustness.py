"""The `robustness` section: the study's comparison run again under variants, each one convention
the paper leaves unstated changed (raysweep.config.conventions), after the study's own tree.

A variant is the same study under another name (`<name>.<convention>-<value>`: its own MLflow
experiment, so the study's own runs table stays the study's) with the same output folder, data
cache and node store. Its tree is planned and trained as any study's: every node whose key the
change leaves alone is found finished and shared (a stage-2-only change shares stage 1; a packing
change shares nothing), and its final checkpoints are scored on the held-out slices too. The
verdicts are compared in analysis.robustness.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from raysweep.config import Study, StudyInputError
from raysweep.config.conventions import check_variants, variant_label
from raysweep.store.storage import is_remote

# what a convention changes: the data (streams made again) or only how runs train
DATA_CONVENTIONS = {"packing", "stage1_mixing", "heldout_carving"}


@dataclass
class VariantResult:
    label: str  # schedule=wsd
    study: Study
    rows: list[dict]
    tree: object  # raysweep.sweep.tree.TreeResult


def variant_study(study: Study, change: dict) -> Study:
    """The study under one changed convention, tracked apart, sharing the study's folders."""
    [conventions] = check_variants(study.conventions, [change])
    slug = variant_label(change).replace("=", "-")
    where = study.checkpoints if is_remote(str(study.checkpoints)) else str(study.checkpoints)
    variant = study.model_copy(
        update={
            "name": f"{study.name}.{slug}"[:100],
            "conventions": conventions,
            "robustness": [],
            "output_dir": str(study.out).replace("{", "{{").replace("}", "}}"),
            "checkpoint_dir": str(where).replace("{", "{{").replace("}", "}}"),
        }
    )
    variant._variant = slug  # its search's log goes beside, not over, the study's (Study.own_file)
    return variant


def run_variants(study: Study, data, base_tree, trainer, open_tracking, prepare) -> list[VariantResult]:
    """Each variant's tree trained (what is not shared) and scored; its rows. `open_tracking` and
    `prepare` are the study's own (raysweep.study, raysweep.data.prepare); with no `trainer`
    (--sync-mlflow) each variant's experiment is rebuilt from the node store, nothing trained."""
    from analysis.runs import make_row
    from raysweep.sweep.slices import slices_of_tree
    from raysweep.sweep.tree import Interrupted, collect, train_tree

    out = []
    for i, change in enumerate(study.robustness):
        v, label = variant_study(study, change), variant_label(change)
        t0 = time.perf_counter()
        print(
            f"[robustness] variant {i + 1}/{len(study.robustness)}: conventions.{label}; the study's comparison again "
            f"(MLflow experiment {v.name!r}; nodes the change leaves alone are shared)",
            flush=True,
        )
        try:
            vdata = prepare(v) if set(change) & DATA_CONVENTIONS else data
        except StudyInputError:
            if trainer is not None:
                raise
            # --sync-mlflow reads the data cache, and a variant that never ran made none of its own
            print(f"[robustness] variant {label}: not synced, it has not run yet (its data is not in the cache)", flush=True)
            continue
        tracker, run = open_tracking(v)
        try:
            tree = train_tree(v, vdata, tracker, run, trainer)
            scored = slices_of_tree(v, vdata, tree, tracker, run)
        except KeyboardInterrupt as stop:
            settled = _settled(stop)
            tracker.guard("closing the variant's unfinished runs", tracker.kill_running, settled)
            if run is not None:
                tracker.guard("closing the variant's MLflow run", tracker.finish, run, {}, status="KILLED")
            # the study's own tree is whole: the summary counts it, and the next run resumes the variant
            raise Interrupted(base_tree.arms, base_tree.subtrees, *stop.args, clear_leases=getattr(stop, "clear_leases", None)) from None
        rows = [make_row(**r) for r in collect(v, vdata, tree.subtrees, scored)]
        failed = [f"robustness {label}: {f}" for f in tree.failures]
        if run is not None:
            summary = {"finetune_runs": len(rows), "failures": len(failed), "diverged": len(tree.diverged)}
            tracker.guard("closing the variant's MLflow run", tracker.finish_study, run, summary, failed=bool(failed))
        print(
            f"[robustness] variant {label}: {len(rows)} fine-tuned checkpoints, trained now {tree.trained} "
            f"in {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        base_tree.failures += failed
        out.append(VariantResult(label, v, rows, tree))
    return out


def _settled(stop) -> set[str]:
    """Keys of the stopped tree's nodes that have nothing left to train (none before the tree began)."""
    from raysweep.spec import all_nodes
    from raysweep.store.nodes import node_settled

    if getattr(stop, "arms", None) is None:
        return set()
    return {m.spec.node_key for m in all_nodes(stop.arms, stop.subtrees) if node_settled(m.spec.node_dir)}
