"""The learning-rate schedule: linear warmup, then cosine decay to the floor (a pure function)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysweep.train.schedule import lr_at


@settings(max_examples=200)
@given(st.floats(1e-5, 1.0), st.floats(0, 1), st.integers(0, 50), st.integers(1, 500))
def test_schedule_warms_up_then_decays_to_min(peak, min_frac, warmup, total):
    min_lr = peak * min_frac
    lrs = [lr_at(s, peak, min_lr, warmup, total) for s in range(total + 1)]
    assert max(lrs) <= peak * (1 + 1e-9)
    assert all(lr >= min_lr - 1e-12 for lr in lrs[warmup:])  # warmup starts below the floor, by design
    assert all(x <= y + 1e-12 for x, y in zip(lrs[:warmup], lrs[1:warmup]))
    if warmup and warmup < total:
        assert lrs[warmup - 1] == pytest.approx(peak)
        decay = lrs[warmup:]
        assert all(x >= y - 1e-12 for x, y in zip(decay, decay[1:]))  # monotone after warmup
        assert lrs[total] == pytest.approx(min_lr)
