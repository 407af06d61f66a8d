"""Data at scale: does preparing and streaming a study's data stay flat in memory as the corpus grows?

    python bench/data_scale.py                                  # 10M, 100M and 300M stage-1 tokens (≈ 30 min on 2 cores)
    python bench/data_scale.py --tokens 5000000 50000000       # a quick run (≈ 4 min)

For each size N, in a fresh process: local jsonl corpora are generated (D_pre of N tokens in
files of ≈ 64 MB, D_post and D_ft of 1M tokens each: random words of a 5,000-word vocabulary),
then the whole preparation runs as a study does it (a 4,096-id BPE tokenizer trained on the
first documents, every corpus tokenized into token shards by Ray Data tasks, every stream planned:
λ ∈ {0, 0.5}, seq 1024), then 20,000 batches of the λ = 0.5 stage-1 stream go into one Ray Train
worker through the same reader a training run uses. Printed per size: wall time of each phase,
tokens/s, peak RSS of the driver and of the worker, peak object-store bytes, disk bytes per token
(token ids, and the per-document index); then the tokenization rate on 1 and on 2 CPUs at one
size; last, `peak driver RSS ratio largest/smallest: X (goal ≤ 1.2)`.

Goals (issue 17): driver and worker peak RSS at the largest size ≤ 1.2× the smallest; tokenization
tokens/s grows with CPUs; ≥ 5M tokens/s into one worker; ≤ 2.5 bytes per token on disk plus the index.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORDS = 5000
FILE_BYTES = 64 << 20


def _words(rng) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(letters[rng.integers(0, 26, rng.integers(2, 9))]) for _ in range(WORDS)]


def generate(folder: Path, tokens: int, seed: int) -> Path:
    """Local jsonl files with about `tokens` words in documents of 100–900 words (≥ 1 token a word),
    the words drawn Zipf-like from a 5,000-word vocabulary, as in natural text."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = _words(rng)
    zipf = 1.0 / np.arange(1, WORDS + 1) ** 1.1
    zipf /= zipf.sum()
    left, k, out, size = int(tokens * 1.1), 0, None, FILE_BYTES
    while left > 0:
        if size >= FILE_BYTES:
            if out:
                out.close()
            out, size, k = (folder / f"part-{k:05d}.jsonl").open("w"), 0, k + 1
        n = int(min(left, rng.integers(100, 900)))
        line = json.dumps({"text": " ".join(vocab[i] for i in rng.choice(WORDS, n, p=zipf))}) + "\n"
        out.write(line)
        size += len(line)
        left -= n
    out.close()
    return folder


class ObjectStorePeak:
    """Samples the object store's use (plasma) twice a second; `peak` is the most seen."""

    def __init__(self):
        self.peak, self.stop = 0, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        import re

        from ray._private.internal_api import memory_summary

        while not self.stop.wait(0.5):
            try:
                m = re.search(r"Plasma memory usage (\d+) MiB", memory_summary(stats_only=True))
                self.peak = max(self.peak, int(m.group(1)) << 20) if m else self.peak
            except Exception:  # noqa: BLE001 - sampling is best-effort
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def peak_rss() -> int:
    """This process's peak resident memory (VmHWM), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _stream_worker(cfg: dict) -> dict:
    """Ray Train entry: read `batches` batches of the stream (this worker's rows), as a run's loop does."""
    from raysweep.train.step import batches

    rows = cfg["source"].rows_for(cfg["batch"], 1, 0)
    it = batches(rows, "cpu")
    t0, tokens = time.perf_counter(), 0
    for _ in range(cfg["batches"]):
        tokens += next(it).numel()
    return {"tokens_per_s": tokens / (time.perf_counter() - t0), "passes": cfg["batches"] / rows.steps_per_pass, "rss": peak_rss()}


def stream_into_worker(stream, batch: int, n: int, tmp: Path) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysweep.data.streams import StreamSource

    trainer = TorchTrainer(
        _stream_worker,
        train_loop_config={"source": StreamSource(str(stream.path)), "batch": batch, "batches": n},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"data-scale-{time.time_ns()}", storage_path=str(tmp / "ray")),
    )
    return trainer.fit().return_value


def _du(folder: Path, suffixes: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name.endswith(suffixes))


# long: one measured run, phase by phase, reads best in one piece
def one_size(tokens: int, cpus: int, batches: int, batch: int, seq_len: int, vocab: int, work: Path, tokenize_only: bool) -> dict:
    import ray

    from raysweep.config import load_study
    from raysweep.data.corpus import tokenize_corpus
    from raysweep.data.mixing import ROLES, needed_tokens
    from raysweep.data.prepare import make_tokenizer, prepare
    from raysweep.data.tokenizer import load_tokenizer, tokenizer_id

    t = {}
    t0 = time.perf_counter()
    corpora = {
        "pre": generate(work / "pre", tokens, 1),
        "post": generate(work / "post", 1_000_000, 2),
        "ft": generate(work / "ft", 1_000_000, 3),
    }
    t["generate"] = time.perf_counter() - t0
    over = [
        f"output_dir={work / 'out'}",
        "model.preset=tiny",
        f"model.seq_len={seq_len}",
        f"tokenizer.vocab_size={vocab}",
        "tokenizer.train_docs=2000",
        f"pretrain.tokens={tokens}",
        "pretrain.post_tokens=500000",
        "pretrain.mix_fraction=[0, 0.5]",
        "posttrain.tokens=1000000",
        "finetune.tokens=500000",
        "pretrain.eval_tokens=8192",
        "posttrain.eval_tokens=8192",
        "finetune.eval_tokens=8192",
    ]
    over += [f"corpora.{r}={{source: local, path: {corpora[r]}, heldout_docs: 50, heldout_fraction: 0.01}}" for r in ROLES]
    study = load_study(None, over)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
    with ObjectStorePeak() as store:
        t0 = time.perf_counter()
        tok = make_tokenizer(study, study.out / "cache")
        t["tokenizer"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        need, tok_id, n_vocab = needed_tokens(study), tokenizer_id(tok), load_tokenizer(tok).get_vocab_size()
        pre = tokenize_corpus(
            study.corpora.pre, "corpora.pre", 0, study.out / "cache" / "tokens", tok, tok_id, n_vocab, need["pre"], wave=cpus
        )
        t["tokenize_pre"] = time.perf_counter() - t0
        read_tokens = int(pre.train.lengths.sum() + pre.heldout.lengths.sum())
        if tokenize_only:
            ray.shutdown()
            return {"tokens": tokens, "cpus": cpus, "tokenize_tokens_per_s": read_tokens / t["tokenize_pre"]}
        t0 = time.perf_counter()
        data = prepare(study)  # D_post and D_ft tokenized, every stream planned (D_pre's shards are cached)
        t["prepare_rest"] = time.perf_counter() - t0
        worker = stream_into_worker(data.pretrain[0.5], batch, batches, work)
        t["stream"] = batches * batch * (seq_len + 1) / worker["tokens_per_s"]
    cache = study.out / "cache"
    ids = _du(pre.train.folder, (".tokens",))  # D_pre's token shards, for its N-token budget (documents read past it included)
    index = _du(cache / "tokens", (".lengths.npy", ".meta.npz")) + _du(cache / "streams", (".npy",))
    ray.shutdown()
    return {
        "tokens": tokens,
        "cpus": cpus,
        "seconds": t,
        "tokenize_tokens_per_s": read_tokens / t["tokenize_pre"],
        "stream_tokens_per_s": worker["tokens_per_s"],
        "passes": worker["passes"],
        "driver_rss": peak_rss(),
        "worker_rss": worker["rss"],
        "object_store_peak": store.peak,
        "disk_ids_bytes_per_token": ids / tokens,
        "disk_index_bytes": index,
        "read_tokens": read_tokens,
    }


def child(args) -> None:
    work = Path(args.work)
    result = one_size(args.one, args.cpus, args.batches, args.batch, args.seq_len, args.vocab, work, args.tokenize_only)
    print("RESULT " + json.dumps(result), flush=True)


def run_child(args, tokens: int, cpus: int, tokenize_only: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"raysweep-data-scale-{tokens}-"))
    cmd = [
        sys.executable,
        "-m",
        "bench.data_scale",
        "--one",
        str(tokens),
        "--cpus",
        str(cpus),
        "--work",
        str(work),
        "--batches",
        str(args.batches),
        "--batch",
        str(args.batch),
        "--seq-len",
        str(args.seq_len),
        "--vocab",
        str(args.vocab),
        *(["--tokenize-only"] if tokenize_only else []),
    ]
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=7200)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            raise SystemExit(f"size {tokens:,} failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return json.loads(lines[-1].removeprefix("RESULT "))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(rows: list[dict], scaling: list[dict]) -> None:
    print(
        f"\n{'tokens':>13} | {'generate':>8} {'tokenizer':>9} {'tokenize':>8} {'rest':>6} {'stream':>6} s | {'tokenize':>10} {'stream':>10} tok/s | "
        f"{'driver':>7} {'worker':>7} RSS MB | {'obj store':>9} MB | {'ids B/tok':>9} {'index MB':>8} | passes"
    )
    for r in rows:
        t = r["seconds"]
        print(
            f"{r['tokens']:>13,} | {t['generate']:>8.1f} {t['tokenizer']:>9.1f} {t['tokenize_pre']:>8.1f} {t['prepare_rest']:>6.1f} {t['stream']:>6.1f}   | "
            f"{r['tokenize_tokens_per_s'] / 1e3:>9.0f}k {r['stream_tokens_per_s'] / 1e6:>9.2f}M       | {r['driver_rss'] / 2**20:>7.0f} "
            f"{r['worker_rss'] / 2**20:>7.0f}        | {r['object_store_peak'] / 2**20:>9.1f}    | {r['disk_ids_bytes_per_token']:>9.3f} "
            f"{r['disk_index_bytes'] / 2**20:>8.2f} | {r['passes']:.2f}"
        )
    if scaling:
        one = {s["cpus"]: s["tokenize_tokens_per_s"] for s in scaling}
        print(
            f"\ntokenization at {scaling[0]['tokens']:,} tokens: "
            + ", ".join(f"{c} CPU{'s' if c > 1 else ''} {v / 1e3:,.0f}k tok/s" for c, v in sorted(one.items()))
            + (f"; {max(one)} vs 1: {one[max(one)] / one[1]:.2f}x (goal: grows with CPUs)" if 1 in one and len(one) > 1 else "")
        )
    small, large = rows[0], rows[-1]
    print(f"stream into one worker at {large['tokens']:,}: {large['stream_tokens_per_s'] / 1e6:.2f}M tokens/s (goal ≥ 5M)")
    print(
        f"disk: {large['disk_ids_bytes_per_token']:.3f} bytes of token ids per token of the D_pre budget (goal ≤ 2.5; uint16 stores 2 a token, "
        f"the rest is documents read past the budget in the last wave of files) + {large['disk_index_bytes'] / 2**20:.1f} MB of index"
    )
    print(f"peak worker RSS ratio largest/smallest: {large['worker_rss'] / small['worker_rss']:.3f} (goal ≤ 1.2)")
    print(f"peak driver RSS ratio largest/smallest: {large['driver_rss'] / small['driver_rss']:.3f} (goal ≤ 1.2)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=float, nargs="+", default=[10e6, 100e6, 300e6], help="stage-1 D_pre tokens per size")
    p.add_argument("--batches", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument(
        "--scaling-cpus", type=int, nargs="*", default=[1, 2], help="CPUs for the tokenization-rate comparison (at the middle size)"
    )
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cpus", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--tokenize-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return child(args)
    import ray
    import torch

    print(
        f"machine: {platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · python {platform.python_version()} · "
        f"torch {torch.__version__} · ray {ray.__version__}; batch {args.batch} × seq {args.seq_len}, {args.batches:,} batches, BPE {args.vocab}",
        flush=True,
    )
    rows = []
    for n in sorted(int(x) for x in args.tokens):
        rows.append(run_child(args, n, 2))
        print(f"[data-scale] {n:,} tokens done: {json.dumps(rows[-1])}", flush=True)
    middle = sorted(int(x) for x in args.tokens)[len(args.tokens) // 2]
    scaling = [run_child(args, middle, c, tokenize_only=True) for c in args.scaling_cpus]
    report(rows, scaling)


if __name__ == "__main__":
    main()
