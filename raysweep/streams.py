"""Ray Data pipelines: tokenize corpora, then mix, order and pack them into training streams.

Two steps, both cached on disk by content hash so a resumed or related study never redoes them:

1. `tokenize_split`: jsonl documents -> parquet rows (row, id, tokens), one row per document.
2. `build_stream`: chosen rows of one or more tokenized corpora (chosen by raysweep.mixing, exact
   to one document) -> a seeded interleave (a sort on a precomputed rank, so the order is the
   same on every run and every worker count) -> documents joined with EOS and cut into
   fixed-length blocks of seq_len + 1 tokens (inputs and shifted targets) -> one parquet file.
   The cutting (`pack_documents`) runs on the ordered documents in the driver, so block
   boundaries never depend on Ray's batching; at CPU scale that costs well under a second.

Stream files are small enough at CPU scale to hand to Ray Train as in-memory datasets
(`as_train_dataset`), which needs no CPU for read tasks while the Train workers hold every CPU.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.tokenizer import EOS, file_digest, load_tokenizer


def _configure_ray_data() -> None:
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one raysweep line per step instead
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # bit-identical streams across builds
    ctx.enable_progress_bars = False  # raysweep prints its own one-line progress per step
    ctx.print_on_execution_start = False


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)  # atomic: a file that exists is complete


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(path: str):
    return load_tokenizer(Path(path))  # once per worker process, not once per batch


def _tokenize(batch: pa.Table, tokenizer_path: str) -> pa.Table:
    """Ray Data batch UDF: text -> token ids (int32), per document."""
    encodings = _cached_tokenizer(tokenizer_path).encode_batch(batch.column("text").to_pylist())
    tokens = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
    return pa.table({
        "row": batch.column("row"),
        "id": batch.column("id"),
        "tokens": pa.array(tokens, type=pa.list_(pa.int32())),
    })


@dataclass(frozen=True)
class TokenizedSplit:
    """One corpus split as token ids, one row per document, rows numbered in file order."""

    path: Path
    lengths: np.ndarray  # tokens per document (without separator)

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


def tokenize_split(jsonl: Path, tokenizer_path: Path, cache_dir: Path, label: str) -> TokenizedSplit:
    import ray.data

    out = cache_dir / f"{label.replace('/', '-')}-{_key(file_digest(jsonl), file_digest(tokenizer_path))}.parquet"
    if not out.exists():
        _configure_ray_data()
        t0 = time.perf_counter()
        rows = [json.loads(line) for line in jsonl.open(encoding="utf-8")]
        table = pa.table({"row": np.arange(len(rows), dtype=np.int64), "id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
        # Task UDFs, not actor pools: an actor holds its CPU for the whole job, and several
        # jobs at once (prepare runs them side by side) can then deadlock on a small machine.
        ds = ray.data.from_arrow(table).map_batches(
            _tokenize, fn_kwargs={"tokenizer_path": str(tokenizer_path)}, batch_format="pyarrow", batch_size=1024
        )
        result = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None))).sort_by("row")
        _write_table(result, out)
        n = sum(len(t) for t in result.column("tokens").to_pylist())
        dt = time.perf_counter() - t0
        print(f"[data] tokenized {label}: {len(rows):,} docs -> {n:,} tokens in {dt:.1f}s ({n / dt / 1e3:.0f}k tok/s)", flush=True)
    lengths = pq.read_table(out, columns=["tokens"]).column("tokens").combine_chunks().value_lengths()
    return TokenizedSplit(out, lengths.to_numpy(zero_copy_only=False).astype(np.int64))


def pack_documents(docs: list[np.ndarray], block_len: int, eos_id: int) -> np.ndarray:
    """Documents in order -> (n_blocks, block_len) int32, EOS after every document.

    One concatenation, then fixed cuts: the blocks depend only on the documents and their
    order, never on how Ray happened to batch them. The partial tail is dropped (waste).
    """
    if not docs:
        return np.zeros((0, block_len), dtype=np.int32)
    eos = np.array([eos_id], dtype=np.int32)
    flat = np.concatenate([piece for d in docs for piece in (np.asarray(d, dtype=np.int32), eos)])
    n_blocks = len(flat) // block_len
    return flat[: n_blocks * block_len].reshape(n_blocks, block_len)


@dataclass(frozen=True)
class Stream:
    """A packed training or evaluation stream on disk, with what went into it."""

    path: Path
    stats: dict  # blocks, block_len, tokens per source, waste fraction

    @property
    def n_blocks(self) -> int:
        return self.stats["blocks"]


def build_stream(
    name: str,
    parts: dict[str, tuple[TokenizedSplit, np.ndarray]],
    seed: int | None,
    seq_len: int,
    eos_id: int,
    cache_dir: Path,
) -> Stream:
    """Pack the chosen documents of each part into one stream.

    parts: {source label: (tokenized split, indices of the chosen rows)}.
    seed: the interleave of all chosen documents is a permutation fixed by this seed;
          None keeps file order (held-out evaluation sets).
    """
    import ray.data

    block_len = seq_len + 1
    labels = sorted(parts)
    key = _key(name, seed, block_len, eos_id, *[(s, parts[s][0].path.name, hashlib.sha256(np.ascontiguousarray(parts[s][1]).tobytes()).hexdigest()) for s in labels])
    folder = cache_dir / f"{name}-{key}"
    path, stats_path = folder / "blocks.parquet", folder / "stats.json"
    if stats_path.exists():
        return Stream(path, json.loads(stats_path.read_text()))

    _configure_ray_data()
    t0 = time.perf_counter()
    # Global rank of every chosen document in the interleaved stream (pure numpy, seeded).
    total = sum(len(parts[s][1]) for s in labels)
    ranks = np.arange(total) if seed is None else np.random.default_rng(seed).permutation(total)
    datasets, offset = [], 0
    for source in labels:
        split, chosen = parts[source]
        rank_of_row = np.full(len(split.lengths), -1, dtype=np.int64)
        rank_of_row[chosen] = ranks[offset : offset + len(chosen)]
        offset += len(chosen)
        table = pq.read_table(split.path, columns=["row", "tokens"])
        order = rank_of_row[table.column("row").to_numpy()]
        keep = order >= 0
        table = table.filter(pa.array(keep)).append_column("order", pa.array(order[keep]))
        datasets.append(ray.data.from_arrow(table))
    ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
    if seed is not None:
        ds = ds.sort("order")
    # Packing happens here, on the ordered documents: cutting inside Ray Data's batches would make
    # the block boundaries depend on how the sort split its output (and so on free CPUs).
    docs = [np.asarray(t, dtype=np.int32) for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) for t in b.column("tokens").to_pylist()]
    blocks = pack_documents(docs, block_len, eos_id)
    table = pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(blocks.reshape(-1), pa.int32()), block_len)})

    tokens = {s: int(parts[s][0].lengths[parts[s][1]].sum() + len(parts[s][1])) for s in labels}  # + one EOS per doc
    total_tokens = sum(tokens.values())
    stats = {
        "name": name,
        "blocks": table.num_rows,
        "block_len": block_len,
        "documents": {s: int(len(parts[s][1])) for s in labels},
        "tokens": tokens,  # tokens per source going into packing, separators included
        "waste_fraction": (1.0 - table.num_rows * block_len / total_tokens) if total_tokens else 0.0,
        "seed": seed,
    }
    _write_table(table, path)
    stats_path.write_text(json.dumps(stats, indent=1))
    dt = time.perf_counter() - t0
    share = ", ".join(f"{s} {n:,}" for s, n in tokens.items())
    print(f"[data] stream {name}: {stats['blocks']:,} blocks of {block_len} ({share} tokens; waste {stats['waste_fraction']:.2%}) in {dt:.1f}s", flush=True)
    return Stream(path, stats)


def read_blocks(stream: Stream | Path, max_tokens: int | None = None) -> np.ndarray:
    """The stream's blocks as an int64 array (n_blocks, block_len); at most max_tokens tokens' worth."""
    path = stream.path if isinstance(stream, Stream) else Path(stream)
    col = pq.read_table(path, columns=["input_ids"]).column("input_ids").combine_chunks()
    block_len = col.type.list_size
    blocks = col.flatten().to_numpy().reshape(-1, block_len).astype(np.int64)
    if max_tokens is not None:
        blocks = blocks[: max(1, max_tokens // block_len)]
    return blocks


def as_train_dataset(stream: Stream):
    """The stream as a Ray Dataset whose blocks already sit in the object store (see module doc)."""
    import ray.data

    _configure_ray_data()
    return ray.data.from_arrow(pq.read_table(stream.path))


def eos_id(tokenizer_path: Path) -> int:
    return load_tokenizer(tokenizer_path).token_to_id(EOS)
