"""Does the data stream keep up with training?

1. Tokens/s the stage-1 stream delivers into a Ray Train worker (the same per-rank rows, read from
   the stream's plan over memory-mapped token shards, and the same `raysweep.train.step.batches` the
   stage loop uses) vs the same reads in this process without Ray, in one run, printed as a ratio.
2. The data-wait share of step time in the default study: the seconds each run spent waiting
   for its next batch over its training-loop seconds, from every node.json of a finished study
   (run it first, or pass --run-study to run it here).

    python bench/data_stream.py [--study-dir runs/default] [--run-study] [--epochs 20]

Goal (issue 3): the stream never starves training, i.e. data wait < 5% of step time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    import ray
    import torch

    return (
        f"{platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
        f"python {platform.python_version()} · torch {torch.__version__} · ray {ray.__version__}"
    )


def plain_loop(plan_file: Path, batch: int, epochs: int) -> float:
    """tokens/s of reading the stream's blocks from its plan in this process and cutting torch batches."""
    import torch

    from raysweep.data.streams import StreamReader

    reader = StreamReader(plan_file)
    t0 = time.perf_counter()
    tokens = 0
    for _ in range(epochs):
        for i in range(0, reader.n_blocks - batch + 1, batch):
            x = torch.from_numpy(reader.blocks(np.arange(i, i + batch)))
            tokens += x.numel()
    return tokens / (time.perf_counter() - t0)


def _worker_loop(cfg: dict) -> dict:
    import ray.train

    from raysweep.train.step import batches

    t0 = time.perf_counter()  # from before the stream is opened: what a run pays
    tc = ray.train.get_context()
    rows = cfg["source"].rows_for(cfg["batch"], tc.get_world_size(), tc.get_world_rank())
    it = batches(rows, "cpu")
    tokens = 0
    for _ in range(cfg["epochs"] * rows.steps_per_pass):
        tokens += next(it).numel()
    return {"tokens_per_s": tokens / (time.perf_counter() - t0)}


def ray_train_loop(stream, batch: int, epochs: int) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysweep.data.streams import StreamSource

    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"batch": batch, "epochs": epochs, "source": StreamSource(str(stream.path))},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="bench-data", storage_path="/tmp/raysweep-bench"),
    )
    return trainer.fit().return_value["tokens_per_s"]


def data_wait(study_dir: Path) -> list[tuple[str, float, float]]:
    out = []
    for node in sorted((study_dir / "checkpoints").glob("*/*/node.json")):
        d = json.loads(node.read_text())
        r = d["result"]
        if "data_wait_share" in r:
            out.append((d["spec"]["label"], r["data_wait_share"], r["tokens_per_s"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study-dir", default=str(ROOT / "runs" / "default"), help="a finished default study's output_dir")
    ap.add_argument("--run-study", action="store_true", help="run the default study first (≈4 min on 2 cores)")
    ap.add_argument("--epochs", type=int, default=20, help="passes over the stage-1 stream in part 1")
    args = ap.parse_args()

    import ray

    from raysweep.config import load_study
    from raysweep.data.prepare import prepare

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    study = load_study(None, [f"output_dir={args.study_dir}"])
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    print(f"machine: {machine()}")
    if args.run_study:
        from raysweep.study import run_study

        run_study(study)
    data = prepare(study)
    stream = data.pretrain[max(data.pretrain)]  # the largest stage-1 stream
    batch = study.pretrain.batch_size
    n_tok = stream.n_blocks * stream.stats["block_len"]
    print(f"\n1. stage-1 stream {stream.stats['name']}: {stream.n_blocks:,} blocks ({n_tok:,} tokens), batch {batch}, {args.epochs} epochs")
    plain = plain_loop(stream.path, batch, args.epochs)
    into_worker = ray_train_loop(stream, batch, args.epochs)
    print(f"   plan read in this process (no Ray)        : {plain / 1e6:8.2f} M tokens/s")
    print(f"   plan -> Ray Train worker batches (mmap)   : {into_worker / 1e6:8.2f} M tokens/s")
    print(f"   ratio (Ray Train / plain)                 : {into_worker / plain:8.3f}")

    rows = data_wait(Path(args.study_dir))
    print(f"\n2. data wait in the default study ({args.study_dir}): {len(rows)} runs")
    if rows:
        shares = [s for _, s, _ in rows]
        train_speed = statistics.median(t for _, _, t in rows)
        for label, share, tps in rows:
            print(f"   {label:<48} wait {share:6.2%}  ({tps / 1e3:.1f}k tok/s)")
        print(f"   data-wait share: median {statistics.median(shares):.2%}, max {max(shares):.2%}   (goal < 5%)")
        print(f"   the worker is fed {into_worker / train_speed:,.0f}x faster than the median run trains ({train_speed / 1e3:.1f}k tok/s)")
    else:
        print("   no finished runs with data-wait figures; run `python -m raysweep.main` first or pass --run-study")
    ray.shutdown()


if __name__ == "__main__":
    main()
