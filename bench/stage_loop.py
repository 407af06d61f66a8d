"""Stage-loop overhead: tokens/s of raysweep's Ray Train stage loop vs a bare PyTorch loop on the
same model, batch, data and thread count, in one run, printed as a ratio (goal, issue 8: ≥ 0.97).

    python bench/stage_loop.py [--presets tiny small] [--seq-len 128] [--batch 8] [--steps 100]

Both loops do the same work per step (forward, cross-entropy, backward, clip, AdamW) from step 0,
one thread, no evaluation inside the timed steps (the Ray loop's final held-out evaluation runs
after its timer stops; its sets are kept tiny). Two ratios: over the whole run (what a run of this
length pays, including the data iterator's start and first allocations, once per run), and steady
state, timed from the end of each loop's first step (the loop's own per-step overhead).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_loop(
    preset, vocab: int, seq_len: int, blocks: np.ndarray, batch: int, steps: int, threads: int = 1, lora: dict | None = None
) -> tuple[float, float]:
    """nanoGPT's loop (forward, cross-entropy, backward, clip, AdamW) on `preset` (a name or a
    raysweep.presets.ModelShape), with LoRA adapters (raysweep.train.model.add_lora) where `lora`
    says: tokens/s over the whole run and after its first step."""
    import torch
    import torch.nn.functional as F

    from raysweep.train.model import add_lora, build_model

    torch.set_num_threads(threads)
    model = build_model(preset, vocab, seq_len, seed=0)
    if lora:
        model = add_lora(model, lora, 0.0)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.9, 0.95))
    data = torch.from_numpy(blocks.astype(np.int64))
    t0 = time.perf_counter()
    t_first = None
    for step in range(steps):
        x = data[(step * batch) % (len(data) - batch + 1) :][:batch].clone()
        logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        if t_first is None:
            t_first = time.perf_counter()
    t_end = time.perf_counter()
    return steps * batch * seq_len / (t_end - t0), (steps - 1) * batch * seq_len / (t_end - t_first)


def ray_loop(preset: str, vocab: int, seq_len: int, stream, heldout: Path, batch: int, steps: int, tmp: Path) -> tuple[float, float]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysweep.data.streams import StreamSource
    from raysweep.presets import PRESETS
    from raysweep.spec import RunSpec
    from raysweep.sweep.slots import worker_setup
    from raysweep.train.context import LoopConfig
    from raysweep.train.trainer import Trainer

    spec = RunSpec(
        stage="finetune",
        label=f"bench {preset}",
        node_key=f"bench-{preset}",
        node_dir=str(tmp / f"node-{preset}"),
        dataset="train",
        lr=1e-3,
        min_lr=1e-3,
        warmup_steps=0,
        weight_decay=0.0,
        batch_size=batch,
        max_steps=steps,
        eval_every=10**9,
        monitor=[],
        seed=0,
    )
    loop = LoopConfig(PRESETS[preset], vocab, seq_len, seq_len, {"pre": StreamSource(str(heldout))}, "bench")
    sources = {"train": StreamSource(str(stream.path))}

    def train(config):  # the worker as a slot's (raysweep.sweep.slots.worker_setup)
        worker, eval_sets, own = worker_setup(loop, None)
        return Trainer(own, worker, eval_sets).fit([spec], sources)

    [result] = (
        TorchTrainer(
            train,
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name=f"bench-{preset}", storage_path=str(tmp / "ray")),
        )
        .fit()
        .return_value
    )
    return result["tokens_per_s"], result["steady_tokens_per_s"]


def plan_of_blocks(blocks: np.ndarray, cache_dir: Path, name: str = "blocks"):
    """A plan whose blocks are exactly `blocks` (n, L) (benchmarks and tests with made-up data): their
    tokens, flattened, as one document of one shard, cut at L."""
    from raysweep.data.mixing import Selection
    from raysweep.data.shards import ShardWriter, TokenView
    from raysweep.data.streams import build_plan

    n, block_len = blocks.shape
    folder = Path(cache_dir) / f"{name}-tokens"
    writer = ShardWriter(folder, name, np.dtype(np.uint16) if blocks.max(initial=0) < 1 << 16 else np.dtype(np.uint32))
    writer.add([blocks.reshape(-1)])
    [info] = writer.close()
    view = TokenView(
        name,
        folder,
        (info.name,),
        (info.sha256,),
        writer.dtype.name,
        np.zeros(1, np.int32),
        np.zeros(1, np.int64),
        np.array([n * block_len], np.int64),
        np.zeros(1, np.uint64),
    )
    sel = Selection(np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([n * block_len], np.int64))
    return build_plan(name, {name: (view, sel)}, None, block_len - 1, 0, Path(cache_dir))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--vocab", type=int, default=2048)
    args = ap.parse_args()

    import ray
    import torch

    print(
        f"machine: {platform.node()} · {os.cpu_count()} CPUs · python {platform.python_version()} · torch {torch.__version__} · ray {ray.__version__}"
    )
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="raysweep-bench-"))
    block = args.seq_len + 1
    rng = np.random.default_rng(0)
    blocks = rng.integers(1, args.vocab, size=(args.batch * args.steps, block), dtype=np.int32)
    stream = plan_of_blocks(blocks, tmp, "train")  # the Ray loop reads its rows from a plan over a token shard, as in a study
    heldout = plan_of_blocks(blocks[:2], tmp, "heldout")
    rows = []
    for preset in args.presets:
        steps = args.steps
        bare = bare_loop(preset, args.vocab, args.seq_len, blocks, args.batch, steps)
        in_ray = ray_loop(preset, args.vocab, args.seq_len, stream, heldout.path, args.batch, steps, tmp)
        rows.append((preset, steps, bare, in_ray))
    print(f"\nseq {args.seq_len}, batch {args.batch}, 1 thread, vocab {args.vocab}; goal: ratio ≥ 0.97")
    print(
        f"{'preset':<8} {'steps':>5} | {'whole run: bare':>16} {'Ray Train':>10} {'ratio':>6} | {'steady: bare':>13} {'Ray Train':>10} {'ratio':>6}"
    )
    for preset, steps, (bare, bare_steady), (in_ray, ray_steady) in rows:
        print(
            f"{preset:<8} {steps:>5} | {bare:>16,.0f} {in_ray:>10,.0f} {in_ray / bare:>6.3f} | {bare_steady:>13,.0f} {ray_steady:>10,.0f} "
            f"{ray_steady / bare_steady:>6.3f}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
