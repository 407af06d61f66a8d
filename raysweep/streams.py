"""Ray Data pipelines: tokenize corpora, then mix, order and pack them into training streams.

Two steps, both cached on disk by content hash so a resumed or related study never redoes them:

1. `tokenize_split`: documents (parquet: id, text, hash) -> parquet rows (row, id, hash, tokens).
2. `build_stream`: selected token ranges of one or more tokenized corpora (raysweep.mixing:
   exact to the token) -> each document cut to its piece (a Ray Data task) -> a seeded uniform
   interleave (a sort on a precomputed rank, so the order is the same on every run and every
   worker count) -> pieces joined (each document ends with its EOS separator) and cut into
   fixed-length blocks of seq_len + 1 tokens (inputs and shifted targets) -> one parquet file,
   with stats.json saying how many tokens came from each source and how many were wasted.
   The cutting (`pack`) runs on the ordered pieces in the driver, so block boundaries never
   depend on Ray's batching. `reference_blocks` is the same stream in plain numpy: the
   specification the Ray path is tested against byte for byte.

Feeding Train workers: `rank_rows` gives each rank its slice of every global batch, so the data
of a step is the same with 1 or N workers; each rank's rows go into Ray's object store once per
tree run (`put_rank_blocks`) and the worker slices batches out of them. (An earlier version fed
each rank an in-memory Ray Dataset; its iterator cost ≈ 1 s before every run's first batch and
≈ 0.5 ms per batch, which warm worker slots running many short runs would pay again and again.)
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysweep.mixing import Selection, available_tokens
from raysweep.tokenizer import eos_token, file_digest, load_tokenizer


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
    """Ray Data batch UDF: text -> token ids (int32), per document (no special tokens added)."""
    encodings = _cached_tokenizer(tokenizer_path).encode_batch(batch.column("text").to_pylist(), add_special_tokens=False)
    tokens = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
    return pa.table({
        "row": batch.column("row"),
        "id": batch.column("id"),
        "hash": batch.column("hash"),
        "tokens": pa.array(tokens, type=pa.list_(pa.int32())),
    })


@dataclass(frozen=True)
class TokenizedSplit:
    """One corpus split as token ids, one row per document, rows numbered in file order."""

    path: Path
    lengths: np.ndarray  # tokens per document (without separator)

    @property
    def n_tokens(self) -> int:
        """Tokens this split offers to budgets: documents plus one separator each."""
        return available_tokens(self.lengths)


def tokenize_split(docs: Path, tokenizer_path: Path, cache_dir: Path, label: str) -> TokenizedSplit:
    """Documents (a parquet file of id, text, hash) -> token ids, with Ray Data tasks."""
    import ray.data

    out = cache_dir / f"{label.replace('/', '-')}-{_key(file_digest(docs), file_digest(tokenizer_path))}.parquet"
    if not out.exists():
        _configure_ray_data()
        t0 = time.perf_counter()
        table = pq.read_table(docs, columns=["id", "text", "hash"])
        table = table.append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        # Task UDFs, not actor pools: an actor holds its CPU for the whole job, and several
        # jobs at once (prepare runs them side by side) can then deadlock on a small machine.
        ds = ray.data.from_arrow(table).map_batches(
            _tokenize, fn_kwargs={"tokenizer_path": str(tokenizer_path)}, batch_format="pyarrow", batch_size=1024
        )
        batches, done, last = [], 0, time.perf_counter()
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            batches.append(b)
            done += b.num_rows
            if time.perf_counter() - last > 5.0 and done < table.num_rows:  # live progress on big corpora
                last, rate = time.perf_counter(), done / (time.perf_counter() - t0)
                print(f"[data] tokenizing {label}: {done:,}/{table.num_rows:,} docs ({rate:,.0f} docs/s, ~{(table.num_rows - done) / rate:.0f}s left)", flush=True)
        result = pa.concat_tables(batches).sort_by("row") if batches else _tokenize(table.slice(0, 0), str(tokenizer_path))
        _write_table(result, out)
        n = int(pc.sum(pc.list_value_length(result.column("tokens"))).as_py() or 0)
        dt = time.perf_counter() - t0
        print(f"[data] tokenized {label}: {table.num_rows:,} docs -> {n:,} tokens in {dt:.1f}s ({n / dt / 1e3:.0f}k tok/s)", flush=True)
    lengths = pq.read_table(out, columns=["tokens"]).column("tokens").combine_chunks().value_lengths()
    return TokenizedSplit(out, lengths.to_numpy(zero_copy_only=False).astype(np.int64))


def pack(pieces: list[np.ndarray], block_len: int) -> np.ndarray:
    """Pieces in order (each already ending with its separator, unless cut) -> (n_blocks, block_len).

    One concatenation, then fixed cuts: the blocks depend only on the pieces and their order,
    never on how Ray happened to batch them. The partial tail is dropped (waste < one block).
    """
    if not pieces:
        return np.zeros((0, block_len), dtype=np.int32)
    flat = np.concatenate([np.asarray(p, dtype=np.int32) for p in pieces])
    n_blocks = len(flat) // block_len
    return flat[: n_blocks * block_len].reshape(n_blocks, block_len)


def pack_documents(docs: list[np.ndarray], block_len: int, eos_id: int) -> np.ndarray:
    """Whole documents in order -> blocks, an EOS separator after every document."""
    eos = np.array([eos_id], dtype=np.int32)
    return pack([np.concatenate([np.asarray(d, dtype=np.int32), eos]) for d in docs], block_len)


def piece(tokens: np.ndarray, start: int, stop: int, eos_id: int) -> np.ndarray:
    """Tokens [start, stop) of a document's (tokens + separator) sequence."""
    tokens = np.asarray(tokens, dtype=np.int32)
    if stop <= len(tokens):
        return tokens[start:stop]
    return np.concatenate([tokens[start:], np.array([eos_id], dtype=np.int32)])


def interleave_ranks(labels: list[str], counts: dict[str, int], seed: int | None) -> dict[str, np.ndarray]:
    """The position in the stream of every selected piece, per source: a seeded uniform interleave
    (a permutation of all pieces), or file order when seed is None."""
    total = sum(counts[s] for s in labels)
    ranks = np.arange(total) if seed is None else np.random.default_rng(seed).permutation(total)
    out, offset = {}, 0
    for s in labels:
        out[s] = ranks[offset: offset + counts[s]]
        offset += counts[s]
    return out


def reference_blocks(docs: dict[str, list[np.ndarray]], selections: dict, seed: int | None, block_len: int, eos_id: int) -> np.ndarray:
    """The stream `build_stream` must produce, in plain numpy: the specification it is tested against."""
    labels = sorted(selections)
    ranks = interleave_ranks(labels, {s: len(selections[s]) for s in labels}, seed)
    placed = {}
    for s in labels:
        sel = selections[s]
        for i, (r, a, b) in enumerate(zip(sel.rows, sel.start, sel.stop)):
            placed[int(ranks[s][i])] = piece(docs[s][r], a, b, eos_id)
    return pack([placed[k] for k in sorted(placed)], block_len)


def _cut(batch: pa.Table, eos_id: int) -> pa.Table:
    """Ray Data batch UDF: each selected document -> its selected piece."""
    toks, a, b = batch.column("tokens").to_pylist(), batch.column("start").to_numpy(), batch.column("stop").to_numpy()
    pieces = [piece(np.asarray(t, dtype=np.int32), int(x), int(y), eos_id) for t, x, y in zip(toks, a, b)]
    return pa.table({"order": batch.column("order"), "piece": pa.array(pieces, type=pa.list_(pa.int32()))})


@dataclass(frozen=True)
class Stream:
    """A packed training or evaluation stream on disk, with what went into it."""

    path: Path
    stats: dict  # blocks, block_len, tokens per source, waste fraction, tokenizer

    @property
    def n_blocks(self) -> int:
        return self.stats["blocks"]


def build_stream(
    name: str,
    parts: dict[str, tuple[TokenizedSplit, "Selection"]],
    seed: int | None,
    seq_len: int,
    eos_id: int,
    cache_dir: Path,
    tokenizer_id: str = "",
) -> Stream:
    """Pack the selected pieces of each part into one stream.

    parts: {source label: (tokenized split, Selection of its documents' tokens)}.
    seed: the interleave of all pieces is a permutation fixed by this seed;
          None keeps file order (held-out evaluation sets).
    """
    import ray.data

    block_len = seq_len + 1
    labels = sorted(parts)
    key = _key(name, seed, block_len, eos_id, tokenizer_id, *[(s, parts[s][0].path.name, parts[s][1].digest()) for s in labels])
    folder = cache_dir / f"{name}-{key}"
    path, stats_path = folder / "blocks.parquet", folder / "stats.json"
    if stats_path.exists():
        return Stream(path, json.loads(stats_path.read_text()))

    _configure_ray_data()
    t0 = time.perf_counter()
    ranks = interleave_ranks(labels, {s: len(parts[s][1]) for s in labels}, seed)
    datasets = []
    for source in labels:
        split, sel = parts[source]
        if not len(sel):
            continue
        table = pq.read_table(split.path, columns=["tokens"]).take(pa.array(sel.rows))
        table = table.append_column("order", pa.array(ranks[source])).append_column("start", pa.array(sel.start)).append_column("stop", pa.array(sel.stop))
        datasets.append(ray.data.from_arrow(table))
    pieces: list[np.ndarray] = []
    if datasets:
        ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
        ds = ds.map_batches(_cut, fn_kwargs={"eos_id": eos_id}, batch_format="pyarrow", batch_size=4096).sort("order")
        # Packing happens here, on the ordered pieces: cutting inside Ray Data's batches would make
        # the block boundaries depend on how the sort split its output (and so on free CPUs).
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            col = b.column("piece").combine_chunks()
            flat, offsets = col.values.to_numpy(), col.offsets.to_numpy()
            pieces += [flat[offsets[i]: offsets[i + 1]] for i in range(len(col))]
    blocks = pack(pieces, block_len)
    table = pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(blocks.reshape(-1), pa.int32()), block_len)})

    tokens = {s: parts[s][1].tokens for s in labels}  # exact: separators included, cut pieces counted as cut
    total_tokens = sum(tokens.values())
    stats = {
        "name": name,
        "blocks": table.num_rows,
        "block_len": block_len,
        "documents": {s: len(parts[s][1]) for s in labels},
        "tokens": tokens,
        "waste_tokens": total_tokens - table.num_rows * block_len,
        "waste_fraction": (1.0 - table.num_rows * block_len / total_tokens) if total_tokens else 0.0,
        "seed": seed,
        "tokenizer_id": tokenizer_id,
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


def rank_rows(n_blocks: int, batch_size: int, world: int, rank: int) -> np.ndarray:
    """The stream rows rank `rank` of `world` trains on, in order, one local batch after another.

    Global step s uses rows [s·B, (s+1)·B); rank r takes its slice [r·B/W, (r+1)·B/W) of each.
    So the ranks' local batches, concatenated in rank order, are exactly the one-worker batch
    of the same step: the data a run sees does not depend on how many workers it has.
    The tail shorter than one global batch is left out of every epoch.
    """
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} does not divide over {world} workers")
    per = batch_size // world
    steps = n_blocks // batch_size
    base = np.arange(steps, dtype=np.int64)[:, None] * batch_size + rank * per
    return (base + np.arange(per, dtype=np.int64)[None, :]).reshape(-1)


def rank_blocks(stream: Stream, batch_size: int, world: int) -> list[np.ndarray]:
    """Each rank's rows of the stream (see rank_rows), in the order it trains on them."""
    blocks = read_blocks(stream)
    return [blocks[rank_rows(len(blocks), batch_size, world, r)] for r in range(world)]


def put_rank_blocks(stream: Stream, batch_size: int, world: int) -> list:
    """rank_blocks in Ray's object store (one ObjectRef per rank): a worker on any node of the
    cluster reads its rows from there without copying them (zero-copy numpy), and no read task
    has to run while the Train workers hold every CPU."""
    import ray

    return [ray.put(b) for b in rank_blocks(stream, batch_size, world)]


def eos_id(tokenizer_path: Path) -> int:
    return load_tokenizer(tokenizer_path).token_to_id(eos_token(tokenizer_path))
