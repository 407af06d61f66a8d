"""raysweep.data.blocks, the streams' specification in plain numpy (property tests): packing keeps
every token in order and drops less than a block; the ranks' rows of a step, in rank order, are the
one-worker batch of that step; a seeded interleave is a permutation, the same for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysweep.data.blocks import interleave_ranks, pack, pack_documents, piece, rank_rows

docs = st.lists(st.lists(st.integers(1, 500), min_size=0, max_size=40), min_size=0, max_size=30)


@settings(max_examples=100, deadline=None)
@given(docs=docs, block_len=st.integers(2, 17))
def test_packing_keeps_every_token_in_order_and_drops_less_than_a_block(docs, block_len):
    blocks = pack_documents([np.array(d, dtype=np.int32) for d in docs], block_len, eos_id=0)
    flat = [t for d in docs for t in (*d, 0)]  # each document and its separator
    assert blocks.shape[1] == block_len and blocks.dtype == np.int32
    assert blocks.reshape(-1).tolist() == flat[: blocks.size]
    assert len(flat) - blocks.size < block_len


@settings(max_examples=100, deadline=None)
@given(n_blocks=st.integers(0, 200), per=st.integers(1, 8), world=st.integers(1, 4))
def test_the_ranks_rows_of_a_step_are_the_one_worker_batch_of_that_step(n_blocks, per, world):
    batch = per * world
    whole = rank_rows(n_blocks, batch, 1, 0)
    ranks = [rank_rows(n_blocks, batch, world, r) for r in range(world)]
    assert len(whole) == (n_blocks // batch) * batch  # the tail shorter than a batch is left out
    for step in range(n_blocks // batch):
        joined = np.concatenate([rows[step * per : (step + 1) * per] for rows in ranks])
        assert joined.tolist() == whole[step * batch : (step + 1) * batch].tolist()


def test_a_batch_that_does_not_divide_over_the_workers_is_refused():
    with pytest.raises(ValueError, match="batch_size 6 does not divide over 4 workers"):
        rank_rows(100, 6, 4, 0)


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(0, 30), min_size=1, max_size=4), seed=st.integers(0, 2**31))
def test_a_seeded_interleave_is_a_permutation_the_same_for_the_same_seed(counts, seed):
    labels = [f"s{i}" for i in range(len(counts))]
    by_label = dict(zip(labels, counts))
    placed = interleave_ranks(labels, by_label, seed)
    every = np.concatenate([placed[s] for s in labels])
    assert sorted(every.tolist()) == list(range(sum(counts)))
    assert all(len(placed[s]) == by_label[s] for s in labels)
    assert all(np.array_equal(placed[s], interleave_ranks(labels, by_label, seed)[s]) for s in labels)
    in_order = interleave_ranks(labels, by_label, None)
    assert np.concatenate([in_order[s] for s in labels]).tolist() == list(range(sum(counts)))


def test_a_piece_cut_before_its_end_has_no_separator_and_one_to_its_end_has_one():
    tokens = np.array([5, 6, 7], dtype=np.int32)
    assert piece(tokens, 0, 2, eos_id=0).tolist() == [5, 6]
    assert piece(tokens, 1, 4, eos_id=0).tolist() == [6, 7, 0]
    assert pack([], 4).shape == (0, 4)
