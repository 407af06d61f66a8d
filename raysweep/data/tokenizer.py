"""The study's tokenizer: a byte-level BPE trained on the study's own corpora, or a pretrained one
(SmolLM2's for the paper's studies) loaded from a local folder or a hub id.

Either way it ends up as one `tokenizer.json` in the study cache, next to a small sidecar naming
its document separator. Its identity (`tokenizer_id`, the hash of that JSON) is stored with every
stream and checkpoint; continuing a checkpoint with a different tokenizer is an error
(raysweep.store.nodes.check_same_tokenizer), never a silent mix of vocabularies.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from raysweep.store.keys import file_digest, json_key, text_key
from raysweep.store.storage import atomic_file

EOS = "<|endoftext|>"  # separator of the trained BPE tokenizer; id 0
SIDECAR = "raysweep-tokenizer.json"  # {"eos": separator token, "origin": where it came from}


def _store(tok, eos: str, origin: str, cache_dir: Path, prefix: str) -> Path:
    """Save a `tokenizers.Tokenizer` into the cache, in a folder named by its content."""
    blob = tok.to_str()
    out = cache_dir / f"{prefix}-{text_key(blob)}" / "tokenizer.json"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / SIDECAR).write_text(json.dumps({"eos": eos, "origin": origin}))
        with atomic_file(out) as tmp:  # written last: a folder with tokenizer.json is complete
            tmp.write_text(blob, encoding="utf-8")
    return out


class NotCached(RuntimeError):
    """Data a caller asked to read from the cache only (--sync-mlflow) is not there."""


def train_tokenizer(
    corpora: list[tuple[object, Callable[[], Iterable[str]]]],
    vocab_size: int,
    cache_dir: Path,
    max_docs: int | None = None,
    cached_only: bool = False,
) -> Path:
    """Train (or reuse) a BPE tokenizer on the first `max_docs` training texts of each corpus.

    corpora: (identity, texts) per corpus, in order: `identity` (JSON data naming what the corpus
    is) keys the cache; `texts()` yields its training texts, read only if the tokenizer is not cached."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    key = json_key({"corpora": [ident for ident, _ in corpora], "vocab": vocab_size, "max_docs": max_docs, "v": 3}, sort_keys=False)
    marker = cache_dir / f"trained-{key}.path"  # training input -> the stored tokenizer it gave
    if marker.exists() and Path(marker.read_text()).exists():
        return Path(marker.read_text())
    if cached_only:
        raise NotCached(f"the trained tokenizer (no {marker})")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = itertools.chain.from_iterable(
        itertools.islice(make(), max_docs) for _, make in corpora
    )  # the first max_docs of each (all if None)
    tok.train_from_iterator(texts, trainer=trainer)
    out = _store(tok, EOS, f"bpe trained on {len(corpora)} corpora", cache_dir, f"bpe-{vocab_size}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(out))
    return out


def load_pretrained(name_or_path: str, revision: str | None, cache_dir: Path) -> Path:
    """A pretrained fast tokenizer from a local folder or a hub id, stored in the cache.

    Raises ValueError naming `tokenizer.pretrained` when it cannot be loaded or has no
    end-of-text token to separate documents with.
    """
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    except Exception as e:  # OSError, ValueError, HTTP errors: all mean "cannot load this"
        raise ValueError(
            f"tokenizer.pretrained: cannot load {name_or_path!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    if not getattr(hf, "is_fast", False):
        raise ValueError(f"tokenizer.pretrained: {name_or_path!r} has no fast (tokenizers) version; raysweep needs tokenizer.json")
    eos = hf.eos_token
    if not eos:
        raise ValueError(f"tokenizer.pretrained: {name_or_path!r} defines no eos_token to separate documents with")
    origin = f"{name_or_path}@{revision}" if revision else name_or_path
    return _store(hf.backend_tokenizer, eos, origin, cache_dir, "pretrained")


def tokenizer_id(path: Path) -> str:
    return file_digest(Path(path))[:16]


def eos_token(path: Path) -> str:
    sidecar = Path(path).parent / SIDECAR
    return json.loads(sidecar.read_text())["eos"] if sidecar.exists() else EOS


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def eos_id(path: Path) -> int:
    """The id of the tokenizer's document separator."""
    return load_tokenizer(path).token_to_id(eos_token(path))
