"""The tasks that tokenize a corpus: one per source shard, run side by side in Ray Data tasks on
every CPU of the cluster (or one after another in this process), with live progress. A task writes
token shards (raysweep.data.shards) and each document's text hash and carving decision; the driver
(raysweep.data.corpus) decides which shards to run and builds the views from what they wrote."""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

import numpy as np

from raysweep.data.corpora.sources import CorpusError, ShardSource, carved, hash64, render, text_hash
from raysweep.data.shards import ShardWriter
from raysweep.store.storage import atomic_file

ENCODE_BATCH = 1024  # documents tokenized at once in a task


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from raysweep.data.tokenizer import load_tokenizer

    return load_tokenizer(Path(path))  # once per worker process, not once per shard


def tokenize_shard(task: dict) -> dict:
    """Read one source shard, tokenize its non-empty documents into token shards and record each
    one's text hash and carving decision. Runs in a Ray Data task; returns what it wrote (or the
    reading error, to be reported with its key before any training)."""
    from raysweep.data.corpora.sources import shard_records

    shard = ShardSource(**task["shard"])
    folder, prefix = Path(task["folder"]), task["prefix"]
    writer = ShardWriter(folder, prefix, np.dtype(task["dtype"]))
    tok, cfg = _tokenizer(task["tokenizer"]), task["corpus"]
    hashes, cut, texts, empty = [], [], [], 0
    try:
        for rec in shard_records(shard):
            text = (
                rec["text"] if shard.kind == "synthetic" else render(rec, cfg["key"], cfg["text_field"], cfg["template"])
            )  # document_text, from a dump
            if not text.strip():
                empty += 1
                continue
            h = text_hash(text)
            hashes.append(hash64(h))
            cut.append(carved(h, cfg["heldout_fraction"]))
            texts.append(text)
            if len(texts) >= ENCODE_BATCH:
                writer.add([e.ids for e in tok.encode_batch(texts, add_special_tokens=False)])
                texts = []
        if texts:
            writer.add([e.ids for e in tok.encode_batch(texts, add_special_tokens=False)])
        infos = writer.close()
    except CorpusError as e:
        writer.abort()
        return {"error": str(e)}
    with atomic_file(folder / f"{prefix}.meta.npz") as tmp, tmp.open("wb") as f:
        np.savez(f, hashes=np.asarray(hashes, dtype=np.uint64), carved=np.asarray(cut, dtype=bool))
    shards = [i.as_dict() for i in infos]
    return {"prefix": prefix, "shards": shards, "docs": len(hashes), "empty": empty, "tokens": sum(i.tokens for i in infos)}


def _configure_ray_data() -> None:
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # raysweep prints one progress line per few seconds instead
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _shard_task(row: dict) -> dict:
    # a task holds one CPU: the tokenizer's thread pool would take every core in each task (N × N threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return {"result": json.dumps(tokenize_shard(json.loads(row["task"])))}


def run_tasks(tasks: list[dict], label: str, progress: dict, parallel: bool) -> list[dict]:
    """The shard tasks, side by side on every CPU of the cluster (Ray Data), with live progress;
    `parallel=False`: one after another in this process (no Ray needed)."""
    if parallel:
        import ray.data

        _configure_ray_data()
        items = [{"task": json.dumps(t)} for t in tasks]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map(_shard_task)
        results = (json.loads(row["result"]) for row in ds.iter_rows())
    else:
        results = (tokenize_shard(t) for t in tasks)
    out = []
    for result in results:
        out.append(result)
        progress["docs"] += result.get("docs", 0)
        progress["tokens"] += result.get("tokens", 0)
        progress["shards"] += 1
        report(label, progress)
    return out


def report(label: str, p: dict, force: bool = False) -> None:
    now = time.perf_counter()
    if not force and now - p["last"] < 5.0:
        return
    p["last"] = now
    dt = max(now - p["t0"], 1e-9)
    left = f", ~{(p['total'] - p['shards']) * dt / p['shards']:.0f}s left" if p["total"] and p["shards"] else ""
    print(
        f"[data] tokenizing {label}: {p['shards']}/{p['total'] or '?'} shards, {p['docs']:,} docs, {p['tokens']:,} tokens "
        f"({p['docs'] / dt:,.0f} docs/s, {p['tokens'] / dt / 1e3:,.0f}k tok/s{left})",
        flush=True,
    )
