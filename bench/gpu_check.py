"""The per-run loop on a GPU: correctness checks, then throughput and memory at the paper's shape.

Runs where there is torch and transformers but no Ray, MLflow or pydantic (the loop imports none of
them), e.g. a lent GPU machine with the repository on PYTHONPATH:

    PYTHONPATH=. python bench/gpu_check.py --json $OUT/gpu_check.json      # CUDA: smollm2-135m, seq 1024, vocab 49,152
    python bench/gpu_check.py --cpu                                        # CPU: the same code on the debug shape (in the suite)

1. Checks (each prints ok / FAILED with its figures): the real per-run loop on this device against
   the same run on CPU (bf16 autocast vs fp32: losses within BF16_REL); a checkpoint written from
   the device and loaded back bit for bit; LoRA trained and merged on the device (the merged
   model's logits equal the adapted model's); torch.compile against eager; early stopping hands
   back the best weights; a run in micro-batches of one against the run in one forward.
2. Throughput of the training step (raysweep.train.step.forward_backward + AdamW): micro-batch ×
   torch.compile × plain/chunked cross-entropy (× activation checkpointing where a micro-batch
   does not fit without it); tokens/s, MFU against 989 TFLOP/s (H100/H200 dense bf16) and against
   a bf16 matmul rate measured here, peak memory against the memory model (raysweep/memory.py).
3. The per-run loop's steady tokens/s against the bare step's at the fastest setting (goal ≥ 0.97),
   and smollm2-1b's peak at a micro-batch of one.

Exit code 1 if a check fails. The JSON holds every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

PEAK_FLOPS = 989e12  # dense bf16 of an H100 SXM (an H200 has the same tensor cores)
BF16_REL = 2e-2  # bf16 autocast against fp32: relative difference of held-out losses after a short run
EXACT_REL = 1e-5  # two fp32 computations of the same function (micro-batches, eager vs compiled on CPU)
COMPILED_REL = {"cuda": 2e-2, "cpu": 1e-4}

if __package__:  # python -m bench.gpu_check, or a test importing it
    from bench.arrays import ArraySource
    from bench.gpu_mfu import flops_per_token
else:  # python bench/gpu_check.py: this folder is on the path
    from arrays import ArraySource
    from gpu_mfu import flops_per_token


def _spec(tmp: Path, name: str, **over):
    from raysweep.spec import RunSpec

    base = RunSpec(
        stage="posttrain",
        label=name,
        node_key=name,
        node_dir=str(tmp / name),
        dataset="train",
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=2,
        weight_decay=0.1,
        batch_size=8,
        max_steps=12,
        eval_every=4,
        monitor=["post"],
        seed=1,
    )
    return replace(base, **over)


def _setup(shape: str, vocab: int, seq: int, device):
    """A learnable stream (each block counts up from a random start) and a held-out set of the same kind."""
    import numpy as np
    import torch

    from raysweep.presets import PRESETS
    from raysweep.train.context import LoopConfig, Worker

    rng = np.random.default_rng(0)

    def counting(n):
        start = rng.integers(1, vocab - seq - 2, size=n)
        return (start[:, None] + np.arange(seq + 1)[None, :]).astype(np.int64)

    cfg = LoopConfig(PRESETS[shape], vocab, seq, 1 << 30, {}, "tok")
    evals = {"post": torch.from_numpy(counting(16))}
    return cfg, ArraySource(counting(256)), evals, Worker(device)


def _close(a: dict, b: dict, rel: float) -> tuple[bool, float]:
    worst = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in b)
    return worst <= rel, worst


# long: six checks, each a few lines, read best one after the other
def checks(device, shape: str, vocab: int, seq: int) -> list[dict]:
    """The correctness checks on `device` (see the module doc); one dict each: name, ok, detail."""
    import torch

    from raysweep.store.nodes import load_weights, save_node
    from raysweep.train.model import add_lora, build_model
    from raysweep.train.step import autocast
    from raysweep.train.trainer import Trainer

    cpu = torch.device("cpu")
    cfg, rows, evals, worker = _setup(shape, vocab, seq, device)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out = []

    def check(name, ok, **detail):
        out.append({"name": name, "ok": bool(ok), **detail})
        print(
            f"  {'ok    ' if ok else 'FAILED'} {name}: "
            + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in detail.items()),
            flush=True,
        )

    base, state, points = Trainer(cfg, worker, evals).run(_spec(tmp, "base", early_stop_on="post", patience=50), rows)
    if device.type == "cuda":
        ref, _, _ = Trainer(cfg, replace(worker, device=cpu), evals).run(_spec(tmp, "ref-cpu", early_stop_on="post", patience=50), rows)
        ok, worst = _close(base["losses"], ref["losses"], BF16_REL)
        check("the loop on this device equals the same run on CPU (bf16 vs fp32)", ok, worst_rel=worst, tolerance=BF16_REL)
    # a checkpoint written from the device's weights, loaded back bit for bit
    spec = _spec(tmp, "saved")
    save_node(spec, state, base, "tok")
    loaded = load_weights(spec.node_dir, "tok")
    check("a checkpoint from the device loads back bit for bit", all(torch.equal(loaded[k], state[k]) for k in state), tensors=len(state))
    # early stopping hands back the best weights: the final loss is the best held-out loss seen
    held = [v for k, v, _, step in points if k == "heldout_post"]
    check(
        "early stopping keeps the best weights",
        math.isclose(base["losses"]["post"], min(held), rel_tol=1e-3),
        final=base["losses"]["post"],
        best=min(held),
    )
    # micro-batches of one: the same run as one forward per step
    micro, _, _ = Trainer(cfg, worker, evals).run(_spec(tmp, "micro", early_stop_on="post", patience=50, micro_batch_size=1), rows)
    rel = EXACT_REL if device.type == "cpu" else BF16_REL / 4
    ok, worst = _close(micro["losses"], base["losses"], rel)
    check("micro-batches of one equal one forward", ok, worst_rel=worst, tolerance=rel, accumulation=micro["accumulation_steps"])
    # torch.compile against eager
    compiled, _, _ = Trainer(replace(cfg, compile=True), worker, evals).run(_spec(tmp, "compiled", early_stop_on="post", patience=50), rows)
    ok, worst = _close(compiled["losses"], base["losses"], COMPILED_REL[device.type])
    check("torch.compile equals eager", ok, worst_rel=worst, tolerance=COMPILED_REL[device.type], graphs=compiled.get("compiled_graphs", 0))
    # LoRA trained and merged on the device: the merged plain model computes what the adapted one did
    model = build_model(cfg.shape, vocab, seq, seed=0).to(device)
    lora = add_lora(model, {"rank": 8, "alpha": 16, "targets": ["o_proj", "down_proj"]}, 0.0).to(device)
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    x = evals["post"][:4].to(device)
    for _ in range(5):
        with autocast(device):
            loss = torch.nn.functional.cross_entropy(lora(input_ids=x[:, :-1]).logits.float().flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    lora.eval()
    with torch.no_grad():
        before = lora(input_ids=x[:, :-1]).logits.float()
        merged = lora.merge_and_unload()
        after = merged(input_ids=x[:, :-1]).logits.float()
    diff = ((after - before).abs().max() / before.abs().max()).item()
    check("LoRA trained and merged on this device", diff < (1e-4 if device.type == "cpu" else 1e-2), max_rel_logit_diff=diff)
    return out


def matmul_flops(device) -> float:
    """A bf16 (GPU) or fp32 (CPU) matmul rate measured here: the ceiling the step can approach."""
    import torch

    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    reps, t0 = 20 if device.type == "cuda" else 3, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


# long: one measured setting, set up, warmed, timed and compared with the memory model in one piece
def step_rate(device, shape: str, vocab: int, seq: int, micro: int, compile_: bool, plain_loss: bool, ckpt: bool, steps: int) -> dict:
    """Tokens/s and peak memory of the bare training step at one setting (accumulation 1)."""
    import torch

    from raysweep.memory import training_peak
    from raysweep.train import loss as loss_mod
    from raysweep.train.model import build_model
    from raysweep.train.optimizer import build_optimizer
    from raysweep.train.step import forward_backward

    cuda = device.type == "cuda"
    saved = loss_mod.CHUNK_ELEMENTS
    loss_mod.CHUNK_ELEMENTS = 1 << 62 if plain_loss else saved
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model = build_model(shape, vocab, seq, seed=0).to(device)
        if ckpt:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        opt = build_optimizer(model, 1e-4, 0.1, device)
        step_model = torch.compile(model) if compile_ else model
        x = torch.randint(0, vocab, (micro, seq + 1), device=device)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        for _ in range(3 if compile_ else 2):  # compilation, allocator warm-up, AdamW's moments
            forward_backward(step_model, model, opt, x, device)
            opt.step()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss, _ = forward_backward(step_model, model, opt, x, device)
            opt.step()
        loss.item()
        sync()
        seconds = time.perf_counter() - t0
        tps = steps * micro * seq / seconds
        peak = torch.cuda.max_memory_allocated() if cuda else float("nan")
        est = training_peak(shape, vocab, seq, micro, precision="bf16" if cuda else "fp32", checkpointing=ckpt)
        model_bytes = est.total - est.overhead  # what the allocator holds: no CUDA context, no process
        return {
            "micro": micro,
            "compile": compile_,
            "loss": "plain" if plain_loss else "chunked",
            "activation_checkpointing": ckpt,
            "tokens_per_s": tps,
            "flops_per_token": flops_per_token(model, seq),
            "peak_bytes": peak,
            "model_bytes": model_bytes,
            "model_error": (model_bytes / peak - 1) if cuda else None,
        }
    except torch.OutOfMemoryError:
        return {
            "micro": micro,
            "compile": compile_,
            "loss": "plain" if plain_loss else "chunked",
            "activation_checkpointing": ckpt,
            "oom": True,
        }
    finally:
        loss_mod.CHUNK_ELEMENTS = saved
        if cuda:
            torch.cuda.empty_cache()


def loop_rate(device, shape: str, vocab: int, seq: int, micro: int, compile_: bool, steps: int) -> float:
    """Steady tokens/s of the real per-run loop (schedule, clipping, logging, no evaluation in the timed steps)."""
    import numpy as np

    from raysweep.presets import PRESETS
    from raysweep.train.context import LoopConfig, Worker
    from raysweep.train.trainer import Trainer

    rows = ArraySource(np.random.default_rng(0).integers(0, vocab, size=(micro * (steps + 4), seq + 1)).astype(np.int64))
    cfg = LoopConfig(PRESETS[shape], vocab, seq, 1, {}, "tok", compile=compile_)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-loop-"))
    spec = _spec(tmp, "loop", batch_size=micro, max_steps=steps + 3, eval_every=10**9, monitor=[])
    result, _, _ = Trainer(cfg, Worker(device), {}).run(spec, rows)
    return result["steady_tokens_per_s"]


# long: the run in the order it prints: checks, sweep, the loop at the best setting, the 1B's peak
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run on CPU on the debug shape (what the suite runs)")
    ap.add_argument("--json", type=Path, help="write every figure here (default: $OUT/gpu_check.json where OUT is set)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    ap.add_argument("--quick", action="store_true", help="micro-batches 16 and 64 only, no plain loss")
    args = ap.parse_args(argv)

    import torch

    cuda = not args.cpu and torch.cuda.is_available()
    if not args.cpu and not cuda:
        print("no CUDA GPU here: run with --cpu for the CPU mode (the checks on the debug shape)", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    shape, vocab, seq = ("smollm2-135m", 49_152, 1024) if cuda else ("debug", 512, 64)
    steps = args.steps or (20 if cuda else 2)
    name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    print(f"machine: {platform.node()} · {name} · torch {torch.__version__} · {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    doc = {"machine": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "shape": shape, "vocab": vocab, "seq": seq}

    print("checks:", flush=True)
    doc["checks"] = checks(device, shape, vocab, seq)

    peak = matmul_flops(device)
    doc["matmul_flops"] = peak
    print(f"throughput ({shape}, seq {seq}, vocab {vocab:,}; matmul measured {peak / 1e12:.1f} TFLOP/s):", flush=True)
    micros = ([16, 64] if args.quick else [8, 16, 32, 64]) if cuda else [2]  # CPU: the code path, not a measurement
    losses = (False,) if args.quick or not cuda else (False, True)
    rows = []
    for micro in micros:
        for compile_ in (False, True):
            for plain in losses:
                r = step_rate(device, shape, vocab, seq, micro, compile_, plain, False, steps)
                if r.get("oom"):
                    r = step_rate(device, shape, vocab, seq, micro, compile_, plain, True, steps)  # where memory needs it
                rows.append(r)
                if r.get("oom"):
                    print(
                        f"  micro {micro:>3} compile {'on ' if compile_ else 'off'} {r['loss']:<7}: out of memory, with checkpointing too",
                        flush=True,
                    )
                    continue
                r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / PEAK_FLOPS
                r["mfu_of_matmul"] = r["tokens_per_s"] * r["flops_per_token"] / peak
                mem = f"peak {r['peak_bytes'] / 1e9:.1f} GB, model {r['model_error']:+.0%}" if cuda else "peak n/a on CPU"
                print(
                    f"  micro {micro:>3} compile {'on ' if compile_ else 'off'} {r['loss']:<7}{' ckpt' if r['activation_checkpointing'] else ''}: "
                    f"{r['tokens_per_s']:>10,.0f} tok/s, MFU {r['mfu']:.1%} of 989 TFLOP/s, {r['mfu_of_matmul']:.1%} of the matmul rate; {mem}",
                    flush=True,
                )
    doc["sweep"] = rows
    done = [r for r in rows if not r.get("oom")]
    best = max(done, key=lambda r: r["tokens_per_s"])
    doc["best"] = best
    loop = loop_rate(device, shape, vocab, seq, best["micro"], best["compile"], steps)
    doc["loop_tokens_per_s"], doc["loop_over_step"] = loop, loop / best["tokens_per_s"]
    print(
        f"fastest: micro {best['micro']}, compile {'on' if best['compile'] else 'off'}, {best['loss']} loss: {best['tokens_per_s']:,.0f} tok/s "
        f"(MFU {best['mfu']:.1%}, goal ≥ 45% on an H100/H200); the per-run loop at it: {loop:,.0f} tok/s = "
        f"{doc['loop_over_step']:.3f} of the bare step (goal ≥ 0.97)",
        flush=True,
    )
    if cuda:
        big = step_rate(device, "smollm2-1b", vocab, seq, 1, False, False, False, 2)
        doc["smollm2_1b_micro1"] = big
        if not big.get("oom"):
            print(f"smollm2-1b, micro-batch 1: peak {big['peak_bytes'] / 1e9:.1f} GB (memory model {big['model_error']:+.0%})", flush=True)
        errors = [abs(r["model_error"]) for r in done if r.get("model_error") is not None]
        doc["memory_model_worst_error"] = max(errors) if errors else None
        print(f"memory model against the allocator's peaks, worst: {doc['memory_model_worst_error']:.1%}", flush=True)
    failed = [c["name"] for c in doc["checks"] if not c["ok"]]
    print(f"{len(doc['checks']) - len(failed)} passed, {len(failed)} failed", flush=True)
    target = args.json or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if target:
        target.write_text(json.dumps(doc, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
