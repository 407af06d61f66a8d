"""The learning-rate schedule: linear warmup, then cosine decay to the floor (a pure function)."""

import math

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


def test_each_schedule_shape_at_chosen_steps():
    """conventions.schedule: each shape's values where they differ (peak 1, floor 0.1, 10 warmup steps of 100)."""
    at = lambda shape, s: lr_at(s, 1.0, 0.1, 10, 100, shape)  # noqa: E731
    # today's: warmup, then a cosine over the 90 remaining steps
    assert at("warmup_cosine", 4) == pytest.approx(0.5) and at("warmup_cosine", 9) == pytest.approx(1.0)
    assert at("warmup_cosine", 55) == pytest.approx(0.55) and at("warmup_cosine", 100) == pytest.approx(0.1)
    # a cosine over all 100 steps times the ramp, clamped at the floor
    assert at("cosine_times_warmup", 4) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.04)))
    assert at("cosine_times_warmup", 50) == pytest.approx(0.5) and at("cosine_times_warmup", 95) == pytest.approx(0.1)
    # warmup-stable-decay: the peak until step 80, then linear to the floor at step 100
    assert at("wsd", 4) == pytest.approx(0.5) and at("wsd", 79) == pytest.approx(1.0)
    assert at("wsd", 89) == pytest.approx(1.0 - 0.9 * 0.5) and at("wsd", 99) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at(0, 1.0, 0.0, 0, 10, "linear")


@settings(max_examples=100)
@given(st.sampled_from(["cosine_times_warmup", "wsd"]), st.floats(0, 1), st.integers(0, 30), st.integers(1, 300))
def test_other_shapes_stay_between_the_floor_and_the_peak(shape, min_frac, warmup, total):
    lrs = [lr_at(s, 1.0, min_frac, warmup, total, shape) for s in range(total)]
    assert all(lr <= 1.0 + 1e-12 for lr in lrs)
    if shape == "cosine_times_warmup":
        assert all(lr >= min_frac - 1e-12 for lr in lrs)
