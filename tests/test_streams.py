"""The Ray Data streams of the smoke study: exact mixing, held-out data kept out, determinism."""

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq

from raysweep.streams import build_stream, read_blocks


def test_mixed_stream_holds_exactly_the_lambda_share(smoke_data):
    study, data = smoke_data
    post_set = data.posttrain.stats["tokens"]["post"]
    for lam, stream in data.pretrain.items():
        tokens = stream.stats["tokens"]
        # D_pre budget: within one document of pretrain.tokens (separators counted)
        assert tokens["pre"] - stream.stats["documents"]["pre"] <= study.pretrain.tokens
        mixed = tokens.get("post", 0)
        # λ share of the D_post set, exact to one document, and never more than one pass
        assert mixed <= post_set
        assert abs(mixed - lam * post_set) <= 200, (lam, mixed, post_set)
        assert stream.n_blocks * stream.stats["block_len"] <= sum(tokens.values())
    assert data.pretrain[0.0].stats["documents"].get("post", 0) == 0


def test_streams_are_reproducible_bit_for_bit(smoke_data, tmp_path):
    study, data = smoke_data
    stream = data.pretrain[0.5]
    rebuilt = build_stream("again", _parts_of(study, data, 0.5), stream.stats["seed"], study.model.seq_len, 0, tmp_path)
    assert (read_blocks(rebuilt) == read_blocks(stream)).all()


def _parts_of(study, data, lam):
    # rebuild the 0.5 arm's parts from the same pure selection the study used
    from raysweep.mixing import derive_seed, mix_share, seeded_order, take_budget
    from raysweep.streams import TokenizedSplit

    tok = study.out / "cache" / "tokenized"
    def split(name):
        path = next(tok.glob(f"{name}-train-*.parquet"))
        lengths = pq.read_table(path, columns=["tokens"]).column("tokens").combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
        return TokenizedSplit(path, lengths.astype(np.int64))
    pre, post = split("general"), split("notation")
    pre_docs = take_budget(pre.lengths, seeded_order(len(pre.lengths), derive_seed(study.seed, "order", "pre")), study.pretrain.tokens)
    post_docs = take_budget(post.lengths, seeded_order(len(post.lengths), derive_seed(study.seed, "order", "post")), study.pretrain.post_tokens)
    return {"pre": (pre, pre_docs), "post": (post, mix_share(post.lengths, post_docs, lam))}


def test_heldout_documents_never_reach_a_training_stream(smoke_data):
    study, data = smoke_data
    def doc_hashes(stream):
        blocks = read_blocks(stream)
        flat = blocks.reshape(-1)
        docs = np.split(flat, np.flatnonzero(flat == 0) + 1)
        # whole documents only: the first and last piece of each block may be cut
        return {hashlib.sha1(d.tobytes()).hexdigest() for d in docs[1:-1] if len(d) > 8}
    heldout = set().union(*(doc_hashes(s) for s in data.heldout.values()))
    assert heldout
    for stream in [*data.pretrain.values(), data.posttrain, data.finetune]:
        assert not heldout & doc_hashes(stream), stream.stats["name"]


def test_stream_stats_are_on_disk(smoke_data):
    _, data = smoke_data
    stats = json.loads((data.posttrain.path.parent / "stats.json").read_text())
    assert stats == data.posttrain.stats and 0 <= stats["waste_fraction"] < 0.05
