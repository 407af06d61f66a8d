"""Everything a study's runs read, made before any training: tokenizer, token shards and stream plans.

    tokenizer (a BPE trained on each corpus's first training documents, or a pretrained one)
      -> token shards per corpus (raysweep.data.corpus: read and tokenized in parallel, Ray Data;
         a small built-in corpus in this process)
      -> selections (raysweep.data.mixing: exact token shares, seeded)
      -> stream plans (raysweep.data.streams, in the driver from the length index): stage 1 per λ,
         stage 2 per (λ, replay), stage 3, held-out

Runs in the driver once Ray is up; all of it is cached under <output_dir>/cache by content, so a
resumed study prepares nothing twice. Budget problems (asking for more tokens than a corpus holds,
a disk too small for the shards) stop the study here, before any worker starts, with the key to
change and the numbers.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raysweep.config import Study, StudyInputError
from raysweep.data.blocks import Stream
from raysweep.data.corpora.sources import SYNTHETIC_TRAIN_DOCS, CorpusError, training_texts
from raysweep.data.corpus import TokenCorpus, tokenize_corpus
from raysweep.data.mirror import data_mirror, publish
from raysweep.data.mixing import (
    ROLES,
    Selection,
    complement_share,
    mix_share,
    needed_tokens,
    replay_tokens,
    seeded_order,
    take_budget,
    take_tokens,
)
from raysweep.data.shards import cache_bytes
from raysweep.data.slices import choose_slices
from raysweep.data.streams import build_plan
from raysweep.data.tokenizer import eos_id, load_pretrained, load_tokenizer, tokenizer_id, train_tokenizer
from raysweep.store.keys import derive_seed, stream_seed


@dataclass(frozen=True)
class StudyData:
    tokenizer_path: Path
    tokenizer_id: str
    vocab_size: int
    pretrain: dict[float, Stream]  # stage-1 stream per mixing fraction λ
    posttrain: dict[tuple[float, float], Stream]  # stage-2 stream per (λ, replay fraction)
    finetune: Stream  # D_ft's fixed-budget training set
    heldout: dict[str, Stream]  # role -> held-out evaluation blocks
    corpora: dict[str, dict]  # role -> what was read (documents, shards, skipped, ...)
    heldout_slices: dict[str, list[Stream]] = field(default_factory=dict)  # role -> its held-out set's slices ({}: none)


def _identity(study: Study, role: str) -> dict:
    cfg = getattr(study.corpora, role)
    return {"spec": cfg.model_dump(mode="json"), "seed": study.seed if cfg.source == "synthetic" else None}


def make_tokenizer(study: Study, cache: Path, cached_only: bool = False) -> Path:
    """The study's tokenizer file: a pretrained one, or a BPE trained on the first
    `tokenizer.train_docs` training documents of each corpus (read from the source, in order)."""
    tok = study.tokenizer
    try:
        if tok.pretrained:
            return load_pretrained(tok.pretrained, tok.revision, cache / "tokenizers")
        corpora = [(_identity(study, r), lambda r=r: training_texts(getattr(study.corpora, r), f"corpora.{r}", study.seed)) for r in ROLES]
        return train_tokenizer(corpora, tok.vocab_size, cache / "tokenizers", tok.train_docs, cached_only)
    except CorpusError as e:
        raise StudyInputError("corpora", [str(e)]) from None
    except ValueError as e:
        raise StudyInputError("tokenizer", [str(e)]) from None


def check_corpora(study: Study) -> None:
    """Each local corpus's first record read and rendered (raysweep.data.corpora.sources.probe_local),
    before Ray starts; every problem at once, each with its key."""
    from raysweep.data.corpora.sources import CorpusError, probe_local

    problems = []
    for role in ROLES:
        cfg = getattr(study.corpora, role)
        if cfg.source == "local":
            try:
                probe_local(cfg, f"corpora.{role}")
            except CorpusError as e:
                problems.append(str(e))
    if problems:
        raise StudyInputError("corpora", problems)


def prepare(study: Study, cached_only: bool = False) -> StudyData:
    """`cached_only` (--sync-mlflow): the study's data as its cache holds it, without Ray, reading or
    tokenizing nothing (NotCached names what is missing); nothing is published to a data mirror."""
    t0 = time.perf_counter()
    cache = study.out / "cache"
    need = needed_tokens(study)
    tok_path = make_tokenizer(study, cache, cached_only)
    tok_id, vocab = tokenizer_id(tok_path), load_tokenizer(tok_path).get_vocab_size()
    kind = (
        f"pretrained {study.tokenizer.pretrained}"
        if study.tokenizer.pretrained
        else f"BPE trained here on the first {study.tokenizer.train_docs:,} training documents of each corpus (all of a smaller one)"
    )
    print(f"[data] tokenizer {tok_id}: {kind}, {vocab:,} tokens, ready in {time.perf_counter() - t0:.1f}s", flush=True)
    _check_vocab(study, vocab)
    _check_disk(study, need, vocab, cache)
    corpora = _tokenize_all(study, need, tok_path, tok_id, vocab, cache / "tokens", cached_only)
    print("[data] corpora: " + "; ".join(corpus_line(r, corpora[r].stats) for r in ROLES), flush=True)
    _check_budgets(study, corpora, need)
    eos = eos_id(tok_path)
    pretrain, posttrain, finetune, heldout = _streams(study, corpora, eos, tok_id, cache / "streams")
    print("[data] held-out sets: " + heldout_line(study, corpora, heldout), flush=True)
    slices = heldout_slices(study, corpora, eos, tok_id, cache / "streams")
    mirror = data_mirror(study.checkpoints)
    if mirror and not cached_only:  # workers on other machines fetch what they read from beside the nodes
        sliced = [s for role in slices.values() for s in role]
        publish([*pretrain.values(), *posttrain.values(), finetune, *heldout.values(), *sliced], cache, mirror)
    print(f"[data] all streams ready in {time.perf_counter() - t0:.1f}s", flush=True)
    stats = {r: corpora[r].stats for r in ROLES}
    return StudyData(tok_path, tok_id, vocab, pretrain, posttrain, finetune, heldout, stats, slices)


def prepare_cached(study: Study) -> StudyData:
    """The study's data for --sync-mlflow: node keys hash the streams' stats, which the data cache
    holds, so repairing MLflow needs neither Ray nor a tokenizer run (`prepare` with cached_only)."""
    from raysweep.data.tokenizer import NotCached

    try:
        return prepare(study, cached_only=True)
    except NotCached as e:
        raise StudyInputError(
            "--sync-mlflow",
            [
                f"it reads the study's data cache under {study.out / 'cache'}, which lacks {e}: run the study without "
                "--sync-mlflow (it trains nothing already finished), or give the output_dir the study ran with"
            ],
        ) from None


def heldout_slices(study: Study, corpora: dict[str, TokenCorpus], eos: int, tok_id: str, where: Path) -> dict[str, list[Stream]]:
    """Each held-out set cut into `analysis.heldout_slices` disjoint slices of whole documents
    (raysweep.data.slices), one stream each; fewer where a set is too small for every slice to
    fill an evaluation, none below two (said on one line either way)."""
    wanted, seq = study.analysis.heldout_slices, block_len(study) - 1
    if wanted < 2:
        print(f"[data] held-out slices: none (analysis.heldout_slices is {wanted})", flush=True)
        return {}
    eval_tokens = min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens)
    cut = choose_slices({r: corpora[r].heldout.lengths for r in ROLES}, wanted, seq + 1, eval_tokens)
    if not cut:
        print(
            f"[data] held-out slices: none; a held-out set is too small for two slices of {eval_tokens:,} tokens "
            f"(raise corpora.<role>.heldout_docs, or lower eval_tokens)",
            flush=True,
        )
        return {}
    k, out = len(cut[ROLES[0]]), {}
    for r in ROLES:
        held = corpora[r].heldout
        out[r] = [
            build_plan(f"heldout-{r}-slice{i}of{k}", {r: (held, Selection.whole(rows, held.lengths))}, None, seq, eos, where, tok_id)
            for i, rows in enumerate(cut[r])
        ]
    fewer = f" (not {wanted}: the smallest held-out set holds too few tokens for more)" if k < wanted else ""
    print(
        f"[data] held-out slices: {k} per set{fewer}, disjoint by document, each scoring up to {eval_tokens:,} tokens; "
        "every final checkpoint is scored on each after training",
        flush=True,
    )
    return out


def heldout_line(study: Study, corpora: dict, heldout: dict) -> str:
    """How many documents and blocks each held-out set holds, and how many blocks an evaluation
    scores (raysweep.data.streams.sample_blocks: all, or a seeded sample across the whole set)."""
    eval_tokens = min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens)
    parts = []
    for r in ROLES:
        blocks = heldout[r].n_blocks
        scored = min(blocks, max(1, eval_tokens // block_len(study)))
        how = "all of them" if scored == blocks else f"a seeded sample of {scored:,} from across the set"
        parts.append(f"{r} {corpora[r].stats['heldout_docs']:,} documents in {blocks:,} blocks, an evaluation scores {how}")
    return "; ".join(parts)


def corpus_line(role: str, st: dict) -> str:
    """A corpus in the data summary: documents trained on and held out, and what was read of what
    is there (shards are read whole, so the documents available are known once all are read)."""
    docs, shards, available = st["documents_read"], st["shards_read"], st["shards_available"]
    if shards >= available:
        read = f"all {docs:,} documents of its {available} shard{'s' if available != 1 else ''} read"
    else:
        read = f"{docs:,} documents read from {shards} of {available} shards (the budgets need no more; the rest is unread)"
    return f"{role} {st['label']}: {st['train_docs']:,} trained on + {st['heldout_docs']:,} held out ({st['heldout']}), {read}"


# A built-in corpus this small tokenizes in well under a second in this process; Ray Data's
# start-up (its actors and a worker per task) costs several seconds (bench/RESULTS.md).
IN_PROCESS_DOCS = 50_000


def _parallelism() -> tuple[int, bool]:
    """(shards read side by side, whether Ray is up): the cluster's CPUs when it is."""
    import ray

    if not ray.is_initialized():
        return 1, False
    return max(1, int(ray.cluster_resources().get("CPU", 1))), True


def in_ray_tasks(cfg, ray_up: bool) -> bool:
    """Whether a corpus is tokenized in Ray Data tasks: always when Ray is up, except a small
    built-in one (its size is known before reading; a hub or local corpus's is not)."""
    if cfg.source == "synthetic":
        return ray_up and (cfg.train_docs or SYNTHETIC_TRAIN_DOCS) + cfg.heldout_docs > IN_PROCESS_DOCS
    return ray_up


def _tokenize_all(
    study: Study, need: dict, tok_path: Path, tok_id: str, vocab: int, root: Path, cached_only: bool = False
) -> dict[str, TokenCorpus]:
    """The three corpora, side by side (their shard tasks share the cluster's CPUs)."""
    wave, ray_up = _parallelism()
    with ThreadPoolExecutor(max_workers=len(ROLES)) as pool:
        jobs = {
            r: pool.submit(
                tokenize_corpus,
                getattr(study.corpora, r),
                f"corpora.{r}",
                study.seed,
                root,
                tok_path,
                tok_id,
                vocab,
                need[r],
                wave,
                in_ray_tasks(getattr(study.corpora, r), ray_up),
                cached_only,
                study.conventions.heldout_carving,
            )
            for r in ROLES
        }
        problems, out = [], {}
        for r, job in jobs.items():
            try:
                out[r] = job.result()
            except CorpusError as e:
                problems.append(str(e))
    if problems:
        raise StudyInputError("corpora", problems)
    return out


def block_len(study: Study) -> int:
    """Tokens per block (conventions.packing): seq_len + 1 (seq_len predictions), or seq_len (seq_len − 1)."""
    return study.model.seq_len + (study.conventions.packing == "seq_plus_one")


def _streams(study: Study, corpora: dict[str, TokenCorpus], eos: int, tok_id: str, where: Path):
    seq, seed = block_len(study) - 1, study.seed  # build_plan cuts blocks of seq + 1
    p1, p2 = study.pretrain, study.posttrain
    views = {r: corpora[r].train for r in ROLES}
    lengths = {r: views[r].lengths for r in ROLES}
    # Document orders are fixed per corpus (not per node), so shares are nested prefixes of one order.
    order = {r: seeded_order(len(lengths[r]), derive_seed(seed, "order", r)) for r in ROLES}
    pre = take_budget(lengths["pre"], order["pre"], p1.tokens)
    post_all = take_budget(lengths["post"], order["post"], p1.post_tokens)

    def stream(name, parts: dict[str, tuple[str, Selection]], s: int | None) -> Stream:
        return build_plan(name, {k: (views[r], sel) for k, (r, sel) in parts.items()}, s, seq, eos, where, tok_id)

    pretrain = {}
    for mix in p1.mix_fraction:
        parts = {"pre": ("pre", pre)}
        share = mix_share(lengths["post"], order["post"], p1.post_tokens, mix)
        if share.tokens:
            parts["post"] = ("post", share)
        # conventions.stage1_mixing "blocks": each corpus packed on its own, in order (no seed); the
        # pass order then permutes whole blocks. One corpus alone (λ = 0) is the same stream either way
        apart = study.conventions.stage1_mixing == "blocks" and len(parts) > 1
        pretrain[mix] = stream(
            f"pretrain-mix{mix:g}" + ("-blocks" if apart else ""), parts, None if apart else derive_seed(seed, "pretrain", mix)
        )
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
    finetune = stream(
        "finetune", {"ft": ("ft", take_budget(lengths["ft"], order["ft"], study.finetune.tokens))}, derive_seed(seed, "finetune")
    )
    heldout = {}
    for r in ROLES:
        held = corpora[r].heldout
        heldout[r] = build_plan(
            f"heldout-{r}", {r: (held, Selection.whole(np.arange(len(held.lengths)), held.lengths))}, None, seq, eos, where, tok_id
        )
    return pretrain, posttrain, finetune, heldout


def _check_vocab(study: Study, vocab: int) -> None:
    fixed = study.model.shape.vocab_size
    if fixed is not None and vocab > fixed:
        raise StudyInputError(
            "tokenizer",
            [
                f"model.preset: {study.model.preset!r} has a fixed vocabulary of {fixed:,} but the tokenizer has {vocab:,} tokens; "
                "use a preset that takes the tokenizer's size, or a tokenizer that fits"
            ],
        )


def _check_disk(study: Study, need: dict, vocab: int, cache: Path) -> None:
    """Fail before reading anything if the shards cannot fit (hub and local corpora: their budgets are known)."""
    want = sum(cache_bytes(study, vocab).values())  # hub and local corpora: the generated ones are small
    if not want:
        return
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if free < want * 1.1:
        raise StudyInputError(
            "storage",
            [
                f"output_dir: the token shards need ≈ {want / 2**30:,.2f} GiB under {cache}, {free / 2**30:,.2f} GiB are free; "
                "free space or choose another output_dir"
            ],
        )


def _check_budgets(study: Study, corpora: dict[str, TokenCorpus], need: dict[str, int]) -> None:
    problems = []
    keys = {
        "pre": "pretrain.tokens" + (" / posttrain.replay" if need["pre"] > study.pretrain.tokens else ""),
        "post": "pretrain.post_tokens",
        "ft": "finetune.tokens",
    }
    for role in ROLES:
        have = corpora[role].train.n_tokens
        if need[role] > have:
            c, st = getattr(study.corpora, role), corpora[role].stats
            if c.source == "synthetic":
                fix = f"raise corpora.{role}.train_docs"
            elif st["exhausted"]:
                fix = f"the source holds no more documents ({st['documents_read']:,} read)"
            else:
                fix = f"raise corpora.{role}.train_docs (it stopped reading at {st['train_docs']:,} documents)"
            problems.append(
                f"{keys[role]}: {need[role]:,} tokens asked, but corpus {c.label!r} holds {have:,} training tokens; lower {keys[role].split(' ')[0]} or {fix}"
            )
    for role in ROLES:
        have = corpora[role].heldout.n_tokens
        wanted = min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens)
        if have < wanted:
            problems.append(f"corpora.{role}.heldout_docs: the held-out split holds {have:,} tokens, fewer than eval_tokens ({wanted:,})")
    if problems:
        raise StudyInputError("data budgets", problems)
