"""Everything a study's runs read, made before any training: corpora, tokenizer and streams.

Runs in the driver once Ray is up (the tokenizing and packing are Ray Data jobs); all of it is
cached under <output_dir>/cache by content, so a resumed study prepares nothing twice.
Budget problems (asking for more tokens than a corpus holds) stop the study here, before any
worker starts, with the key to change and the number of tokens available.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.config import Study, StudyConfigError
from raysweep.corpora.synthetic import write_corpus
from raysweep.mixing import derive_seed, mix_share, seeded_order, take_budget
from raysweep.streams import Stream, TokenizedSplit, build_stream, eos_id, tokenize_split
from raysweep.tokenizer import load_tokenizer, tokenizer_id, train_tokenizer

ROLES = ("pre", "post", "ft")  # D_pre, D_post, D_ft


@dataclass(frozen=True)
class StudyData:
    tokenizer_path: Path
    tokenizer_id: str
    vocab_size: int
    pretrain: dict[float, Stream]  # one stage-1 stream per mixing fraction λ
    posttrain: Stream               # D_post's training set (|D_post| tokens), repeated as needed
    finetune: Stream                # D_ft's fixed-budget training set
    heldout: dict[str, Stream]      # role -> held-out evaluation blocks


def prepare(study: Study) -> StudyData:
    t0 = time.perf_counter()
    cache = study.out / "cache"
    files = {}
    for role in ROLES:
        c = getattr(study.corpora, role)
        files[role] = write_corpus(cache / "corpora", c.name, study.seed, c.train_docs, c.heldout_docs)
    print(f"[data] corpora ready in {time.perf_counter() - t0:.1f}s under {cache / 'corpora'}", flush=True)

    t_tok = time.perf_counter()
    tok_path = train_tokenizer([files[r]["train"] for r in ROLES], study.tokenizer.vocab_size, cache / "tokenizers")
    tok_id = tokenizer_id(tok_path)
    vocab = load_tokenizer(tok_path).get_vocab_size()
    print(f"[data] tokenizer {tok_id}: BPE, {vocab:,} tokens, ready in {time.perf_counter() - t_tok:.1f}s", flush=True)
    eos = eos_id(tok_path)

    # Each Ray Data job spends most of its ~1-4 s starting up on a small machine: run them side by side.
    pool = ThreadPoolExecutor(max_workers=8)
    jobs = {
        (role, part): pool.submit(tokenize_split, files[role][part], tok_path, cache / "tokenized", f"{getattr(study.corpora, role).name}-{part}")
        for role in ROLES for part in ("train", "heldout")
    }
    split: dict[tuple[str, str], TokenizedSplit] = {k: f.result() for k, f in jobs.items()}

    _check_budgets(study, split)
    seq = study.model.seq_len
    streams = cache / "streams"

    # Document orders are fixed per corpus (not per node), so the λ shares are nested and
    # the stage-2 set is the same |D_post| documents for every arm.
    order = {r: seeded_order(len(split[r, "train"].lengths), derive_seed(study.seed, "order", r)) for r in ROLES}
    pre_docs = take_budget(split["pre", "train"].lengths, order["pre"], study.pretrain.tokens)
    post_docs = take_budget(split["post", "train"].lengths, order["post"], study.pretrain.post_tokens)
    ft_docs = take_budget(split["ft", "train"].lengths, order["ft"], study.finetune.tokens)

    pretrain = {}
    for lam in study.pretrain.mix_fraction:
        share = mix_share(split["post", "train"].lengths, post_docs, lam)
        parts = {"pre": (split["pre", "train"], pre_docs)}
        if len(share):
            parts["post"] = (split["post", "train"], share)
        pretrain[lam] = pool.submit(build_stream, f"pretrain-mix{lam:g}", parts, derive_seed(study.seed, "pretrain", lam), seq, eos, streams)
    posttrain = pool.submit(build_stream, "posttrain", {"post": (split["post", "train"], post_docs)}, derive_seed(study.seed, "posttrain"), seq, eos, streams)
    finetune = pool.submit(build_stream, "finetune", {"ft": (split["ft", "train"], ft_docs)}, derive_seed(study.seed, "finetune"), seq, eos, streams)
    heldout = {
        r: pool.submit(build_stream, f"heldout-{r}", {r: (split[r, "heldout"], np.arange(len(split[r, "heldout"].lengths)))}, None, seq, eos, streams)
        for r in ROLES
    }
    pretrain = {lam: f.result() for lam, f in pretrain.items()}
    posttrain, finetune = posttrain.result(), finetune.result()
    heldout = {r: f.result() for r, f in heldout.items()}
    pool.shutdown()
    print(f"[data] all streams ready in {time.perf_counter() - t0:.1f}s", flush=True)
    return StudyData(tok_path, tok_id, vocab, pretrain, posttrain, finetune, heldout)


def _check_budgets(study: Study, split: dict[tuple[str, str], TokenizedSplit]) -> None:
    problems = []
    wants = [
        ("pretrain.tokens", "pre", study.pretrain.tokens),
        ("pretrain.post_tokens", "post", study.pretrain.post_tokens),
        ("finetune.tokens", "ft", study.finetune.tokens),
    ]
    for key, role, tokens in wants:
        have = split[role, "train"].n_tokens
        if tokens > have:
            c = getattr(study.corpora, role)
            problems.append(
                f"{key}: {tokens:,} tokens asked, but corpus {c.name!r} holds {have:,} training tokens; "
                f"lower {key} or raise corpora.{role}.train_docs"
            )
    for role in ROLES:
        have = split[role, "heldout"].n_tokens
        need = min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens)
        if have < need:
            problems.append(f"corpora.{role}.heldout_docs: the held-out split holds {have:,} tokens, fewer than eval_tokens ({need:,})")
    if problems:
        raise StudyConfigError("data budgets", problems)
