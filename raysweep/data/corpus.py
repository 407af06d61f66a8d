"""A corpus, read and tokenized in parallel into token shards, and its train and held-out views.

    source shards (raysweep.data.corpora.sources) --Ray Data: one task per shard, every CPU-->
        <cache>/tokens/<label>-<key>/  <split>-<shard>-NNN.tokens / .lengths.npy   (raysweep.data.shards)
                                       <split>-<shard>.meta.npz   (per document: text hash, carved)
                                       manifest.json              (every shard's size and SHA-256)
    -> views, in the driver, from the index alone: which documents are held out, which are trained
       on (never a held-out text), up to the token budget -> TokenView (rows in the source's order)

Shards are read in waves of about one per CPU, in order, until the training documents hold the
budget (hub and local sources; a generator's shards are all read), so a 10-billion-token budget
never reads the whole of a larger source, and a bigger budget later only adds shards. Each shard
is cached by content (source, tokenizer) and verified against its SHA-256 before any view is
built from it: a corrupt or truncated shard is deleted and read again, never trained on. The
driver holds O(documents) (the index), never the tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.data.corpora.sources import CorpusError, ShardSource, source_shards
from raysweep.data.corpora.synthetic import GENERATOR_VERSION
from raysweep.data.shard_tasks import report, run_tasks
from raysweep.data.shards import TokenView, token_dtype, verify_shard
from raysweep.data.tokenizer import NotCached
from raysweep.store.keys import derive_seed, json_key
from raysweep.store.storage import write_text

TOKENS_VERSION = 1  # bump when reading, carving or the shard format changes, so caches are rebuilt


@dataclass(frozen=True)
class TokenCorpus:
    train: TokenView
    heldout: TokenView
    stats: dict  # what was read: shards, documents (read, trained on, held out, skipped), tokens, seconds


# ----------------------------------------------------------------------------- the driver


def corpus_folder(cfg, seed: int, root: Path, tokenizer_id: str) -> Path:
    """Where a corpus's shards live: named by what decides their content (not by the budget,
    so a bigger budget adds shards to the same folder)."""
    spec = cfg.model_dump(mode="json", exclude={"train_docs", "heldout_docs"} if cfg.source != "synthetic" else set())
    seed = seed if cfg.source == "synthetic" else None
    ident = {"spec": spec, "seed": seed, "tokenizer": tokenizer_id, "v": TOKENS_VERSION, "gen": GENERATOR_VERSION}
    return root / f"{cfg.label}-{json_key(ident)}"


class _Manifest:
    """manifest.json of a corpus folder: the tokenizer, the dtype, and every shard task done."""

    def __init__(self, folder: Path, tokenizer_id: str, dtype: str):
        self.path = folder / "manifest.json"
        doc = json.loads(self.path.read_text()) if self.path.exists() else {}
        if doc.get("tokenizer_id") != tokenizer_id or doc.get("dtype") != dtype:
            doc = {"tokenizer_id": tokenizer_id, "dtype": dtype, "done": {}}
        self.doc = doc

    @property
    def done(self) -> dict:
        return self.doc["done"]

    def save(self) -> None:
        write_text(self.path, json.dumps(self.doc, indent=1))


@dataclass(frozen=True)
class _Reader:
    """What every shard read of one corpus shares."""

    folder: Path
    manifest: _Manifest
    task_base: dict  # the task's fields but the shard's own
    label: str
    parallel: bool  # in Ray Data tasks (else one after another in this process)
    cached_only: bool  # run no task: raise NotCached where one is needed


def _ensure_shards(r: _Reader, shards: list[ShardSource], split: str, progress: dict) -> None:
    """Run the tasks of the shards not yet done (or found corrupt); record them in the manifest."""
    folder, manifest, label = r.folder, r.manifest, f"{r.label} {split}"
    todo = []
    for s in shards:
        prefix = f"{split}-{s.index:05d}"
        done = manifest.done.get(prefix)
        if done is not None:
            bad = next((p for p in (verify_shard(folder, i) for i in done["shards"]) if p), None)
            if bad is None and (folder / f"{prefix}.meta.npz").exists():
                continue
            print(f"[data] {label}: shard {prefix}: {bad or 'meta.npz missing'}; reading it again, nothing was trained on it", flush=True)
            del manifest.done[prefix]
        todo.append({**r.task_base, "shard": s.__dict__, "prefix": prefix})
    if not todo:
        return
    if r.cached_only:
        raise NotCached(f"{label}: {len(todo)} token shard(s) under {folder}")
    problems = []
    for result in run_tasks(todo, label, progress, r.parallel):
        if "error" in result:
            problems.append(result["error"])
        else:
            manifest.done[result["prefix"]] = result
    manifest.save()  # what finished is kept even when another shard failed
    if problems:
        raise CorpusError("; ".join(dict.fromkeys(problems)))


def _split_index(folder: Path, manifest: _Manifest, prefixes: list[str]) -> dict:
    """Per document of the given shard tasks, in order: file index, offset, length, hash, carved."""
    files, sha, file_ix, offset, lengths, hashes, cut = [], [], [], [], [], [], []
    for prefix in prefixes:
        for info in manifest.done[prefix]["shards"]:
            n = np.load(folder / f"{info['name']}.lengths.npy")
            file_ix.append(np.full(len(n), len(files), dtype=np.int32))
            offset.append(np.cumsum(n) - n)
            lengths.append(n)
            files.append(info["name"])
            sha.append(info["sha256"])
        with np.load(folder / f"{prefix}.meta.npz") as meta:
            hashes.append(meta["hashes"])
            cut.append(meta["carved"])

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    return {
        "files": tuple(files),
        "sha": tuple(sha),
        "file_ix": cat(file_ix, np.int32),
        "offset": cat(offset, np.int64),
        "lengths": cat(lengths, np.int64),
        "hashes": cat(hashes, np.uint64),
        "carved": cat(cut, bool),
    }


def _view(label: str, folder: Path, dtype: str, index: dict, rows: np.ndarray) -> TokenView:
    return TokenView(
        label,
        folder,
        index["files"],
        index["sha"],
        dtype,
        index["file_ix"][rows],
        index["offset"][rows],
        index["lengths"][rows],
        index["hashes"][rows],
    )


def _read_split(r: _Reader, shards: list[ShardSource], split: str, enough, wave: int) -> tuple[dict, bool, list[str]]:
    """Read `shards` in order, `wave` at a time, until `enough(index)`; returns the index of what
    was read, whether the source ran out first, and the shard tasks the index covers."""
    progress = {"t0": time.perf_counter(), "last": time.perf_counter(), "docs": 0, "tokens": 0, "shards": 0, "total": len(shards)}
    read = 0
    while True:
        batch = shards[read : read + wave]
        _ensure_shards(r, batch, split, progress)
        read += len(batch)
        prefixes = [f"{split}-{s.index:05d}" for s in shards[:read]]
        index = _split_index(r.folder, r.manifest, prefixes)
        if enough(index):
            return index, False, prefixes
        if read >= len(shards):
            if progress["shards"]:
                report(f"{r.label} {split}", progress, force=True)
            return index, True, prefixes


def position_carved(n: int, fraction: float, key: str) -> np.ndarray:
    """conventions.heldout_carving "position": document i is held out when the i-th draw of a
    stream seeded by the corpus's key falls below `fraction` (the first share of a seeded shuffle,
    in expectation). By position, not text: the same for every read size (a stream's first n draws
    do not depend on how many follow), but copies of a held-out text may stay in training."""
    return np.random.default_rng(derive_seed(0, "heldout-carving", key)).random(n) < fraction


def _train_rows(
    index: dict,
    held: set[int] | None,
    carving: bool,
    heldout_docs: int,
    need: int | None,
    cap: int | None,
    by_position: tuple[float, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict, bool]:
    """(train rows, carved held-out rows, what was skipped, whether the budget was met) of a split's
    documents, in order: the sequential rule of the module docstring, vectorized. `by_position`
    ((fraction, corpus key)): carve by position instead of by text hash (position_carved)."""
    n = len(index["lengths"])
    hashes = index["hashes"]
    is_held = np.zeros(n, dtype=bool)
    copies = np.zeros(n, dtype=bool)
    if carving and by_position is not None:
        positions = np.flatnonzero(position_carved(n, *by_position))
        is_held[positions[:heldout_docs]] = True
        index = {**index, "carved": np.isin(np.arange(n), positions)}
        train = ~index["carved"]
    elif carving:
        positions = np.flatnonzero(index["carved"])
        _, first = np.unique(hashes[positions], return_index=True)
        firsts = np.sort(positions[first])  # the first document of each carved text, in order
        is_held[firsts[:heldout_docs]] = True
        train = ~index["carved"]
        copies[positions] = np.isin(hashes[positions], hashes[firsts[:heldout_docs]]) & ~is_held[positions]
    else:
        copies = np.isin(hashes, np.fromiter(held or (), dtype=np.uint64))
        train = ~copies
    met = np.zeros(n, dtype=bool)  # no budget (a generator): every document is read, none stops it
    if need is not None or cap is not None:
        if need is not None:
            met |= np.cumsum(np.where(train, index["lengths"] + 1, 0)) >= need
        if cap is not None:
            met |= np.cumsum(train) >= cap
        if carving:
            met &= np.cumsum(is_held) >= heldout_docs
    stop = int(np.argmax(met)) + 1 if met.any() else n
    keep = np.arange(n) < stop
    skipped = {
        "heldout_copies": int((copies & keep).sum()),
        "carved_beyond_heldout_docs": int((index["carved"] & ~is_held & ~copies & keep).sum()) if carving else 0,
    }
    return np.flatnonzero(train & keep), np.flatnonzero(is_held & keep), skipped, bool(met.any())


def _stats(
    cfg,
    train: TokenView,
    heldout: TokenView,
    given: bool,
    index: dict,
    manifest: _Manifest,
    prefixes: list[str],
    available: int,
    skipped: dict,
    exhausted: bool,
    need: int | None,
) -> dict:
    """What was read of a corpus, for the summary line, data.json and the budget errors."""
    empty = sum(manifest.done[p]["empty"] for p in prefixes)
    return {
        "label": cfg.label,
        "source": cfg.source,
        "train_docs": int(len(train.lengths)),
        "train_tokens": train.n_tokens,
        "heldout_docs": int(len(heldout.lengths)),
        "heldout": "given" if given else "carved",
        "documents_read": int(len(index["lengths"]) + empty),
        "shards_read": len(prefixes),
        "shards_available": available,
        "skipped": {"empty": int(empty), **skipped},
        "exhausted": bool(exhausted),
        "need_tokens": need,
    }


def _check_rows(cfg, key: str, index: dict, train_rows: np.ndarray, skipped) -> None:
    if not len(train_rows):
        where = {"hub": f"{key}.dataset ({cfg.dataset})", "local": f"{key}.path ({cfg.path})"}.get(cfg.source, key)
        raise CorpusError(
            f"{where}: no training documents with text (read {len(index['lengths']):,} documents; skipped {skipped}); "
            f"check the source and {key}.text_field"
        )


def tokenize_corpus(
    cfg,
    key: str,
    seed: int,
    root: Path,
    tokenizer_path: Path,
    tokenizer_id: str,
    vocab_size: int,
    need_tokens: int | None,
    wave: int = 2,
    parallel: bool = True,
    cached_only: bool = False,
    carving: str = "hash",
) -> TokenCorpus:
    """Read (or reuse) a corpus as token shards and cut its train and held-out views; see the module
    docstring. `need_tokens`: the training tokens the study's budgets ask (hub and local sources
    are read until their training documents hold them); `wave`: shards read side by side;
    `parallel`: in Ray Data tasks (else in this process, one after another); `cached_only`: read
    nothing from the source, raise NotCached where the cache lacks a shard; `carving`
    (conventions.heldout_carving): how held-out documents are carved from a single split."""
    t0 = time.perf_counter()
    folder = corpus_folder(cfg, seed, root, tokenizer_id)
    dtype = token_dtype(vocab_size).name
    manifest = _Manifest(folder, tokenizer_id, dtype)
    corpus = {"key": key, "text_field": cfg.text_field, "template": cfg.template, "heldout_fraction": cfg.heldout_fraction}
    base = {"folder": str(folder), "dtype": dtype, "tokenizer": str(tokenizer_path), "corpus": corpus}
    reader = _Reader(folder, manifest, base, cfg.label, parallel, cached_only)
    counts = manifest.doc.setdefault("hub_shards", {})  # a hub split's data files, counted once
    given = source_shards(cfg, key, "heldout", seed, counts.get("heldout"))
    held_index, held = None, None
    if given is not None:
        held_index, _, _ = _read_split(reader, given, "heldout", lambda ix: len(ix["lengths"]) >= cfg.heldout_docs, wave)
        held = set(held_index["hashes"][: cfg.heldout_docs].tolist())
    synthetic = cfg.source == "synthetic"
    need, cap = (None, None) if synthetic else (need_tokens, cfg.train_docs)
    train_shards = source_shards(cfg, key, "train", seed, counts.get("train"))
    if cfg.source == "hub":
        counts.update({"train": len(train_shards), **({"heldout": len(given)} if given else {})})

    by_position = (cfg.heldout_fraction, key) if carving == "position" else None

    def enough(ix) -> bool:
        return _train_rows(ix, held, given is None, cfg.heldout_docs, need, cap, by_position)[3] if (need or cap) else False

    index, exhausted, prefixes = _read_split(reader, train_shards, "train", enough, len(train_shards) if synthetic else wave)
    train_rows, carved_rows, skipped, met = _train_rows(index, held, given is None, cfg.heldout_docs, need, cap, by_position)
    _check_rows(cfg, key, index, train_rows, skipped)
    if given is not None:
        heldout = _view(cfg.label, folder, dtype, held_index, np.arange(min(cfg.heldout_docs, len(held_index["lengths"]))))
    else:
        heldout = _view(cfg.label, folder, dtype, index, carved_rows)
    if not len(heldout.lengths):
        raise CorpusError(f"{key}: no held-out documents; give {key}.heldout_split / heldout_path or raise {key}.heldout_fraction")
    train = _view(cfg.label, folder, dtype, index, train_rows)
    stats = _stats(
        cfg, train, heldout, given is not None, index, manifest, prefixes, len(train_shards), skipped, exhausted and not met, need
    )
    carved_by = {"heldout": f"carved by {carving}"} if given is None and carving != "hash" else {}
    stats |= {"seconds": round(time.perf_counter() - t0, 2), **carved_by}
    return TokenCorpus(train, heldout, stats)
