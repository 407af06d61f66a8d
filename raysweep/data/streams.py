"""Ray Data pipelines: tokenize corpora, then mix, order and pack them into training streams.

Two steps, both cached on disk by content hash so a resumed or related study never redoes them:

1. `tokenize_split`: documents (parquet: id, text, hash) -> parquet rows (row, id, hash, tokens).
2. `build_stream`: selected token ranges of one or more tokenized corpora (raysweep.data.mixing:
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
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysweep.data.blocks import Stream, interleave_ranks, pack, piece, rank_blocks
from raysweep.data.mixing import Selection, available_tokens
from raysweep.data.tokenizer import eos_token, load_tokenizer
from raysweep.keys import file_digest, stream_key
from raysweep.storage import atomic_file, write_text


def _configure_ray_data() -> None:
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one raysweep line per step instead
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # bit-identical streams across builds
    ctx.enable_progress_bars = False  # raysweep prints its own one-line progress per step
    ctx.print_on_execution_start = False


def _write_table(table: pa.Table, path: Path) -> None:
    with atomic_file(path) as tmp:  # a file that exists is complete
        pq.write_table(table, tmp)


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(path: str):
    return load_tokenizer(Path(path))  # once per worker process, not once per batch


def _tokenize(batch: pa.Table, tokenizer_path: str) -> pa.Table:
    """Ray Data batch UDF: text -> token ids (int32), per document (no special tokens added)."""
    encodings = _cached_tokenizer(tokenizer_path).encode_batch(batch.column("text").to_pylist(), add_special_tokens=False)
    tokens = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
    return pa.table(
        {
            "row": batch.column("row"),
            "id": batch.column("id"),
            "hash": batch.column("hash"),
            "tokens": pa.array(tokens, type=pa.list_(pa.int32())),
        }
    )


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

    out = cache_dir / f"{label.replace('/', '-')}-{stream_key(file_digest(docs), file_digest(tokenizer_path))}.parquet"
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
                print(
                    f"[data] tokenizing {label}: {done:,}/{table.num_rows:,} docs ({rate:,.0f} docs/s, ~{(table.num_rows - done) / rate:.0f}s left)",
                    flush=True,
                )
        result = pa.concat_tables(batches).sort_by("row") if batches else _tokenize(table.slice(0, 0), str(tokenizer_path))
        _write_table(result, out)
        n = int(pc.sum(pc.list_value_length(result.column("tokens"))).as_py() or 0)
        dt = time.perf_counter() - t0
        print(f"[data] tokenized {label}: {table.num_rows:,} docs -> {n:,} tokens in {dt:.1f}s ({n / dt / 1e3:.0f}k tok/s)", flush=True)
    lengths = pq.read_table(out, columns=["tokens"]).column("tokens").combine_chunks().value_lengths()
    return TokenizedSplit(out, lengths.to_numpy(zero_copy_only=False).astype(np.int64))


def _cut(batch: pa.Table, eos_id: int) -> pa.Table:
    """Ray Data batch UDF: each selected document -> its selected piece."""
    toks, a, b = batch.column("tokens").to_pylist(), batch.column("start").to_numpy(), batch.column("stop").to_numpy()
    pieces = [piece(np.asarray(t, dtype=np.int32), int(x), int(y), eos_id) for t, x, y in zip(toks, a, b)]
    return pa.table({"order": batch.column("order"), "piece": pa.array(pieces, type=pa.list_(pa.int32()))})


def _ordered_pieces(parts: dict, labels: list[str], seed: int | None, eos_id: int) -> list[np.ndarray]:
    """Every selected piece of every part, in the stream's (seeded) order, cut by Ray Data tasks."""
    import ray.data

    ranks = interleave_ranks(labels, {s: len(parts[s][1]) for s in labels}, seed)
    datasets = []
    for source in labels:
        split, sel = parts[source]
        if not len(sel):
            continue
        table = pq.read_table(split.path, columns=["tokens"]).take(pa.array(sel.rows))
        table = (
            table.append_column("order", pa.array(ranks[source]))
            .append_column("start", pa.array(sel.start))
            .append_column("stop", pa.array(sel.stop))
        )
        datasets.append(ray.data.from_arrow(table))
    pieces: list[np.ndarray] = []
    if datasets:
        ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
        ds = ds.map_batches(_cut, fn_kwargs={"eos_id": eos_id}, batch_format="pyarrow", batch_size=4096).sort("order")
        # Packing happens in the caller, on the ordered pieces: cutting inside Ray Data's batches would
        # make the block boundaries depend on how the sort split its output (and so on free CPUs).
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            col = b.column("piece").combine_chunks()
            flat, offsets = col.values.to_numpy(), col.offsets.to_numpy()
            pieces += [flat[offsets[i] : offsets[i + 1]] for i in range(len(col))]
    return pieces


def _stream_stats(name: str, parts: dict, labels: list[str], n_blocks: int, block_len: int, seed: int | None, tokenizer_id: str) -> dict:
    """What a stream holds: blocks, tokens per source (exact: separators included, cut pieces
    counted as cut), the waste of the partial last block."""
    tokens = {s: parts[s][1].tokens for s in labels}
    total_tokens = sum(tokens.values())
    return {
        "name": name,
        "blocks": n_blocks,
        "block_len": block_len,
        "documents": {s: len(parts[s][1]) for s in labels},
        "tokens": tokens,
        "waste_tokens": total_tokens - n_blocks * block_len,
        "waste_fraction": (1.0 - n_blocks * block_len / total_tokens) if total_tokens else 0.0,
        "seed": seed,
        "tokenizer_id": tokenizer_id,
    }


def build_stream(
    name: str,
    parts: dict[str, tuple[TokenizedSplit, Selection]],
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
    block_len = seq_len + 1
    labels = sorted(parts)
    key = stream_key(name, seed, block_len, eos_id, tokenizer_id, *[(s, parts[s][0].path.name, parts[s][1].digest()) for s in labels])
    folder = cache_dir / f"{name}-{key}"
    path, stats_path = folder / "blocks.parquet", folder / "stats.json"
    if stats_path.exists():
        return Stream(path, json.loads(stats_path.read_text()))

    _configure_ray_data()
    t0 = time.perf_counter()
    pieces = _ordered_pieces(parts, labels, seed, eos_id)
    blocks = pack(pieces, block_len)
    table = pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(blocks.reshape(-1), pa.int32()), block_len)})

    stats = _stream_stats(name, parts, labels, table.num_rows, block_len, seed, tokenizer_id)
    _write_table(table, path)
    write_text(stats_path, json.dumps(stats, indent=1))
    dt = time.perf_counter() - t0
    share = ", ".join(f"{s} {n:,}" for s, n in stats["tokens"].items())
    print(
        f"[data] stream {name}: {stats['blocks']:,} blocks of {block_len} ({share} tokens; waste {stats['waste_fraction']:.2%}) in {dt:.1f}s",
        flush=True,
    )
    return Stream(path, stats)


def put_rank_blocks(stream: Stream, batch_size: int, world: int) -> list:
    """rank_blocks in Ray's object store (one ObjectRef per rank): a worker on any node of the
    cluster reads its rows from there without copying them (zero-copy numpy), and no read task
    has to run while the Train workers hold every CPU."""
    import ray

    return [ray.put(b) for b in rank_blocks(stream, batch_size, world)]


def eos_id(tokenizer_path: Path) -> int:
    return load_tokenizer(tokenizer_path).token_to_id(eos_token(tokenizer_path))
