import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysweep.data.mixing import (
    BudgetError,
    Selection,
    available_tokens,
    complement_share,
    mix_share,
    replay_tokens,
    seeded_order,
    take_budget,
    take_tokens,
)

lengths_st = st.lists(st.integers(1, 500), min_size=1, max_size=200).map(lambda v: np.array(v, dtype=np.int64))


def _tokens_of(sel: Selection) -> list[tuple[int, int]]:
    """(row, token position) pairs a selection takes: what 'no token twice' is checked on."""
    return [(int(r), t) for r, a, b in zip(sel.rows, sel.start, sel.stop) for t in range(a, b)]


@given(lengths_st, st.integers(0, 2**32 - 1), st.data())
def test_take_tokens_is_exact_to_the_token(lengths, seed, data):
    order = seeded_order(len(lengths), seed)
    total = available_tokens(lengths)
    start = data.draw(st.integers(0, total))
    stop = data.draw(st.integers(start, total))
    sel = take_tokens(lengths, order, start, stop)
    assert sel.tokens == stop - start
    assert len(set(sel.rows.tolist())) == len(sel)  # no document twice: at most one pass
    assert ((sel.start >= 0) & (sel.start < sel.stop) & (sel.stop <= lengths[sel.rows] + 1)).all()
    pos = {int(r): i for i, r in enumerate(order)}
    assert [pos[int(r)] for r in sel.rows] == sorted(pos[int(r)] for r in sel.rows)  # in the corpus order


@given(lengths_st, st.integers(0, 2**32 - 1))
def test_budget_beyond_the_corpus_says_what_is_available(lengths, seed):
    order = seeded_order(len(lengths), seed)
    with pytest.raises(BudgetError) as err:
        take_budget(lengths, order, available_tokens(lengths) + 1)
    assert err.value.available == available_tokens(lengths)


@given(lengths_st, st.floats(0, 1), st.floats(0, 1), st.integers(0, 2**32 - 1), st.data())
def test_mix_shares_are_exact_and_nested(lengths, a, b, seed, data):
    order = seeded_order(len(lengths), seed)
    post_tokens = data.draw(st.integers(0, available_tokens(lengths)))
    lo, hi = sorted((a, b))
    small, large = mix_share(lengths, order, post_tokens, lo), mix_share(lengths, order, post_tokens, hi)
    assert small.tokens == round(lo * post_tokens) and large.tokens == round(hi * post_tokens)
    assert set(_tokens_of(small)) <= set(_tokens_of(large))  # a smaller λ mixes a subset of a larger one's tokens


@given(lengths_st, st.floats(0, 1), st.integers(0, 2**32 - 1), st.data())
def test_compute_matched_split_is_disjoint_and_one_pass(lengths, lam, seed, data):
    order = seeded_order(len(lengths), seed)
    post_tokens = data.draw(st.integers(0, available_tokens(lengths)))
    first = mix_share(lengths, order, post_tokens, lam)
    second = complement_share(lengths, order, post_tokens, lam)
    assert first.tokens == round(lam * post_tokens) and first.tokens + second.tokens == post_tokens
    a, b = _tokens_of(first), _tokens_of(second)
    assert not set(a) & set(b)  # disjoint to the token (a document cut at the boundary is shared, its tokens are not)
    assert set(a) | set(b) == set(_tokens_of(take_budget(lengths, order, post_tokens)))  # exactly one pass together


@given(st.integers(0, 10**9), st.floats(0, 0.99))
def test_replay_is_the_asked_share_of_the_stage2_stream(stage2, r):
    n = replay_tokens(stage2, r)
    total = stage2 + n
    assert abs(n - r * total) <= 1  # exact to one token (rounding)


def test_fractions_out_of_range_are_refused():
    with pytest.raises(ValueError, match="mix_fraction"):
        mix_share(np.ones(3, dtype=np.int64), np.arange(3), 6, 1.5)
    with pytest.raises(ValueError, match="replay"):
        replay_tokens(100, 1.0)


@given(st.lists(st.lists(st.integers(1, 99), min_size=1, max_size=30), max_size=40), st.integers(2, 17))
def test_packing_is_a_lossless_cut_of_the_joined_documents(docs, block_len):
    from raysweep.data.blocks import pack_documents

    blocks = pack_documents([np.array(d) for d in docs], block_len, eos_id=0)
    joined = [t for d in docs for t in (*d, 0)]
    assert blocks.shape == (len(joined) // block_len, block_len)
    assert blocks.reshape(-1).tolist() == joined[: blocks.size]  # nothing reordered, only the tail dropped


@given(
    st.lists(st.lists(st.integers(1, 99), min_size=0, max_size=30), min_size=1, max_size=30),
    st.integers(0, 2**32 - 1),
    st.integers(2, 17),
    st.data(),
)
def test_reference_stream_holds_exactly_the_selected_tokens(docs, seed, block_len, data):
    """The stream specification: every selected token once, in pieces, cut into blocks; waste < one block."""
    from raysweep.data.blocks import reference_blocks

    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    order = seeded_order(len(docs), seed)
    stop = data.draw(st.integers(0, available_tokens(lengths)))
    sel = take_budget(lengths, order, stop)
    arrays = [np.array(d) for d in docs]
    blocks = reference_blocks({"a": arrays}, {"a": sel}, seed, block_len, eos_id=0)
    assert blocks.size <= sel.tokens < blocks.size + block_len
    pieces = sorted(np.concatenate([arrays[r], [0]])[x:y].tolist() for r, x, y in zip(sel.rows, sel.start, sel.stop))
    assert sum(map(len, pieces)) == sel.tokens


@settings(max_examples=50)
@given(st.integers(1, 400), st.sampled_from([(8, 1), (8, 2), (8, 4), (6, 3), (12, 2)]))
def test_rank_shards_concatenate_to_the_one_worker_batches(n_blocks, batch_world):
    from raysweep.data.blocks import rank_rows

    batch, world = batch_world
    one = rank_rows(n_blocks, batch, 1, 0).reshape(-1, batch)
    shards = [rank_rows(n_blocks, batch, world, r).reshape(-1, batch // world) for r in range(world)]
    assert (np.concatenate(shards, axis=1) == one).all()  # step by step, rank order = the 1-worker batch
    assert one.size == (n_blocks // batch) * batch
