"""The Ray Data streams: exact mixing (checked on the packed blocks), held-out data kept out, determinism."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysweep.data.blocks import read_blocks, reference_blocks
from raysweep.data.mixing import mix_share, replay_tokens, seeded_order, take_budget
from raysweep.data.streams import TokenizedSplit, build_stream
from raysweep.keys import derive_seed

EOS = 0


def _fake_split(path, docs: list[np.ndarray]) -> TokenizedSplit:
    table = pa.table(
        {
            "row": np.arange(len(docs)),
            "id": [str(i) for i in range(len(docs))],
            "hash": [str(i) for i in range(len(docs))],
            "tokens": pa.array([d.astype(np.int32) for d in docs], type=pa.list_(pa.int32())),
        }
    )
    pq.write_table(table, path)
    return TokenizedSplit(path, np.array([len(d) for d in docs], dtype=np.int64))


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_ray_stream_equals_the_specification_and_counts_per_source(ray_local, tmp_path, lam):
    """Each source uses its own token-id range, so the blocks themselves tell how many tokens came from where."""
    rng = np.random.default_rng(7)
    pre_docs = [rng.integers(1, 1000, rng.integers(1, 90)) for _ in range(300)]
    post_docs = [rng.integers(1000, 2000, rng.integers(1, 90)) for _ in range(200)]
    pre, post = _fake_split(tmp_path / "pre.parquet", pre_docs), _fake_split(tmp_path / "post.parquet", post_docs)
    pre_sel = take_budget(pre.lengths, seeded_order(300, 1), 5000)
    post_sel = mix_share(post.lengths, seeded_order(200, 2), 4000, lam)
    parts = {"pre": (pre, pre_sel)} | ({"post": (post, post_sel)} if post_sel.tokens else {})
    stream = build_stream("t", parts, 11, 31, EOS, tmp_path / "streams")
    blocks = read_blocks(stream)
    spec = reference_blocks({"pre": pre_docs, "post": post_docs}, {k: v[1] for k, v in parts.items()}, 11, 32, EOS)
    assert blocks.shape == spec.shape and (blocks == spec).all()  # byte for byte what mixing.py + streams.pack specify
    # realised tokens per source, counted in the packed blocks: exact to one block (the dropped tail)
    flat = blocks.reshape(-1)
    n_post, n_pre = int(((flat >= 1000) & (flat < 2000)).sum()), int(((flat >= 1) & (flat < 1000)).sum())
    n_sep = int((flat == EOS).sum())
    assert n_pre + n_post + n_sep == blocks.size
    assert round(lam * 4000) + 5000 - blocks.size < 32  # waste under one block
    for sel, docs, n in ((post_sel, post_docs, n_post), (pre_sel, pre_docs, n_pre)):
        content = sum(min(b, len(docs[r])) - a for r, a, b in zip(sel.rows, sel.start, sel.stop))  # selected non-separator tokens
        assert 0 <= content - n < 32  # every selected token is in the blocks, except the tail cut off (< one block)
    assert stream.stats["tokens"] == {k: v[1].tokens for k, v in parts.items()}
    assert stream.stats["waste_tokens"] == sum(stream.stats["tokens"].values()) - blocks.size


def test_smoke_streams_hold_exactly_the_configured_shares(smoke_data):
    study, data = smoke_data
    p1 = study.pretrain
    for lam, stream in data.pretrain.items():
        assert stream.stats["tokens"]["pre"] == p1.tokens
        assert stream.stats["tokens"].get("post", 0) == round(lam * p1.post_tokens)
        assert 0 <= stream.stats["waste_tokens"] < stream.stats["block_len"]
    for (_, r), stream in data.posttrain.items():
        assert stream.stats["tokens"]["post"] == p1.post_tokens
        assert stream.stats["tokens"].get("replay", 0) == replay_tokens(p1.post_tokens, r)


def test_streams_are_reproducible_bit_for_bit(smoke_data, tmp_path):
    study, data = smoke_data
    stream = data.pretrain[0.5]
    rebuilt = build_stream("again", _parts_of(study, 0.5), stream.stats["seed"], study.model.seq_len, EOS, tmp_path, data.tokenizer_id)
    assert (read_blocks(rebuilt) == read_blocks(stream)).all()


def _parts_of(study, lam):
    # rebuild the 0.5 arm's parts from the same pure selection the study used
    tok = study.out / "cache" / "tokenized"

    def split(name):
        path = next(tok.glob(f"{name}-train-*.parquet"))
        lengths = pq.read_table(path, columns=["tokens"]).column("tokens").combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
        return TokenizedSplit(path, lengths.astype(np.int64))

    pre, post = split("general"), split("notation")
    pre_sel = take_budget(pre.lengths, seeded_order(len(pre.lengths), derive_seed(study.seed, "order", "pre")), study.pretrain.tokens)
    post_order = seeded_order(len(post.lengths), derive_seed(study.seed, "order", "post"))
    return {"pre": (pre, pre_sel), "post": (post, mix_share(post.lengths, post_order, study.pretrain.post_tokens, lam))}


def test_heldout_documents_never_reach_a_training_stream(smoke_data):
    study, data = smoke_data
    # by text hash, on what was tokenized: no held-out text is a training document
    tok = study.out / "cache" / "tokenized"
    for name in ("general", "notation", "chem"):
        train = set(pq.read_table(next(tok.glob(f"{name}-train-*.parquet")), columns=["hash"]).column("hash").to_pylist())
        held = set(pq.read_table(next(tok.glob(f"{name}-heldout-*.parquet")), columns=["hash"]).column("hash").to_pylist())
        assert held and not train & held, name

    # and on the packed blocks: no whole held-out document appears in any training stream
    def doc_digests(stream):
        flat = read_blocks(stream).reshape(-1)
        docs = np.split(flat, np.flatnonzero(flat == EOS) + 1)
        return {d.tobytes() for d in docs[1:-1] if len(d) > 8}  # first and last piece may be cut

    heldout = set().union(*(doc_digests(s) for s in data.heldout.values()))
    assert heldout
    for stream in [*data.pretrain.values(), *data.posttrain.values(), data.finetune]:
        assert not heldout & doc_digests(stream), stream.stats["name"]


def test_stream_stats_are_on_disk(smoke_data):
    _, data = smoke_data
    stream = data.posttrain[0.0, 0.0]
    stats = json.loads((stream.path.parent / "stats.json").read_text())
    assert stats == stream.stats and 0 <= stats["waste_fraction"] < 0.05 and stats["tokenizer_id"] == data.tokenizer_id
