"""Every corpus, whatever its source, becomes two parquet files of documents: train and held-out.

    source (synthetic generator | Hugging Face dataset, streamed | local files)
      -> records -> text (a field, or a named template over instruction fields)
      -> held-out documents (a given split, or carved by a hash of the text)
      -> train documents (never a held-out text; as many as the token budgets need)
      -> <cache>/corpora/<label>-<key>/{train,heldout}.parquet  (id, text, hash)

Carving: a document is held out when a hash of its text falls below `heldout_fraction`. The
decision depends only on the text, so it is the same on every run and for every read size, and
every copy of a held-out text is kept out of training (C4 and FLAN hold exact duplicates). Once
`heldout_docs` are collected, later hash-selected documents are skipped, not trained on.

Reading stops once the training documents hold `need_chars` characters (raysweep.data.prepare sizes
this from the token budgets and tops it up if the tokens fall short) or `train_docs` documents.
"""

from __future__ import annotations

import gzip
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.config import TEMPLATES
from raysweep.data.corpora.synthetic import GENERATOR_VERSION, generate
from raysweep.keys import json_key, text_key
from raysweep.storage import atomic_file, write_text

INGEST_VERSION = 1  # bump when reading/carving changes, so caches are rebuilt
SYNTHETIC_TRAIN_DOCS = 6000


LOCAL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".txt")


class CorpusError(ValueError):
    """A corpus cannot be read as configured; the message names the config key to change."""


@dataclass(frozen=True)
class CorpusFiles:
    train: Path
    heldout: Path
    stats: dict  # documents, characters, skipped, exhausted, ...


def _text_hash(text: str) -> str:
    return text_key(text, 32)


def _carved(h: str, fraction: float) -> bool:
    """Held out by carving: the text's hash, read as a number in [0, 1), is below the fraction."""
    return int(h[:15], 16) / 16**15 < fraction


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


def _hub_records(dataset: str, subset: str | None, split: str, revision: str | None, key: str) -> Iterator[dict]:
    """Records of a Hugging Face dataset split, streamed (nothing is downloaded in full)."""
    try:
        from datasets import load_dataset

        ds = load_dataset(dataset, subset, split=split, revision=revision, streaming=True)
        yield from ds
    except CorpusError:
        raise
    except Exception as e:
        what = f"{dataset}" + (f" subset {subset!r}" if subset else "") + f" split {split!r}"
        raise CorpusError(f"{key}: cannot stream {what} ({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})") from None


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
        yield {"id": str(path.relative_to(root)) if path != root else path.name, "text": path.read_text(encoding="utf-8")}
    else:
        raw = gzip.open(path, "rb") if name.endswith(".gz") else path.open("rb")
        with raw, io.TextIOWrapper(raw, encoding="utf-8") as f:
            head = f.read(1)
            while head and head.isspace():
                head = f.read(1)
            if head == "[":  # a JSON array of records
                yield from json.loads(head + f.read())
                return
            first = head + f.readline()
            for line in ([first] if first.strip() else []) + list(f):
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


def records(cfg, key: str, which: str, seed: int) -> Iterator[dict] | None:
    """Records of the training split (which="train") or the given held-out split (which="heldout");
    None when the source has no held-out split and one must be carved."""
    if cfg.source == "synthetic":
        n = (cfg.train_docs or SYNTHETIC_TRAIN_DOCS) if which == "train" else cfg.heldout_docs
        return generate(cfg.name, seed, which, n)
    if cfg.source == "hub":
        if which == "train":
            return _hub_records(cfg.dataset, cfg.subset, cfg.split, cfg.revision, f"{key}.dataset")
        return _hub_records(cfg.dataset, cfg.subset, cfg.heldout_split, cfg.revision, f"{key}.heldout_split") if cfg.heldout_split else None
    if which == "train":
        return _local_records(cfg.path, cfg.split, f"{key}.path")
    if cfg.heldout_path:
        return _local_records(cfg.heldout_path, cfg.split, f"{key}.heldout_path")
    if cfg.heldout_split:
        return _local_records(cfg.path, cfg.heldout_split, f"{key}.heldout_split")
    return None


# ------------------------------------------------------------------------------- ingestion


class _Docs:
    """Documents collected for one split, written as one parquet file."""

    def __init__(self):
        self.ids, self.texts, self.hashes, self.chars = [], [], [], 0

    def add(self, doc_id: str, text: str, h: str) -> None:
        self.ids.append(doc_id)
        self.texts.append(text)
        self.hashes.append(h)
        self.chars += len(text)

    def write(self, path: Path) -> None:
        with atomic_file(path) as tmp:
            pq.write_table(pa.table({"id": self.ids, "text": self.texts, "hash": self.hashes}), tmp)


def _doc_id(record: dict, which: str, index: int) -> str:
    value = record.get("id")
    return str(value) if value not in (None, "") else f"{which}/{index}"


class _Progress:
    """One line every few seconds while a corpus is read: documents, size, rate, time left."""

    def __init__(self, label: str, need_chars: int | None):
        self.label, self.need = label, need_chars
        self.t0 = self.last = time.perf_counter()

    def tick(self, docs: int, chars: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < 5.0:
            return
        self.last = now
        rate = chars / max(now - self.t0, 1e-9)
        left = f", ~{(self.need - chars) / rate:.0f}s left" if self.need and rate and chars < self.need else ""
        print(f"[data] reading {self.label}: {docs:,} docs, {chars / 1e6:.1f}M chars ({rate / 1e6:.1f}M chars/s{left})", flush=True)


def _text(rec: dict, cfg, key: str) -> str:
    return render(rec, key, cfg.text_field, cfg.template) if cfg.source != "synthetic" else rec["text"]


def _read_given_heldout(cfg, key: str, seed: int) -> tuple[_Docs, bool]:
    """The held-out documents of a given split (heldout_split / heldout_path; the generators' own),
    and whether held-out documents must be carved from the training records instead."""
    heldout = _Docs()
    given = records(cfg, key, "heldout", seed)
    if given is None:
        return heldout, True
    for i, rec in enumerate(given):
        text = _text(rec, cfg, key)
        if text.strip():
            heldout.add(_doc_id(rec, "heldout", i), text, _text_hash(text))
        if len(heldout.ids) >= cfg.heldout_docs:
            break
    return heldout, False


def _read_train(cfg, key: str, seed: int, heldout: _Docs, carving: bool, need_chars: int | None) -> tuple[_Docs, dict, bool, int]:
    """Training documents until the budget or the cap is met (carving held-out ones on the way):
    (documents, what was skipped, whether the source ran out, records read)."""
    train, held = _Docs(), set(heldout.hashes)
    cap = cfg.train_docs if cfg.source != "synthetic" else None
    skipped = {"empty": 0, "heldout_copies": 0, "carved_beyond_heldout_docs": 0}
    progress = _Progress(f"{key} ({cfg.label})", need_chars)
    exhausted, n_read = True, 0
    for i, rec in enumerate(records(cfg, key, "train", seed)):
        n_read += 1
        text = _text(rec, cfg, key)
        if not text.strip():
            skipped["empty"] += 1
            continue
        h = _text_hash(text)
        if h in held:
            skipped["heldout_copies"] += 1
        elif carving and _carved(h, cfg.heldout_fraction):
            if len(heldout.ids) < cfg.heldout_docs:
                heldout.add(_doc_id(rec, "train", i), text, h)
                held.add(h)
            else:
                skipped["carved_beyond_heldout_docs"] += 1
        else:
            train.add(_doc_id(rec, "train", i), text, h)
        progress.tick(len(train.ids), train.chars)
        enough = (need_chars is not None and train.chars >= need_chars) or (cap is not None and len(train.ids) >= cap)
        if enough and (not carving or len(heldout.ids) >= cfg.heldout_docs):
            exhausted = False
            break
    progress.tick(len(train.ids), train.chars, force=True)
    return train, skipped, exhausted, n_read


def ingest(cfg, key: str, seed: int, root: Path, need_chars: int | None = None) -> CorpusFiles:
    """Read (or reuse) a corpus into train and held-out parquet files; see the module docstring."""
    spec = cfg.model_dump(mode="json")
    ident = {
        "spec": spec,
        "seed": seed if cfg.source == "synthetic" else None,
        "need_chars": need_chars,
        "v": INGEST_VERSION,
        "gen": GENERATOR_VERSION,
    }
    folder = root / f"{cfg.label}-{json_key(ident)}"
    files = CorpusFiles(folder / "train.parquet", folder / "heldout.parquet", {})
    if (folder / "stats.json").exists():
        return CorpusFiles(files.train, files.heldout, json.loads((folder / "stats.json").read_text()))

    t0 = time.perf_counter()
    heldout, carving = _read_given_heldout(cfg, key, seed)
    train, skipped, exhausted, n_read = _read_train(cfg, key, seed, heldout, carving, need_chars)
    if not train.ids:
        where = {"hub": f"{key}.dataset ({cfg.dataset})", "local": f"{key}.path ({cfg.path})"}.get(cfg.source, key)
        raise CorpusError(
            f"{where}: no training documents with text (read {n_read:,} records; skipped {skipped}); check the source and {key}.text_field"
        )
    if not heldout.ids:
        raise CorpusError(f"{key}: no held-out documents; give {key}.heldout_split / heldout_path or raise {key}.heldout_fraction")
    folder.mkdir(parents=True, exist_ok=True)
    train.write(files.train)
    heldout.write(files.heldout)
    stats = {
        "label": cfg.label,
        "source": cfg.source,
        "train_docs": len(train.ids),
        "train_chars": train.chars,
        "heldout_docs": len(heldout.ids),
        "heldout": "carved" if carving else "given",
        "skipped": skipped,
        "exhausted": exhausted,
        "need_chars": need_chars,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_text(folder / "stats.json", json.dumps(stats, indent=1))  # written last: the folder is complete
    return CorpusFiles(files.train, files.heldout, stats)
