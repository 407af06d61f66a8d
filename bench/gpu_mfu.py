"""GPU throughput and MFU of raysweep's training step: `smollm2-135m` at sequence length 1024, bf16
autocast, SDPA attention, fused AdamW, with and without torch.compile (issue 8 goal: ≥ 45% MFU on
one H100; llm.c reaches ~50%).

    python bench/gpu_mfu.py                                   # on a GPU machine
    python bench/gpu_mfu.py --device cpu --preset tiny --seq-len 128 --batch 4 --steps 3 --compile off   # CPU smoke check

The step is raysweep's own (raysweep.train.step.forward_backward and raysweep.train.optimizer), on
random tokens with the SmolLM2 vocabulary (49,152). FLOPs per token follow PaLM's MFU accounting:
6·N (N: parameters without the embedding table, whose lookup is not a matmul; the tied output
projection is counted once as 2·d·V forward) + 12·L·d·T for attention; MFU = FLOPs/s / peak
(default: H100 SXM dense bf16, 989 TFLOP/s; --peak for other GPUs).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def flops_per_token(model, seq_len: int) -> float:
    cfg = model.config
    embed = cfg.vocab_size * cfg.hidden_size
    n = sum(p.numel() for p in model.parameters()) - embed  # matmul weights (norms are a rounding error)
    head = 0 if not cfg.tie_word_embeddings else embed  # the tied output projection is a matmul too
    return 6 * (n + head) + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def measure(preset: str, seq_len: int, batch: int, steps: int, warmup: int, device: str, compile_: bool) -> dict:
    import torch

    from raysweep.train.model import build_model
    from raysweep.train.optimizer import build_optimizer
    from raysweep.train.step import forward_backward

    dev = torch.device(device)
    model = build_model(preset, 49_152, seq_len, seed=0).to(dev)
    opt = build_optimizer(model, 1e-3, 0.1, dev)
    step_model = torch.compile(model) if compile_ else model
    x = torch.randint(0, model.config.vocab_size, (batch, seq_len + 1), device=dev)

    def step():
        loss, _ = forward_backward(step_model, model, opt, x, dev)
        opt.step()
        return loss

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(warmup):  # compilation and allocator warm-up
        step()
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    sync()
    seconds = time.perf_counter() - t0
    tps = steps * batch * seq_len / seconds
    return {
        "tokens_per_s": tps,
        "flops_per_token": flops_per_token(model, seq_len),
        "warmup_s": warm,
        "memory_gb": torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="smollm2-135m")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--compile", choices=["both", "on", "off"], default="both")
    p.add_argument("--peak", type=float, default=989e12, help="peak bf16 dense FLOP/s of the device")
    args = p.parse_args()

    import torch

    gpu = torch.cuda.get_device_name() if args.device == "cuda" and torch.cuda.is_available() else None
    if args.device == "cuda" and gpu is None:
        sys.exit("no CUDA GPU here; for a CPU smoke check: --device cpu --preset tiny --seq-len 128 --batch 4 --steps 3 --compile off")
    print(
        f"machine: {platform.node()} · {gpu or platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
        f"torch {torch.__version__} · python {platform.python_version()}"
    )
    print(
        f"{args.preset}, seq {args.seq_len}, batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
        f"{'bf16 autocast' if args.device == 'cuda' else 'fp32'}, SDPA, fused AdamW: {args.device == 'cuda'}"
    )
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.compile]
    for compile_ in modes:
        r = measure(args.preset, args.seq_len, args.batch, args.steps, args.warmup, args.device, compile_)
        mfu = r["tokens_per_s"] * r["flops_per_token"] / args.peak
        shown = f"MFU {mfu:.1%} (goal ≥ 45%)" if gpu else "MFU n/a on CPU"
        print(
            f"torch.compile {'on ' if compile_ else 'off'}: {r['tokens_per_s']:,.0f} tok/s, {r['flops_per_token'] / 1e6:.0f} MFLOP/token, "
            f"{shown}; warm-up {r['warmup_s']:.1f} s, peak memory {r['memory_gb']:.1f} GB",
            flush=True,
        )


if __name__ == "__main__":
    main()
