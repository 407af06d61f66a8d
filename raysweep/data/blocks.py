"""Streams as blocks of token ids, specified in plain numpy: how pieces of documents are packed
into blocks of seq_len + 1 tokens (`pack`), the whole stream a selection and a seed make
(`reference_blocks`, the specification raysweep.data.streams reproduces byte for byte), and the rows
each rank of a worker group trains on (`rank_rows`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the arrays a stream plan keeps beside plan.json, one .npy each (raysweep.data.streams)
ARRAYS = ("file", "pos", "count", "eos", "ends")


@dataclass(frozen=True)
class Stream:
    """A training or evaluation stream: its plan on disk (raysweep.data.streams), and what went into it."""

    path: Path  # the plan's plan.json; its folder holds the rest of the plan
    stats: dict  # blocks, block_len, tokens per source, waste fraction, seed, tokenizer, content digest

    @property
    def n_blocks(self) -> int:
        return self.stats["blocks"]


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
        out[s] = ranks[offset : offset + counts[s]]
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


def rank_slice(k: int, batch_size: int, world: int, rank: int) -> slice:
    """The positions rank `rank` of `world` takes in the k-th batch of a pass: its slice
    [k·B + r·B/W, k·B + (r+1)·B/W) (the rule `rank_rows` and raysweep.data.streams.StreamRows share)."""
    per = batch_size // world
    first = k * batch_size + rank * per
    return slice(first, first + per)


def rank_rows(n_blocks: int, batch_size: int, world: int, rank: int) -> np.ndarray:
    """The stream rows rank `rank` of `world` trains on, in order, one local batch after another.

    Global step s uses rows [s·B, (s+1)·B); rank r takes its slice [r·B/W, (r+1)·B/W) of each.
    So the ranks' local batches, concatenated in rank order, are exactly the one-worker batch
    of the same step: the data a run sees does not depend on how many workers it has.
    The tail shorter than one global batch is left out of every epoch.
    """
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} does not divide over {world} workers")
    first = rank_slice(0, batch_size, world, rank)  # step k takes the same slice shifted by k·B
    steps = np.arange(n_blocks // batch_size, dtype=np.int64)[:, None] * batch_size
    return (steps + np.arange(first.start, first.stop, dtype=np.int64)[None, :]).reshape(-1)
