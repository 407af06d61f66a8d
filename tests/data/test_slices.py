"""Held-out slices (raysweep.data.slices): disjoint sets of whole held-out documents, balanced by
tokens, the same for every run of a study, each large enough to fill an evaluation."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from raysweep.data.slices import assign_documents, choose_slices, needed_tokens, slice_tokens


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=200), st.integers(2, 8))
def test_slices_are_disjoint_cover_every_document_once_and_are_balanced(lengths, k):
    lengths = np.array(lengths)
    slices = assign_documents(lengths, k, "post")
    rows = np.concatenate(slices)
    assert sorted(rows.tolist()) == list(range(len(lengths)))  # each held-out document in exactly one slice
    assert all((np.diff(s) > 0).all() for s in slices)  # in corpus order, as a stream's selection wants
    tokens = slice_tokens(lengths, slices)
    assert max(tokens) - min(tokens) <= lengths.max() + 1  # balanced to within one document
    again = assign_documents(lengths, k, "post")
    assert all((a == b).all() for a, b in zip(slices, again))  # the same for every run (no study seed in it)


def test_each_set_draws_its_own_shuffle():
    lengths = np.full(40, 10)
    assert any((a != b).any() for a, b in zip(assign_documents(lengths, 4, "pre"), assign_documents(lengths, 4, "post")))


def slice_count(sets: dict, wanted: int, block: int, eval_tokens: int) -> int:
    return len(next(iter(choose_slices(sets, wanted, block, eval_tokens).values()), []))


def test_slice_count_is_the_most_slices_that_each_fill_an_evaluation():
    block, eval_tokens = 65, 2048  # an evaluation scores 31 blocks
    sets = {"pre": np.full(100, 64), "post": np.full(100, 64)}  # 100 documents of 65 tokens: 100 blocks
    assert slice_count(sets, 5, block, eval_tokens) == 3  # 33 blocks each; 4 slices would give 25
    assert slice_count(sets, 2, block, eval_tokens) == 2
    assert slice_count({"pre": np.full(40, 64)}, 5, block, eval_tokens) == 0  # not even two
    assert slice_count(sets, 1, block, eval_tokens) == 0
    assert needed_tokens(5, eval_tokens, block) == 5 * 31 * 65 and needed_tokens(1, eval_tokens, block) == 0
    cut = choose_slices(sets, 5, block, eval_tokens)  # the chosen count's assignment, made once
    assert set(cut) == {"pre", "post"} and all(
        len(cut[r]) == 3 and all((a == b).all() for a, b in zip(cut[r], assign_documents(sets[r], 3, r))) for r in cut
    )
    assert choose_slices({"pre": np.full(40, 64)}, 5, block, eval_tokens) == {}


def test_the_study_s_slices_hold_its_held_out_documents_and_nothing_else(smoke_data):
    """Prepared for the smoke study: per role, the slices' streams together hold exactly the
    held-out set's tokens (no training document, none twice), and each fills an evaluation."""
    from raysweep.data.streams import StreamReader

    study, data = smoke_data
    assert data.heldout_slices and len({len(v) for v in data.heldout_slices.values()}) == 1
    block = study.model.seq_len + 1
    for role, streams in data.heldout_slices.items():
        held = StreamReader(data.heldout[role].path)
        whole = np.sort(held.blocks(np.arange(held.n_blocks)).ravel())
        parts = [StreamReader(s.path) for s in streams]
        assert all(p.n_blocks >= study.finetune.eval_tokens // block for p in parts)
        # tokens packed into whole blocks: a slice drops at most its last partial block
        pieces = np.sort(np.concatenate([p.blocks(np.arange(p.n_blocks)).ravel() for p in parts]))
        counts_whole, counts_parts = np.bincount(whole, minlength=data.vocab_size), np.bincount(pieces, minlength=data.vocab_size)
        assert (counts_parts <= counts_whole + block * len(parts)).all()
        assert abs(len(pieces) - len(whole)) <= block * (len(parts) + 1)
