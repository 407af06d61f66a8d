"""Streams as plans over token shards: which pieces of which documents, in which order.

A stream is never a copy of its tokens. Its plan is an ordered list of pieces, each a run of one
document's tokens in a shard file (file, position, count) plus, where the piece ends its document,
the separator (EOS); block b of the stream is tokens [b·L, (b+1)·L) of the pieces laid end to end
(L = seq_len + 1), gathered from the memory-mapped shards when it is read. So D_pre's tokens are
stored once however many arms read them, the driver builds a plan from the length index alone
(O(documents)), and a worker reads only its own rows, a batch at a time. `raysweep.data.blocks.reference_blocks` is
the specification every plan reproduces byte for byte.

    <cache>/streams/<name>-<key>/  plan.json (shard files, dtype, EOS, block length)
                                   file.npy pos.npy count.npy eos.npy ends.npy (per piece)
                                   stats.json (written last: the plan is complete)

A stream read for more than one pass (stage 2 repeats D_post up to its token cap) takes every
pass after the first in a fresh seeded order of its blocks (`StreamRows`); the rows of a step are
the same whatever the number of workers (rank r takes its slice of every global batch), and the
position is the step counter alone, so a resumed run continues at the exact next row.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.data.blocks import ARRAYS, Stream, interleave_ranks, rank_slice
from raysweep.store.keys import array_digest, derive_seed, stream_key
from raysweep.store.storage import atomic_file, write_text

PLAN_FILE = "plan.json"


def _save(folder: Path, name: str, array: np.ndarray) -> None:
    with atomic_file(folder / f"{name}.npy") as tmp, tmp.open("wb") as f:
        np.save(f, array)


def _pieces(parts: dict, labels: list[str], seed: int | None) -> tuple[dict, list[tuple]]:
    """Every selected piece, placed at its rank in the stream: (file, pos, count, eos) arrays, and
    the shard files they read (folder, name, sha256, bytes)."""
    ranks = interleave_ranks(labels, {s: len(parts[s][1]) for s in labels}, seed)
    total = sum(len(parts[s][1]) for s in labels)
    out = {
        "file": np.zeros(total, np.int32),
        "pos": np.zeros(total, np.int64),
        "count": np.zeros(total, np.int32),
        "eos": np.zeros(total, bool),
    }
    files: list[tuple] = []
    for source in labels:
        view, sel = parts[source]
        table = {}
        for i, name in enumerate(view.files):
            entry = (str(view.folder), name, view.file_sha256[i])
            table[i] = files.index(entry) if entry in files else len(files)
            if table[i] == len(files):
                files.append(entry)
        rows = np.asarray(sel.rows, dtype=np.int64)
        length = view.lengths[rows]
        start, stop = np.asarray(sel.start, np.int64), np.asarray(sel.stop, np.int64)
        at = ranks[source]
        lookup = np.array([table[i] for i in range(len(view.files))], dtype=np.int32)
        out["file"][at] = lookup[view.file_ix[rows]]
        out["pos"][at] = view.offset[rows] + start
        out["count"][at] = np.maximum(0, np.minimum(stop, length) - start)
        out["eos"][at] = stop > length  # the piece ends its document: the separator follows
    return out, files


def _content(pieces: dict, plan: dict) -> str:
    """What a stream holds, by content: its pieces and the SHA-256 of every shard they read."""
    return array_digest(
        *(pieces[a] for a in ARRAYS), header=json.dumps([f["sha256"] for f in plan["files"]] + [plan["eos_id"], plan["block_len"]])
    )


def _cached_plan(folder: Path) -> Stream | None:
    """A plan built before, if it is complete and its pieces still hash to its content digest (a
    flipped bit in a cached plan would silently train on other tokens: the plan is made again)."""
    if not (folder / "stats.json").exists():
        return None
    stats = json.loads((folder / "stats.json").read_text())
    try:
        plan = json.loads((folder / PLAN_FILE).read_text())
        pieces = {a: np.load(folder / f"{a}.npy") for a in ARRAYS}
        ok = _content(pieces, plan) == stats.get("content")
    except (OSError, ValueError, KeyError) as e:
        ok, why = False, f"unreadable ({e})"
    else:
        why = "its pieces do not match its content digest"
    if ok:
        return Stream(folder / PLAN_FILE, stats)
    print(f"[data] stream {folder.name}: cached plan {why}; planning it again", flush=True)
    shutil.rmtree(folder)
    return None


def build_plan(name: str, parts: dict, seed: int | None, seq_len: int, eos_id: int, cache_dir: Path, tokenizer_id: str = "") -> Stream:
    """The plan of one stream: the selected pieces of each part, interleaved by `seed` (None: in
    order, for held-out sets), cut into blocks of seq_len + 1.

    parts: {source label: (raysweep.data.corpus.TokenView, raysweep.data.mixing.Selection)}."""
    block_len = seq_len + 1
    labels = sorted(parts)
    key = stream_key(name, seed, block_len, eos_id, tokenizer_id, *[(s, parts[s][0].digest, parts[s][1].digest()) for s in labels])
    folder = cache_dir / f"{name}-{key}"
    if (cached := _cached_plan(folder)) is not None:
        return cached
    t0 = time.perf_counter()
    dtypes = {parts[s][0].dtype for s in labels}
    if len(dtypes) > 1:
        raise ValueError(f"stream {name}: its parts were tokenized into different dtypes {sorted(dtypes)}")
    pieces, files = _pieces(parts, labels, seed)
    pieces["ends"] = np.cumsum(pieces["count"].astype(np.int64) + pieces["eos"])
    total = int(pieces["ends"][-1]) if len(pieces["ends"]) else 0
    n_blocks = total // block_len
    folder.mkdir(parents=True, exist_ok=True)
    shard_files = [
        {"path": os.path.relpath(Path(f) / f"{n}.tokens", folder), "sha256": sha, "bytes": (Path(f) / f"{n}.tokens").stat().st_size}
        for f, n, sha in files
    ]
    plan = {
        "files": shard_files,
        "dtype": dtypes.pop() if dtypes else "uint16",
        "eos_id": eos_id,
        "block_len": block_len,
        "pieces": len(pieces["ends"]),
    }
    for a in ARRAYS:
        _save(folder, a, pieces[a])
    write_text(folder / PLAN_FILE, json.dumps(plan, indent=1))
    tokens = {s: parts[s][1].tokens for s in labels}  # exact: separators included, cut pieces counted as cut
    stats = {
        "name": name,
        "blocks": n_blocks,
        "block_len": block_len,
        "documents": {s: len(parts[s][1]) for s in labels},
        "tokens": tokens,
        "waste_tokens": total - n_blocks * block_len,
        "waste_fraction": (1.0 - n_blocks * block_len / total) if total else 0.0,
        "seed": seed,
        "tokenizer_id": tokenizer_id,
        # what the stream holds, by content: its pieces and the SHA-256 of every shard they read
        "content": _content(pieces, plan),
    }
    write_text(folder / "stats.json", json.dumps(stats, indent=1))  # last: a folder with stats.json is a complete plan
    share = ", ".join(f"{s} {n:,}" for s, n in tokens.items())
    print(
        f"[data] stream {name}: {n_blocks:,} blocks of {block_len} ({share} tokens; waste {stats['waste_fraction']:.2%}) "
        f"planned in {time.perf_counter() - t0:.2f}s",
        flush=True,
    )
    return Stream(folder / PLAN_FILE, stats)


class StreamReader:
    """Reads blocks of a planned stream from its shards (a worker's view of a stream).

    Tokens are read with positional reads (`os.pread`) rather than a memory map: the page cache
    serves them either way, but a map counts every page a worker has touched in its resident
    memory, and a run reading a billion tokens would look like it held them all. So a worker holds
    its plan (O(documents), mapped) and one batch."""

    def __init__(self, plan_file: str | Path):
        self.folder = Path(plan_file).parent
        plan = json.loads(Path(plan_file).read_text())
        self.stats = json.loads((self.folder / "stats.json").read_text())
        self.block_len, self.eos_id, self.dtype = plan["block_len"], plan["eos_id"], np.dtype(plan["dtype"])
        self.n_blocks = self.stats["blocks"]
        self.paths = [(self.folder / f["path"]).resolve() for f in plan["files"]]
        for path, f in zip(self.paths, plan["files"]):  # cheap: a shard cut short is never read as if whole
            if not path.is_file() or path.stat().st_size != f["bytes"]:
                raise FileNotFoundError(
                    f"stream {self.folder.name}: shard {path} is missing or not {f['bytes']:,} bytes; prepare the study again"
                )
        # mapped (O(documents), shared by every run), viewed as plain arrays: slicing a np.memmap costs ≈ 5 µs
        self.arrays = {a: np.load(self.folder / f"{a}.npy", mmap_mode="r").view(np.ndarray) for a in ARRAYS}
        self._fds: dict[int, int] = {}

    def _read(self, i: int, start: int, count: int) -> np.ndarray:
        """`count` token ids of shard file i from token position `start`."""
        if i not in self._fds:
            self._fds[i] = os.open(self.paths[i], os.O_RDONLY)
        size = self.dtype.itemsize
        return np.frombuffer(os.pread(self._fds[i], count * size, start * size), dtype=self.dtype)

    def block(self, b: int) -> np.ndarray:
        """Tokens [b·L, (b+1)·L) of the stream, as int64."""
        L, out = self.block_len, np.empty(self.block_len, dtype=np.int64)
        ends = self.arrays["ends"]
        first = int(np.searchsorted(ends, b * L, side="right"))
        last = int(np.searchsorted(ends, (b + 1) * L, side="left"))  # the piece holding the block's last token
        sl = slice(first, last + 1)
        file, pos, count, eos, end = (self.arrays[a][sl].tolist() for a in ARRAYS)
        t, filled = b * L, 0
        for f, p, c, e, stop in zip(file, pos, count, eos, end):
            off = t - (stop - c - e)  # where the block's next token lies within this piece
            if off < c:
                k = min(c - off, L - filled)
                out[filled : filled + k] = self._read(f, p + off, k)
                filled, t, off = filled + k, t + k, off + k
            if filled < L and e and off == c:
                out[filled] = self.eos_id
                filled, t = filled + 1, t + 1
            if filled == L:
                break
        return out

    def blocks(self, rows) -> np.ndarray:
        """(len(rows), L) int64: the given blocks, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.block_len), dtype=np.int64)
        for i, b in enumerate(rows.tolist()):
            out[i] = self.block(b)
        return out

    def __del__(self, _close=os.close):  # os.close bound now: at interpreter exit the module may be gone
        for fd in getattr(self, "_fds", {}).values():
            _close(fd)


@functools.lru_cache(maxsize=16)
def open_stream(plan_file: str) -> StreamReader:
    """A process's reader of a stream (opened once: its memory maps are shared by every run)."""
    return StreamReader(plan_file)


def sample_blocks(stream: Stream | str | Path, max_tokens: int) -> np.ndarray:
    """A held-out set as evaluations score it: all its blocks, or a seeded sample of them up to
    `max_tokens` tokens, drawn from the whole set (the first tokens in file order came from one
    file, the first chapters). The same sample for every run that evaluates on the stream."""
    reader = StreamReader(stream.path if isinstance(stream, Stream) else stream)
    n = min(reader.n_blocks, max(1, max_tokens // reader.block_len))
    if n == reader.n_blocks:
        return reader.blocks(np.arange(n))
    rng = np.random.default_rng(derive_seed(reader.stats.get("seed") or 0, "heldout", reader.folder.name))
    return reader.blocks(np.sort(rng.choice(reader.n_blocks, size=n, replace=False)))


def read_blocks(stream: Stream | str | Path, max_tokens: int | None = None) -> np.ndarray:
    """A stream's first blocks as an int64 array (n_blocks, block_len): all of them, or at most
    `max_tokens` tokens' worth (held-out evaluation sets)."""
    reader = StreamReader(stream.path if isinstance(stream, Stream) else stream)
    n = reader.n_blocks if max_tokens is None else min(reader.n_blocks, max(1, max_tokens // reader.block_len))
    return reader.blocks(np.arange(n))


@dataclass(frozen=True)
class StreamSource:
    """What a worker is handed for a stream: its plan file (a path, a few bytes; never its rows).
    With `mirror` (the study's node store holds a copy of the data cache, `publish`), a worker on a
    machine that cannot see `plan_file` fetches the plan and its shards once into its local cache."""

    plan_file: str
    mirror: str | None = None  # <checkpoint_dir>/data: the object-store copy of the data cache
    rel: str | None = None  # plan_file relative to the data cache (its place in the mirror)

    def local_plan(self) -> str:
        if self.mirror is None or Path(self.plan_file).exists():
            return self.plan_file
        from raysweep.data.mirror import fetch

        return str(fetch(self.mirror, self.rel))

    def rows_for(self, batch_size: int, world: int, rank: int) -> StreamRows:
        return StreamRows(open_stream(self.local_plan()), batch_size, world, rank)


def source_of(stream: Stream, cache_root: Path, mirror: str | None) -> StreamSource:
    """The StreamSource a worker gets for a stream of the data cache at `cache_root`."""
    rel = Path(stream.path).resolve().relative_to(Path(cache_root).resolve()).as_posix() if mirror else None
    return StreamSource(str(stream.path), mirror, rel)


class StreamRows:
    """One rank's rows of a stream, step by step: global step s of pass p takes the stream's rows
    [k·B, (k+1)·B) in the pass's order (k = s mod steps per pass), and rank r takes its slice
    [r·B/W, (r+1)·B/W) of them, so the ranks' batches concatenated are the one-worker batch. Every
    pass, the first included, is a permutation seeded by the stream's seed and p: a batch mixes
    blocks from across the stream (in the stream's own order a first-pass batch held a few
    consecutive documents; in stage 3 often one). The tail shorter than one global batch is left
    out of every pass, so the blocks a pass trains on, and the shares of a mixed stream, are those
    of the plan."""

    def __init__(self, reader: StreamReader, batch_size: int, world: int, rank: int):
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} does not divide over {world} workers")
        self.reader, self.batch_size, self.world, self.rank = reader, batch_size, world, rank
        self.per = batch_size // world
        self.steps_per_pass = reader.n_blocks // batch_size
        if self.steps_per_pass == 0:
            raise ValueError(f"stream {reader.folder.name}: {reader.n_blocks} blocks hold less than one batch of {batch_size}")
        self.seed = reader.stats.get("seed") or 0
        self._orders: dict[int, np.ndarray] = {}

    def order(self, p: int) -> np.ndarray:
        """The rows of pass p, in its order (made once per pass: steps_per_pass·B int32)."""
        if p not in self._orders:
            self._orders = {
                p: np.random.default_rng(derive_seed(self.seed, "pass", p))
                .permutation(self.steps_per_pass * self.batch_size)
                .astype(np.int32)
            }
        return self._orders[p]

    def rows(self, step: int) -> np.ndarray:
        p, k = divmod(step, self.steps_per_pass)
        return self.order(p)[rank_slice(k, self.batch_size, self.world, self.rank)]

    def batch(self, step: int) -> np.ndarray:
        """(B/W, L) int64: this rank's rows of global step `step`."""
        return self.reader.blocks(self.rows(step))
