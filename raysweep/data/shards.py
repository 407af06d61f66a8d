"""Token shards: flat token ids on disk, one file per shard, read back memory-mapped.

A tokenized corpus is a folder of shards (`<n>.tokens`: the documents' token ids laid end to end,
uint16 when the vocabulary fits in 65,536 ids, else uint32; no separators) plus, per shard, the
documents' token counts (`<n>.lengths.npy`), like nanoGPT's `.bin` files and Megatron's `.bin`
+ `.idx` pairs. A shard is written by one task, atomically, and holds at most `MAX_SHARD_BYTES`
of tokens; its size and SHA-256 go into the corpus manifest, so a corrupt or truncated shard is
found before anything trains on it (raysweep.data.corpus). Reading a shard maps it; a worker
touches only the pages of the rows it trains on.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.data.mixing import ROLES, available_tokens, needed_tokens
from raysweep.store.keys import array_digest, file_digest
from raysweep.store.storage import atomic_file

MAX_SHARD_BYTES = 1 << 30  # 1 GiB of token ids per shard file


INDEX_BYTES_PER_DOC = 29  # per document: file (4), offset (8), length (8), hash (8), carved (1)


def cache_bytes(study, vocab: int) -> dict[str, int]:
    """Bytes the token shards of each hub or local corpus take at most for a study's budgets (token
    ids; the index adds INDEX_BYTES_PER_DOC a document). Generated corpora are not estimated: they
    are as large as their documents, known only once generated (megabytes for the built-in ones)."""
    need, item = needed_tokens(study), token_dtype(vocab).itemsize
    return {r: need[r] * item for r in ROLES if getattr(study.corpora, r).source != "synthetic"}


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of the vocabulary."""
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise ValueError(f"a vocabulary of {vocab_size:,} ids does not fit in uint32 token shards")


@dataclass(frozen=True)
class ShardInfo:
    """One written shard, as the manifest records it."""

    name: str  # file stem: <name>.tokens, <name>.lengths.npy
    docs: int
    tokens: int
    bytes: int  # size of <name>.tokens
    sha256: str  # of <name>.tokens
    lengths_sha256: str

    def as_dict(self) -> dict:
        return self.__dict__.copy()


class ShardWriter:
    """Appends documents' token ids to shard files in `folder`, starting a new file whenever one
    would pass `max_bytes`; `close()` returns the ShardInfos in order. Memory: one batch at a time."""

    def __init__(self, folder: Path, prefix: str, dtype: np.dtype, max_bytes: int = MAX_SHARD_BYTES):
        self.folder, self.prefix, self.dtype, self.max_bytes = Path(folder), prefix, np.dtype(dtype), max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self.done: list[ShardInfo] = []
        self._file = None
        self._lengths: list[int] = []
        self._bytes = 0

    def _open(self) -> None:
        self._name = f"{self.prefix}-{len(self.done):03d}"
        self._tmp = self.folder / f"{self._name}.tokens.partial"
        self._file = self._tmp.open("wb")
        self._lengths, self._bytes = [], 0

    def add(self, docs: list[np.ndarray]) -> None:
        for ids in docs:
            nbytes = len(ids) * self.dtype.itemsize
            if self._file is not None and self._lengths and self._bytes + nbytes > self.max_bytes:
                self._seal()
            if self._file is None:
                self._open()
            self._file.write(np.asarray(ids, dtype=self.dtype).tobytes())
            self._lengths.append(len(ids))
            self._bytes += nbytes

    def _seal(self) -> None:
        self._file.close()
        tokens = self.folder / f"{self._name}.tokens"
        self._tmp.replace(tokens)
        lengths = self.folder / f"{self._name}.lengths.npy"
        with atomic_file(lengths) as tmp, tmp.open("wb") as f:
            np.save(f, np.asarray(self._lengths, dtype=np.int64))
        self.done.append(
            ShardInfo(
                self._name, len(self._lengths), int(sum(self._lengths)), tokens.stat().st_size, file_digest(tokens), file_digest(lengths)
            )
        )
        self._file = None

    def close(self) -> list[ShardInfo]:
        if self._file is None and not self.done:
            self._open()  # an empty shard still records that the source had no documents
        if self._file is not None:
            self._seal()
        return self.done

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._file = None


def verify_shard(folder: Path, info: dict, full: bool = True) -> str | None:
    """What is wrong with a shard's files (None: nothing): missing, truncated, or (with `full`)
    not the SHA-256 the manifest recorded."""
    tokens, lengths = Path(folder) / f"{info['name']}.tokens", Path(folder) / f"{info['name']}.lengths.npy"
    for path in (tokens, lengths):
        if not path.is_file():
            return f"{path.name} missing"
    if tokens.stat().st_size != info["bytes"]:
        return f"{tokens.name} is {tokens.stat().st_size:,} bytes, the manifest recorded {info['bytes']:,} (truncated or overwritten)"
    if full and (file_digest(tokens) != info["sha256"] or file_digest(lengths) != info["lengths_sha256"]):
        return f"{tokens.name} does not match the SHA-256 the manifest recorded (corrupted)"
    return None


def open_tokens(folder: Path, name: str, dtype: np.dtype) -> np.ndarray:
    """A shard's token ids, memory-mapped read-only (an empty shard: an empty array)."""
    path = Path(folder) / f"{name}.tokens"
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


@dataclass(frozen=True)
class TokenView:
    """One split of a tokenized corpus: its documents (rows) in the source's order, and where each
    one's tokens lie in the shard files."""

    label: str
    folder: Path
    files: tuple[str, ...]  # shard names, in `folder`
    file_sha256: tuple[str, ...]
    dtype: str
    file_ix: np.ndarray  # (rows,) int32: which file
    offset: np.ndarray  # (rows,) int64: the row's first token in that file
    lengths: np.ndarray  # (rows,) int64: tokens, without a separator
    hashes: np.ndarray  # (rows,) uint64: the first 64 bits of the text's hash

    @property
    def n_tokens(self) -> int:
        """Tokens this view offers to budgets: documents plus one separator each."""
        return available_tokens(self.lengths)

    @functools.cached_property
    def digest(self) -> str:
        """What the view holds, by content: its rows and the SHA-256 of every shard they lie in."""
        return array_digest(self.file_ix, self.offset, self.lengths, header=json.dumps([self.dtype, list(self.file_sha256)]))

    def tokens(self, row: int) -> np.ndarray:
        """One document's token ids (read from its memory-mapped shard)."""
        data = open_tokens(self.folder, self.files[self.file_ix[row]], np.dtype(self.dtype))
        return np.asarray(data[self.offset[row] : self.offset[row] + self.lengths[row]])
