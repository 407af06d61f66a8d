"""The paper's 135M shape on this CPU: what one optimizer step holds in memory, measured against the
memory model (raysweep/memory.py) that picks micro-batches and refuses studies that cannot fit.

Each case runs in a fresh process: the real `smollm2-135m` shape with SmolLM2's 49,152-token
vocabulary, AdamW's state already allocated (a steady-state step, as every step after the first),
then one optimizer step of a fixed global batch in micro-batches of 1, 2, 4 through the loop's own
`forward_backward`; its peak resident memory (ru_maxrss) against the model's estimate. Gradient
accumulation keeps the peak flat in the global batch: that is the point of it.

    python bench/paper_shape.py --quick     # seq 512, micro-batches 1, 2, 4 (≈ 2-3 minutes here)
    python bench/paper_shape.py             # seq 1024, plus the plain loss and activation checkpointing

Prints `memory model error, worst case: X% (goal ≤ 15%)`. Figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GOAL = 0.15
VOCAB = 49_152


def one_step(case: dict) -> dict:
    """Runs in the child: build, allocate AdamW's state, one measured step; returns its peak RSS."""
    import resource
    import time

    import torch

    from raysweep.memory import training_peak
    from raysweep.presets import PRESETS
    from raysweep.train import loss as loss_mod
    from raysweep.train.model import build_model
    from raysweep.train.optimizer import build_optimizer
    from raysweep.train.step import forward_backward

    torch.set_num_threads(case["threads"])
    cpu = torch.device("cpu")
    shape = PRESETS[case["preset"]]
    model = build_model(shape, VOCAB, case["seq"], seed=0)
    if case["checkpointing"]:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = build_optimizer(model, 1e-4, 0.1, cpu)
    for p in model.parameters():  # AdamW's moments exist from the first step on: allocate them now
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if case["plain_loss"]:  # the whole batch in one chunk: the plain F.cross_entropy path
        loss_mod.CHUNK_ELEMENTS = 1 << 62
    x = torch.randint(0, VOCAB, (case["batch"], case["seq"] + 1), generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    loss, _ = forward_backward(model, model, opt, x, cpu, micro_batch=case["micro"])
    opt.step()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    est = training_peak(shape, VOCAB, case["seq"], case["micro"], precision="fp32", checkpointing=case["checkpointing"])
    if case["plain_loss"]:
        from raysweep.memory import logits_bytes_per_token

        est = type(est)(
            est.static, est.activations, case["micro"] * case["seq"] * logits_bytes_per_token(VOCAB, "fp32", False), est.overhead
        )
    return {
        **case,
        "peak_rss": peak,
        "rss_before_step": before,
        "estimate": est.total,
        "estimate_parts": {"static": est.static, "activations": est.activations, "logits": est.logits, "overhead": est.overhead},
        "error": est.total / peak - 1,
        "step_seconds": seconds,
        "tokens_per_s": case["batch"] * case["seq"] / seconds,
        "loss": loss.item(),
    }


def run_case(case: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cases(quick: bool, threads: int) -> list[dict]:
    seq = 512 if quick else 1024
    base = {"preset": "smollm2-135m", "seq": seq, "batch": 4, "threads": threads, "checkpointing": False, "plain_loss": False}
    out = [{**base, "micro": m} for m in (1, 2, 4)]
    if not quick:
        out += [{**base, "micro": 2, "plain_loss": True}, {**base, "micro": 4, "checkpointing": True}]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="seq 512, micro-batches 1, 2, 4 only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # one case, in a fresh process (its peak RSS is its own)
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(one_step(json.loads(args.case))))
        return 0
    rows = []
    print(f"{'case':<44} {'peak RSS':>9} {'model':>9} {'error':>7} {'step s':>7} {'tokens/s':>9}", flush=True)
    for case in cases(args.quick, args.threads):
        r = run_case(case)
        rows.append(r)
        what = f"seq {r['seq']}, batch {r['batch']}, micro {r['micro']}" + (", plain loss" if r["plain_loss"] else "")
        what += ", act. ckpt" if r["checkpointing"] else ""
        print(
            f"{what:<44} {r['peak_rss'] / 1e9:>7.2f}GB {r['estimate'] / 1e9:>7.2f}GB {r['error']:>+7.1%} "
            f"{r['step_seconds']:>7.1f} {r['tokens_per_s']:>9.0f}",
            flush=True,
        )
    worst = max(abs(r["error"]) for r in rows)
    flat = [r for r in rows if not r["plain_loss"] and not r["checkpointing"]]
    print(
        f"accumulation: one optimizer step of {flat[0]['batch']} sequences peaks at "
        + ", ".join(f"{r['peak_rss'] / 1e9:.2f} GB in micro-batches of {r['micro']}" for r in flat)
    )
    print(f"memory model error, worst case: {worst:.1%} (goal ≤ {GOAL:.0%}){'' if worst <= GOAL else ' MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
