"""Where documents come from: built-in generators, Hugging Face datasets (streamed) and local files.

    source (synthetic generator | Hugging Face dataset, streamed | local files)
      -> shards (generator index ranges, the dataset's data files, groups of local files), in order
      -> records -> text (a field, or a named template over instruction fields)

raysweep.data.corpus reads the shards in parallel (one task each) and decides, from each
document's text hash, which documents are held out and which are trained on:

Carving: a document is held out when a hash of its text falls below `heldout_fraction`. The
decision depends only on the text, so it is the same on every run and for every read size, and
every copy of a held-out text is kept out of training (C4 and FLAN hold exact duplicates). Once
`heldout_docs` are collected, later hash-selected documents are skipped, not trained on. With a
given held-out split (`heldout_split`, `heldout_path`), training copies of its texts are dropped.
"""

from __future__ import annotations

import codecs
import gzip
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.config import TEMPLATES
from raysweep.data.corpora.synthetic import generate
from raysweep.store.keys import text_key

SYNTHETIC_TRAIN_DOCS = 6000
SYNTHETIC_SHARD_DOCS = 2000  # generated documents per shard (one task each)
LOCAL_SHARD_BYTES = 64 << 20  # local files are grouped, in order, into shards of about this much input


LOCAL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".txt")
# UTF-8, with or without the byte-order mark Windows editors write first; any other encoding
# (Latin-1, UTF-16) is refused with the file named, never guessed
ENCODING = "utf-8-sig"
PROBE_RECORDS = 5000  # how far probe_local reads looking for a document with text (milliseconds)


class CorpusError(ValueError):
    """A corpus cannot be read as configured; the message names the config key to change."""


def text_hash(text: str) -> str:
    """A document's identity for held-out decisions: 128 bits of the SHA-256 of its text, in hex."""
    return text_key(text, 32)


def carved(h: str, fraction: float) -> bool:
    """Held out by carving: the text's hash, read as a number in [0, 1), is below the fraction."""
    return int(h[:15], 16) / 16**15 < fraction


def hash64(h: str) -> int:
    """The first 64 bits of a text hash, as an unsigned integer (what the corpus index stores)."""
    return int(h[:16], 16)


def render(record: dict, key: str, text_field: str, template: str | None) -> str:
    """The text of one record: its text field, or a template filled with its fields."""
    if template is not None:
        fmt = TEMPLATES.get(template, template)
        try:
            return fmt.format(**{k: "" if v is None else v for k, v in record.items()})
        except KeyError as e:
            raise CorpusError(f"{key}.template: records have no field {e.args[0]!r} (fields: {', '.join(sorted(record))})") from None
    if text_field not in record:
        raise CorpusError(
            f"{key}.text_field: records have no field {text_field!r} (fields: {', '.join(sorted(record))}); "
            f"set {key}.text_field, or {key}.template for instruction data (e.g. template: flan)"
        )
    value = record[text_field]
    return "" if value is None else str(value)


# ------------------------------------------------------------------------- record readers


def _local_files(path: Path, key: str) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(LOCAL_SUFFIXES) and not p.name.startswith("."))
    if not files:
        raise CorpusError(f"{key}: {path} holds no {', '.join(LOCAL_SUFFIXES)} files")
    return files


def _file_records(path: Path, root: Path) -> Iterator[dict]:
    name = path.name
    if name.endswith(".parquet"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    elif name.endswith(".txt"):
        yield {"id": str(path.relative_to(root)) if path != root else path.name, "text": path.read_text(encoding=ENCODING)}
    else:
        raw = gzip.open(path, "rb") if name.endswith(".gz") else path.open("rb")
        # universal newlines: a file saved on Windows (CRLF) reads as one saved anywhere else
        with raw, io.TextIOWrapper(raw, encoding=ENCODING) as f:
            head = f.read(1)
            while head and head.isspace():
                head = f.read(1)
            if head == "[":  # a JSON array of records
                yield from json.loads(head + f.read())
                return
            first = head + f.readline()
            for line in itertools.chain([first], f):  # line by line: a shard's file is never held whole
                if line.strip():
                    yield json.loads(line)


def _local_records(path_str: str, split: str, key: str) -> Iterator[dict]:
    path = Path(path_str).expanduser()
    if not path.exists():
        raise CorpusError(f"{key}: {path} does not exist")
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        if (path / "dataset_dict.json").exists():
            if split not in ds:
                raise CorpusError(f"{key}: {path} has splits {sorted(ds)}, not {split!r}; set the split")
            ds = ds[split]
        yield from ds
        return
    for f in _local_files(path, key):
        try:
            yield from _file_records(f, path)
        except (json.JSONDecodeError, UnicodeDecodeError, pa.ArrowInvalid) as e:
            raise CorpusError(f"{key}: cannot read {f} ({type(e).__name__}: {e})") from None


def probe_local(cfg, key: str) -> None:
    """Read a local corpus (and its held-out files) until one record renders to text, at most
    PROBE_RECORDS records and 64 kB of each .txt file, not the corpus: a binary file, another
    encoding, a missing text field or files without a single document with text are said with
    their key in a second, before Ray starts (they were found after ≈ 15-30 s of start-up).
    Raises CorpusError."""
    for which, value in (("path", cfg.path), ("heldout_path", cfg.heldout_path)):
        if not value:
            continue
        path, where = Path(value).expanduser(), f"{key}.{which}"
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            continue  # a datasets save_to_disk folder: datasets checks its own format when it loads it
        files = _local_files(path, where)
        records = 0  # read so far, none with text
        for file, record in itertools.islice(((f, r) for f in files for r in _probe_records(f, path, where)), PROBE_RECORDS):
            if not isinstance(record, dict):
                raise CorpusError(f"{where}: {file}'s record {records + 1} is not an object (a JSON object per line, or an array of them)")
            if render(record, key, cfg.text_field, cfg.template).strip():
                break
            records += 1
        else:
            if records >= PROBE_RECORDS:  # far enough: the tokenizer says so if no document has text
                continue
            # every file read to its end, and not one document with text
            what = f"{files[0]}" if len(files) == 1 else f"{path} ({len(files)} files)"
            if not records:
                raise CorpusError(f"{where}: {what} holds no records")
            field = f"{key}.template" if cfg.template is not None else f"{key}.text_field ({cfg.text_field!r})"
            raise CorpusError(f"{where}: {what} holds no document with text ({records:,} records, all empty); check {field}")


def _probe_records(file: Path, root: Path, where: str) -> Iterator:
    """A file's records as probe_local reads them: a .txt file's first 64 kB, any error named."""
    try:
        if file.name.endswith(".txt"):
            with file.open("rb") as f:  # a prefix is enough: a .txt file is one document
                yield {"text": codecs.getincrementaldecoder(ENCODING)().decode(f.read(1 << 16))}
        else:
            yield from _file_records(file, root)
    except (json.JSONDecodeError, UnicodeDecodeError, pa.ArrowInvalid, OSError, EOFError) as e:
        raise CorpusError(
            f"{where}: cannot read {file} ({type(e).__name__}: {str(e)[:200]}); is it a UTF-8 {', '.join(LOCAL_SUFFIXES)} file?"
        ) from None


# ------------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class ShardSource:
    """One shard of a corpus split, described well enough for a task anywhere to read it."""

    kind: str  # synthetic | files | hub | disk
    key: str  # the config key to name in errors, e.g. corpora.pre.path
    index: int  # its place in the split's order
    spec: dict = field(default_factory=dict)  # what `kind` needs (generator range, file list, dataset shard)


def source_shards(cfg, key: str, which: str, seed: int, hub_shards: int | None = None) -> list[ShardSource] | None:
    """The shards of the training split (which="train") or the given held-out split, in order;
    None when the source has no held-out split and one must be carved. `hub_shards`: the number of
    data files a hub split has, when known (a resumed study then needs no connection to count them)."""
    if cfg.source == "synthetic":
        n = (cfg.train_docs or SYNTHETIC_TRAIN_DOCS) if which == "train" else cfg.heldout_docs
        return [
            ShardSource(
                "synthetic", key, i, {"name": cfg.name, "seed": seed, "split": which, "start": a, "stop": min(n, a + SYNTHETIC_SHARD_DOCS)}
            )
            for i, a in enumerate(range(0, n, SYNTHETIC_SHARD_DOCS))
        ]
    if cfg.source == "hub":
        split = cfg.split if which == "train" else cfg.heldout_split
        if split is None:
            return None
        where = f"{key}.dataset" if which == "train" else f"{key}.heldout_split"
        n = hub_shards or _hub_shard_count(cfg, split, where)
        return [
            ShardSource("hub", where, i, {"dataset": cfg.dataset, "subset": cfg.subset, "split": split, "revision": cfg.revision, "n": n})
            for i in range(n)
        ]
    if which == "train":
        path, split, where = cfg.path, cfg.split, f"{key}.path"
    elif cfg.heldout_path:
        path, split, where = cfg.heldout_path, cfg.split, f"{key}.heldout_path"
    elif cfg.heldout_split:
        path, split, where = cfg.path, cfg.heldout_split, f"{key}.heldout_split"
    else:
        return None
    return _local_shards(Path(path).expanduser(), split, where)


def _local_shards(path: Path, split: str, key: str) -> list[ShardSource]:
    if not path.exists():
        raise CorpusError(f"{key}: {path} does not exist")
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        return [ShardSource("disk", key, 0, {"path": str(path), "split": split})]
    groups, size = [[]], 0
    for f in _local_files(path, key):
        if groups[-1] and size >= LOCAL_SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(str(f))
        size += f.stat().st_size
    return [ShardSource("files", key, i, {"files": files, "root": str(path)}) for i, files in enumerate(groups)]


def _hub_shard_count(cfg, split: str, key: str) -> int:
    try:
        from datasets import load_dataset

        ds = load_dataset(cfg.dataset, cfg.subset, split=split, revision=cfg.revision, streaming=True)
        n = int(ds.num_shards)
    except Exception as e:  # noqa: BLE001 - any failure to open the dataset: say which key
        what = f"{cfg.dataset}" + (f" subset {cfg.subset!r}" if cfg.subset else "") + f" split {split!r}"
        raise CorpusError(f"{key}: cannot stream {what} ({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})") from None
    if n < 1:
        raise CorpusError(f"{key}: {cfg.dataset} split {split!r} has no data files")
    return n


def shard_records(shard: ShardSource) -> Iterator[dict]:
    """The records of one shard, in order (streamed: a shard is never held in memory whole)."""
    s = shard.spec
    if shard.kind == "synthetic":
        yield from generate(s["name"], s["seed"], s["split"], s["stop"], start=s["start"])
    elif shard.kind == "hub":
        from datasets import load_dataset

        try:
            ds = load_dataset(s["dataset"], s["subset"], split=s["split"], revision=s["revision"], streaming=True)
            yield from ds.shard(num_shards=s["n"], index=shard.index, contiguous=True)
        except CorpusError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CorpusError(
                f"{shard.key}: cannot read data file {shard.index + 1} of {s['n']} of {s['dataset']} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:300] if str(e) else ''})"
            ) from None
    elif shard.kind == "disk":
        yield from _local_records(s["path"], s["split"], shard.key)
    else:
        root = Path(s["root"])
        for f in s["files"]:
            try:
                yield from _file_records(Path(f), root)
            except (json.JSONDecodeError, UnicodeDecodeError, pa.ArrowInvalid, OSError, EOFError) as e:
                raise CorpusError(f"{shard.key}: cannot read {f} ({type(e).__name__}: {e})") from None


def split_records(shards: list[ShardSource]) -> Iterator[dict]:
    """Every record of a split, shard after shard (the tokenizer's training read: the first documents only)."""
    return itertools.chain.from_iterable(shard_records(s) for s in shards)


def document_text(rec: dict, cfg, key: str) -> str:
    """A record's text: the generator's own, or the configured field or template."""
    return rec["text"] if cfg.source == "synthetic" else render(rec, key, cfg.text_field, cfg.template)


def training_texts(cfg, key: str, seed: int) -> Iterator[str]:
    """The texts of a corpus's training documents, in order (what the tokenizer is trained on):
    non-empty, never a held-out text (a given split's first `heldout_docs`, or carved by hash)."""
    given = source_shards(cfg, key, "heldout", seed)
    held: set[str] = set()
    if given is not None:
        n = 0
        for rec in split_records(given):
            text = document_text(rec, cfg, key)
            if text.strip():
                held.add(text_hash(text))
                n += 1
                if n >= cfg.heldout_docs:
                    break
    for rec in split_records(source_shards(cfg, key, "train", seed)):
        text = document_text(rec, cfg, key)
        if not text.strip():
            continue
        h = text_hash(text)
        if h in held or (given is None and carved(h, cfg.heldout_fraction)):
            continue
        yield text
