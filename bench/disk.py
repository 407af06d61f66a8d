"""The dry run's disk figures (raysweep.sweep.disk) against `du` of a real study: the node store at
the end and at its peak (sampled every 0.1 s while the study runs), MLflow, and the bytes a metric
point takes in metrics.json and in MLflow's SQLite store (the constants the estimate uses), MLflow with its write-ahead log folded in.
Goal (issue 20): each estimate within 20% of what was measured.

    python bench/disk.py [--config search_spaces/smoke.yaml] [--set key=value ...]

Runs the study from scratch in a temporary folder (nothing reused). Every preset shares the
arithmetic (parameters × bytes per parameter); a small model measures the fixed costs best.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

GOAL = 0.20
ROOT = Path(__file__).resolve().parents[1]


def du(folder: Path) -> int:
    """Bytes of the files under `folder` (sizes, as `du --apparent-size`; files vanish as we walk)."""
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


class PeakSampler(threading.Thread):
    """The largest `du(folder)` seen, every `every` seconds until stopped."""

    def __init__(self, folder: Path, every: float = 0.1):
        super().__init__(daemon=True)
        self.folder, self.every, self.peak, self.done = folder, every, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, du(self.folder))


def _vocab_of(weights: Path) -> int:
    """The vocabulary of a stored model, from its safetensors header (the embedding's rows)."""
    blob = weights.read_bytes()
    header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
    return header["model.embed_tokens.weight"]["shape"][0]


def mlflow_bytes(out: Path) -> tuple[int, int]:
    """(MLflow's SQLite store with its write-ahead log folded in, plus its artifacts; the log's size before)."""
    import sqlite3

    wal = out / "mlflow.db-wal"
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    with sqlite3.connect(out / "mlflow.db") as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return (out / "mlflow.db").stat().st_size + du(out / "mlartifacts"), wal_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "search_spaces" / "smoke.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    import ray
    import torch

    from raysweep.config import load_study
    from raysweep.study import run_study
    from raysweep.sweep.describe import PRETRAINED_VOCAB, disk_of
    from raysweep.sweep.disk import gb

    out = Path(tempfile.mkdtemp(prefix="raysweep-disk-"))
    study = load_study(args.config, [*args.overrides, f"output_dir={out}", "checkpoint_dir=null"])
    vocab = PRETRAINED_VOCAB if study.tokenizer.pretrained else study.tokenizer.vocab_size
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}, python {platform.python_version()}"
    )
    print(f"study: {study.name} ({args.config}), output {out}")
    store = out / "checkpoints"
    store.mkdir(parents=True, exist_ok=True)
    sampler = PeakSampler(store)
    sampler.start()
    t0 = time.perf_counter()
    summary = run_study(study)
    sampler.done.set()
    sampler.join()
    assert not summary["failures"], summary["failures"]
    # the dry run takes tokenizer.vocab_size, an upper bound: a BPE trained on a small corpus
    # learns fewer ids. The arithmetic is checked with the ids the tokenizer has.
    learned = _vocab_of(next(store.glob("*/*/model.safetensors")))
    estimate, said = disk_of(study, learned)
    ray.shutdown()

    points = sum(len(json.loads(f.read_text())) for f in store.glob("*/*/metrics.json"))
    json_bytes = sum(f.stat().st_size for f in store.glob("*/*/metrics.json"))
    mlflow, wal_bytes = mlflow_bytes(out)
    end = du(store)
    print(f"study ran in {time.perf_counter() - t0:.0f} s; {points:,} metric points; slots assumed: {estimate.slots} ({said})")
    print(f"vocabulary: the tokenizer has {learned:,} ids (the study asks at most {vocab:,}: the dry run's figures are upper bounds)")
    print(
        f"metrics.json: {json_bytes / max(points, 1):.0f} bytes a point; MLflow's write-ahead log at the end: {gb(wal_bytes)} (transient)"
    )
    worst = 0.0
    for what, got, want in (
        ("node store at the end", end, estimate.nodes_end),
        ("node store at its peak", sampler.peak, estimate.nodes_peak),
        ("MLflow", mlflow, estimate.mlflow),
    ):
        off = want / got - 1
        worst = max(worst, abs(off))
        print(f"{what:<24} measured {gb(got):>10}, estimated {gb(want):>10}: {off:+.1%}")
    print(f"disk estimate, largest error: {worst:.1%} (goal ≤ {GOAL:.0%}) -> {'met' if worst <= GOAL else 'MISSED'}")


if __name__ == "__main__":
    main()
