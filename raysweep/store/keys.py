"""Every key, digest and seed raysweep derives, in one place.

A key names a thing by its content: a node by (parent key, stage config, data, tokenizer, seed), a
stream by its pieces, a cache folder by what was read. Two things with the same key are the same
thing, so a finished node is never trained twice and a stream is never built twice; a key that
changes by accident retrains everything below it. The recipes below were moved here verbatim from
the modules that first spelled them (tests/test_golden.py pins their values): they differ in small
ways (sorted keys or not, `str` of each part or JSON of the whole) that cannot be unified without
changing every existing key.

Seeds derive from (root seed, path of names) by SHA-256, never from Python's `hash()` (salted per
process). `NAMESPACES` lists the first part of every node key and seed path, so two kinds of thing
can never share one by accident.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

NAMESPACES = {
    # node keys (node_key's first part) and the run seeds of the same nodes
    "pretrain": "stage-1 arms; also their streams' interleave seeds (the same value: one seed per arm)",
    "posttrain": "stage-2 nodes; stage-2 streams' seeds come from their names (see stream_seed)",
    "finetune": "stage-3 nodes; the D_ft stream's interleave seed",
    "linear-pretrain": "the linear theory backend's arms",
    "linear-posttrain": "its stage-2 nodes",
    "linear-finetune": "its stage-3 nodes",
    "rung": "halving's rungs: the first steps of a stage-2 run, stored as a node (raysweep.sweep.halving)",
    "probe": "halving's probes: short stage-3 runs from a rung; also their seeds",
    # seeds only
    "order": "each corpus's seeded document order (shares are prefixes of it)",
    "optuna": "the stage-2 search's sampler per mixing fraction",
    "linear-init": "the linear network's initial weights",
    "pass": "a stream's order of blocks in each pass, the first included (raysweep.data.streams.StreamRows)",
    "init": "the initial weights every pretraining arm of a study starts from (paired arms)",
    "heldout": "the held-out blocks every evaluation of a study scores (a seeded sample)",
    "heldout-carving": "which documents conventions.heldout_carving 'position' holds out of a carved corpus (raysweep.data.corpus)",
    "heldout-slices": "which held-out documents fall in which held-out slice (raysweep.data.slices); the same for every seed",
}

# What a node's numbers mean beyond its config, part of every arm's key (and so, through the
# parents, of every node's). 2 (2026-12-03): every pass of a stream, the first included, takes its
# blocks in a seeded order (the first pass used to take consecutive blocks, a few documents per
# batch); each held-out set is a seeded sample of its blocks (it used to be the first tokens in
# file order); every arm of a seed starts from the same weights (each arm used to draw its own).
# Studies planned before keep their nodes on disk under their old keys; they are trained anew.
TRAINING_PROTOCOL = 2

KEY_LENGTH = 16  # hex digits of a node, stream, cache or study key: 64 bits, no collision at any study's size


def _short(text: str, length: int = KEY_LENGTH) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def node_key(namespace: str, *parts: object) -> str:
    """A tree node's key: its namespace (a stage) and everything that decides its weights."""
    _known(namespace)
    return _short(json.dumps((namespace, *parts), sort_keys=True, default=str))


def stream_key(*parts: object) -> str:
    """A stream's or tokenized split's cache key: the text of each part, in order."""
    return _short(json.dumps([str(p) for p in parts]))


def json_key(doc: object, sort_keys: bool = True) -> str:
    """The key of one JSON document (a study's content hash, a corpus cache folder; the trained
    tokenizer's cache entry uses the document's own key order, `sort_keys=False`)."""
    return _short(json.dumps(doc, sort_keys=sort_keys))


def text_key(text: str, length: int = KEY_LENGTH) -> str:
    """The key of a text (a tokenizer's JSON, a document: length 32; a cache folder's URI: 24)."""
    return _short(text, length)


def file_digest(path: str | Path) -> str:
    """The full SHA-256 of a file, read in 4 MiB chunks (constant memory whatever its size)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def array_digest(*arrays, header: str = "") -> str:
    """The full SHA-256 of some arrays' bytes, in order, after an optional header (a selection of
    documents, a view of a corpus, a stream plan): their content, whatever file holds them."""
    import numpy as np

    h = hashlib.sha256(header.encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def path_digest(*path: object) -> bytes:
    """SHA-256 of a path of names joined by "/": what every seed is drawn from."""
    return hashlib.sha256("/".join(map(str, path)).encode()).digest()


def derive_seed(root: int, namespace: str, *path: object) -> int:
    """A 32-bit seed that depends only on the root seed and the path of names/values."""
    _known(namespace)
    return int.from_bytes(path_digest(root, namespace, *path)[:4], "little")


def stream_seed(root: int, name: str) -> int:
    """A stage-2 stream's interleave seed, from the parts of its name ("posttrain-mix0.5-replay0.1"
    -> posttrain / mix0.5 / replay0.1), as it always was derived."""
    return derive_seed(root, *name.split("-"))


def _known(namespace: str) -> None:
    if namespace not in NAMESPACES:
        raise ValueError(f"unknown key namespace {namespace!r}; add it to raysweep.store.keys.NAMESPACES")
