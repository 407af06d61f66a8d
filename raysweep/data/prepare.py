"""Everything a study's runs read, made before any training: corpora, tokenizer and streams.

    corpora (ingest: source -> train / held-out documents)
      -> tokenizer (trained BPE, or a pretrained one)
      -> tokenized splits (Ray Data)
      -> selections (raysweep.data.mixing: exact token shares, seeded)
      -> streams (Ray Data: interleave, pack): stage 1 per λ, stage 2 per (λ, replay), stage 3, held-out

Runs in the driver once Ray is up; all of it is cached under <output_dir>/cache by content,
so a resumed study prepares nothing twice. Budget problems (asking for more tokens than a corpus
holds) stop the study here, before any worker starts, with the key to change and the number of
tokens available.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.config import Study, StudyConfigError
from raysweep.data.blocks import Stream
from raysweep.data.corpora.sources import CorpusError, CorpusFiles, ingest
from raysweep.data.mixing import Selection, complement_share, mix_share, replay_tokens, seeded_order, take_budget, take_tokens
from raysweep.data.streams import TokenizedSplit, build_stream, eos_id, tokenize_split
from raysweep.data.tokenizer import load_pretrained, load_tokenizer, tokenizer_id, train_tokenizer
from raysweep.keys import derive_seed, stream_seed

ROLES = ("pre", "post", "ft")  # D_pre, D_post, D_ft
CHARS_PER_TOKEN_GUESS = 4.5  # first read of a hub/local corpus; topped up if its tokens fall short
TOP_UPS = 4


@dataclass(frozen=True)
class StudyData:
    tokenizer_path: Path
    tokenizer_id: str
    vocab_size: int
    pretrain: dict[float, Stream]  # stage-1 stream per mixing fraction λ
    posttrain: dict[tuple[float, float], Stream]  # stage-2 stream per (λ, replay fraction)
    finetune: Stream  # D_ft's fixed-budget training set
    heldout: dict[str, Stream]  # role -> held-out evaluation blocks
    corpora: dict[str, dict]  # role -> what was read (documents, skipped, ...)


def needed_tokens(study: Study) -> dict[str, int]:
    """Training tokens each corpus must hold for the study's budgets."""
    p1, p2 = study.pretrain, study.posttrain
    replay = replay_tokens(p1.post_tokens, max(p2.replay))  # the largest stage-2 set is |D_post|
    return {"pre": max(p1.tokens, replay), "post": p1.post_tokens, "ft": study.finetune.tokens}


def prepare(study: Study) -> StudyData:
    t0 = time.perf_counter()
    cache = study.out / "cache"
    need = needed_tokens(study)
    configs = {r: getattr(study.corpora, r) for r in ROLES}
    need_chars = {r: None if configs[r].source == "synthetic" else int(need[r] * CHARS_PER_TOKEN_GUESS) for r in ROLES}
    with ThreadPoolExecutor(max_workers=8) as pool:
        files = _ingest_all(study, configs, need_chars, pool, cache)
        print(
            f"[data] corpora ready in {time.perf_counter() - t0:.1f}s: "
            + "; ".join(
                f"{r} {files[r].stats['label']} {files[r].stats['train_docs']:,}+{files[r].stats['heldout_docs']:,} docs ({files[r].stats['heldout']} held-out)"
                for r in ROLES
            ),
            flush=True,
        )

        t_tok = time.perf_counter()
        tok = study.tokenizer
        try:
            tok_path = (
                load_pretrained(tok.pretrained, tok.revision, cache / "tokenizers")
                if tok.pretrained
                else train_tokenizer([files[r].train for r in ROLES], tok.vocab_size, cache / "tokenizers", tok.train_docs)
            )
        except ValueError as e:
            raise StudyConfigError("tokenizer", [str(e)]) from None
        tok_id, vocab = tokenizer_id(tok_path), load_tokenizer(tok_path).get_vocab_size()
        kind = f"pretrained {tok.pretrained}" if tok.pretrained else "BPE trained here"
        print(f"[data] tokenizer {tok_id}: {kind}, {vocab:,} tokens, ready in {time.perf_counter() - t_tok:.1f}s", flush=True)
        _check_vocab(study, vocab)
        eos = eos_id(tok_path)

        split = _tokenize_all(files, tok_path, cache, pool)
        for _ in range(TOP_UPS):  # a hub/local corpus read too short for its budget: read more
            short = [
                r
                for r in ROLES
                if split[r, "train"].n_tokens < need[r]
                and not files[r].stats["exhausted"]
                and (configs[r].train_docs is None or files[r].stats["train_docs"] < configs[r].train_docs)
            ]
            if not short:
                break
            for r in short:
                have = max(split[r, "train"].n_tokens, 1)
                need_chars[r] = math.ceil(files[r].stats["train_chars"] * need[r] / have * 1.1) + 1
                print(f"[data] {r}: {have:,} of {need[r]:,} tokens read; reading more", flush=True)
            files.update(_ingest_all(study, {r: configs[r] for r in short}, need_chars, pool, cache))
            split.update(_tokenize_all({r: files[r] for r in short}, tok_path, cache, pool))

        _check_budgets(study, split, files, need)
        pretrain, posttrain, finetune, heldout = _streams(study, split, eos, tok_id, cache / "streams", pool)
    print(f"[data] all streams ready in {time.perf_counter() - t0:.1f}s", flush=True)
    return StudyData(tok_path, tok_id, vocab, pretrain, posttrain, finetune, heldout, {r: files[r].stats for r in ROLES})


def _ingest_all(study, configs, need_chars, pool, cache) -> dict[str, CorpusFiles]:
    jobs = {r: pool.submit(ingest, c, f"corpora.{r}", study.seed, cache / "corpora", need_chars[r]) for r, c in configs.items()}
    problems = []
    out = {}
    for r, job in jobs.items():
        try:
            out[r] = job.result()
        except CorpusError as e:
            problems.append(str(e))
    if problems:
        raise StudyConfigError("corpora", problems)
    return out


def _tokenize_all(files: dict[str, CorpusFiles], tok_path: Path, cache: Path, pool) -> dict[tuple[str, str], TokenizedSplit]:
    # Each Ray Data job spends most of its ~1-4 s starting up on a small machine: run them side by side.
    jobs = {
        (r, part): pool.submit(tokenize_split, getattr(f, part), tok_path, cache / "tokenized", f"{f.stats['label']}-{part}")
        for r, f in files.items()
        for part in ("train", "heldout")
    }
    return {k: j.result() for k, j in jobs.items()}


def _streams(study: Study, split, eos: int, tok_id: str, where: Path, pool):
    seq, seed = study.model.seq_len, study.seed
    p1, p2 = study.pretrain, study.posttrain
    lengths = {r: split[r, "train"].lengths for r in ROLES}
    # Document orders are fixed per corpus (not per node), so shares are nested prefixes of one order.
    order = {r: seeded_order(len(lengths[r]), derive_seed(seed, "order", r)) for r in ROLES}
    pre = take_budget(lengths["pre"], order["pre"], p1.tokens)
    post_all = take_budget(lengths["post"], order["post"], p1.post_tokens)

    def stream(name, parts: dict[str, tuple[str, Selection]], s: int | None):
        return pool.submit(build_stream, name, {k: (split[r, "train"], sel) for k, (r, sel) in parts.items()}, s, seq, eos, where, tok_id)

    pretrain = {}
    for mix in p1.mix_fraction:
        parts = {"pre": ("pre", pre)}
        share = mix_share(lengths["post"], order["post"], p1.post_tokens, mix)
        if share.tokens:
            parts["post"] = ("post", share)
        pretrain[mix] = stream(f"pretrain-mix{mix:g}", parts, derive_seed(seed, "pretrain", mix))

    posttrain, built = {}, {}
    for mix in p1.mix_fraction:
        stage2 = complement_share(lengths["post"], order["post"], p1.post_tokens, mix) if p1.mode == "compute_matched" else post_all
        for r in p2.replay:
            parts = {"post": ("post", stage2)}
            n_replay = replay_tokens(stage2.tokens, r)
            if n_replay:
                parts["replay"] = ("pre", take_tokens(lengths["pre"], order["pre"], 0, n_replay))  # D_pre seen in stage 1
            name = (f"posttrain-mix{mix:g}" if p1.mode == "compute_matched" else "posttrain") + (f"-replay{r:g}" if r else "")
            if name not in built:  # in sweep mode every λ shares one stage-2 stream per replay fraction
                built[name] = stream(name, parts, stream_seed(seed, name))
            posttrain[mix, r] = built[name]
    ft = take_budget(lengths["ft"], order["ft"], study.finetune.tokens)
    finetune = stream("finetune", {"ft": ("ft", ft)}, derive_seed(seed, "finetune"))
    heldout = {
        r: pool.submit(
            build_stream,
            f"heldout-{r}",
            {r: (split[r, "heldout"], Selection.whole(np.arange(len(split[r, "heldout"].lengths)), split[r, "heldout"].lengths))},
            None,
            seq,
            eos,
            where,
            tok_id,
        )
        for r in ROLES
    }
    return (
        {k: f.result() for k, f in pretrain.items()},
        {k: f.result() for k, f in posttrain.items()},
        finetune.result(),
        {r: f.result() for r, f in heldout.items()},
    )


def _check_vocab(study: Study, vocab: int) -> None:
    from raysweep.presets import PRESETS

    fixed = PRESETS[study.model.preset].vocab_size
    if fixed is not None and vocab > fixed:
        raise StudyConfigError(
            "tokenizer",
            [
                f"model.preset: {study.model.preset!r} has a fixed vocabulary of {fixed:,} but the tokenizer has {vocab:,} tokens; "
                "use a preset that takes the tokenizer's size, or a tokenizer that fits"
            ],
        )


def _check_budgets(study: Study, split, files: dict[str, CorpusFiles], need: dict[str, int]) -> None:
    problems = []
    keys = {
        "pre": "pretrain.tokens" + (" / posttrain.replay" if need["pre"] > study.pretrain.tokens else ""),
        "post": "pretrain.post_tokens",
        "ft": "finetune.tokens",
    }
    for role in ROLES:
        have = split[role, "train"].n_tokens
        if need[role] > have:
            c, st = getattr(study.corpora, role), files[role].stats
            if c.source == "synthetic":
                fix = f"raise corpora.{role}.train_docs"
            elif st["exhausted"]:
                fix = f"the source holds no more documents ({st['train_docs']:,} read)"
            else:
                fix = f"raise corpora.{role}.train_docs (it stopped reading at {st['train_docs']:,} documents)"
            problems.append(
                f"{keys[role]}: {need[role]:,} tokens asked, but corpus {c.label!r} holds {have:,} training tokens; lower {keys[role].split(' ')[0]} or {fix}"
            )
    for role in ROLES:
        have = split[role, "heldout"].n_tokens
        wanted = min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens)
        if have < wanted:
            problems.append(f"corpora.{role}.heldout_docs: the held-out split holds {have:,} tokens, fewer than eval_tokens ({wanted:,})")
    if problems:
        raise StudyConfigError("data budgets", problems)
