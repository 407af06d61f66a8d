"""A byte-level BPE tokenizer trained on the study's own corpora, cached by content hash.

The tokenizer's identity (`tokenizer_id`, the hash of its JSON) is stored with every
checkpoint, so a checkpoint is never continued with a different vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

EOS = "<|endoftext|>"  # document separator when packing; id 0


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _texts(paths: list[Path]):
    for p in paths:
        with p.open(encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def train_tokenizer(train_files: list[Path], vocab_size: int, cache_dir: Path) -> Path:
    """Train (or reuse) a BPE tokenizer on the given jsonl files; returns the tokenizer.json path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    key = hashlib.sha256(
        json.dumps({"files": [file_digest(p) for p in train_files], "vocab": vocab_size, "v": 1}).encode()
    ).hexdigest()[:16]
    out = cache_dir / f"bpe-{vocab_size}-{key}" / "tokenizer.json"
    if out.exists():
        return out
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_texts(train_files), trainer=trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tok.save(str(tmp))
    tmp.replace(out)
    return out


def tokenizer_id(path: Path) -> str:
    return file_digest(Path(path))[:16]


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))
