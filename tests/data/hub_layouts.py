"""Small local copies of the reference study's four corpora, laid out the way the Hugging Face hub
serves them (same file names, formats, configs and fields), so the hub loader is tested offline.

    allenai/c4                              en/c4-{train,validation}.NNNNN-of-NNNNN.json.gz; README configs: en
    m-a-p/MusicPile                         data/train-NNNNN-of-NNNNN.parquet (id, text, src); one split
    jablonkagroup/chempile-education        README configs: default with train / validation / test parquet
    conceptofmind/flan2021_submix_original  data/train-NNNNN-of-NNNNN.parquet (inputs, targets, task_name, ...)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = "the of and a to in is was for on that with as by at from his her they this music chord key scale acid base salt water".split()


def _text(kind: str, i: int, n_words: int = 40) -> str:
    # deterministic, varied, non-repeating across i
    return f"{kind} {i}: " + " ".join(WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(n_words))


def _readme(configs: str) -> str:
    return f"---\nconfigs:\n{configs}---\n# local copy for tests\n"


def c4(root: Path, train_docs: int = 400, val_docs: int = 60, shards: int = 2) -> Path:
    repo = root / "allenai--c4"
    (repo / "en").mkdir(parents=True, exist_ok=True)
    per = train_docs // shards
    for k in range(shards):
        with gzip.open(repo / "en" / f"c4-train.{k:05d}-of-{shards:05d}.json.gz", "wt", encoding="utf-8") as f:
            for i in range(k * per, (k + 1) * per):
                f.write(
                    json.dumps({"text": _text("web", i), "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{i}"}) + "\n"
                )
    with gzip.open(repo / "en" / "c4-validation.00000-of-00001.json.gz", "wt", encoding="utf-8") as f:
        for i in range(val_docs):
            f.write(
                json.dumps({"text": _text("webval", i), "timestamp": "2019-04-21T10:31:05Z", "url": f"https://example.org/val/{i}"}) + "\n"
            )
    (repo / "README.md").write_text(
        _readme(
            "- config_name: en\n  data_files:\n  - split: train\n    path: en/c4-train.*.json.gz\n"
            "  - split: validation\n    path: en/c4-validation.*.json.gz\n"
        )
    )
    return repo


def musicpile(root: Path, docs: int = 600, duplicates: int = 40) -> Path:
    """One train split (carve a held-out one); the last `duplicates` records repeat earlier texts."""
    repo = root / "m-a-p--MusicPile"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    texts = [_text("abc notation X:1 K:G |: G A B c :|", i) for i in range(docs - duplicates)]
    texts += texts[:duplicates]  # exact duplicates, as real web-scale corpora have
    half = len(texts) // 2
    for k, chunk in enumerate((texts[:half], texts[half:])):
        start = k * half
        pq.write_table(
            pa.table(
                {
                    "id": [f"mp-{start + i}" for i in range(len(chunk))],
                    "text": chunk,
                    "src": ["wiki" if i % 2 else "abc" for i in range(len(chunk))],
                }
            ),
            repo / "data" / f"train-{k:05d}-of-00002.parquet",
        )
    return repo


def chempile(root: Path, docs: dict[str, int] | None = None) -> Path:
    repo = root / "jablonkagroup--chempile-education"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    docs = docs or {"train": 400, "validation": 50, "test": 50}
    for split, n in docs.items():
        pq.write_table(
            pa.table({"text": [_text(f"chem-{split} 2 H2 + O2 -> 2 H2O", i) for i in range(n)]}),
            repo / "data" / f"{split}-00000-of-00001.parquet",
        )
    (repo / "README.md").write_text(
        _readme("- config_name: default\n  data_files:\n" + "".join(f"  - split: {s}\n    path: data/{s}-*.parquet\n" for s in docs))
    )
    return repo


def flan(root: Path, docs: int = 500) -> Path:
    repo = root / "conceptofmind--flan2021_submix_original"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "inputs": [f"Question {i}: what is {i} plus {i % 7}?" for i in range(docs)],
                "targets": [str(i + i % 7) for i in range(docs)],
                "task_source": ["Flan2021"] * docs,
                "task_name": [f"task{i % 13}" for i in range(docs)],
                "template_type": ["zs_opt"] * docs,
            }
        ),
        repo / "data" / "train-00000-of-00001.parquet",
    )
    return repo


def pretrained_tokenizer(root: Path, texts: list[str], vocab_size: int = 400) -> Path:
    """A tokenizer folder as `save_pretrained` writes it (the shape SmolLM2's hub repo has)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>", "<|im_start|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    folder = root / "SmolLM2-like-tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>").save_pretrained(folder)
    return folder
