"""The memory model (raysweep.memory): monotone where it must be, the micro-batch it picks fits,
and a study that cannot fit is refused before compute with the key named."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from raysweep.config import StudyConfigError, load_study
from raysweep.memory import CHUNK_ELEMENTS, GB, choose_micro_batch, fit_stage, training_peak
from raysweep.presets import PRESETS
from tests.helpers import ROOT

SHAPES = sorted(PRESETS)


@settings(max_examples=60, deadline=None)
@given(
    preset=st.sampled_from(SHAPES),
    micro=st.integers(1, 64),
    seq=st.integers(16, 4096),
    precision=st.sampled_from(["fp32", "bf16"]),
    checkpointing=st.booleans(),
    dropout=st.booleans(),
)
@example(preset="debug", micro=17, seq=19, precision="bf16", checkpointing=False, dropout=False)  # across the switch
def test_the_peak_grows_with_the_micro_batch_and_the_sequence(preset, micro, seq, precision, checkpointing, dropout):
    """Strictly, except where the loss switches to chunks (raysweep.train.loss): the plain loss's
    fp32 log-softmax and gradient give way to one chunk's temporaries, so in bf16 the peak may step
    down there, by less than two fp32 buffers of one chunk (hypothesis found micro 17 -> 18 at seq 19)."""
    peak = lambda m, s: training_peak(preset, 49152, s, m, precision=precision, checkpointing=checkpointing, dropout=dropout).total
    vocab = PRESETS[preset].vocab_size or 49152
    chunked = lambda m, s: m * s * vocab > CHUNK_ELEMENTS
    for bigger in ((micro + 1, seq), (micro, seq + 16)):
        if chunked(*bigger) == chunked(micro, seq):
            assert peak(*bigger) > peak(micro, seq)
        else:
            assert peak(*bigger) > peak(micro, seq) - 2 * 4 * CHUNK_ELEMENTS
    # activation checkpointing never costs memory; LoRA (fewer trainable parameters) neither
    plain = training_peak(preset, 49152, seq, micro, precision=precision, dropout=dropout).total
    assert training_peak(preset, 49152, seq, micro, precision=precision, checkpointing=True, dropout=dropout).total <= plain
    assert training_peak(preset, 49152, seq, micro, precision=precision, trainable=1000, dropout=dropout).total < plain


@settings(max_examples=60, deadline=None)
@given(share=st.integers(1, 1024), gb=st.floats(1.0, 200.0))
def test_the_chosen_micro_batch_divides_the_share_and_is_the_largest_that_fits(share, gb):
    peak_of = lambda m: training_peak("smollm2-135m", 49152, 1024, m, precision="bf16")
    micro, peak = choose_micro_batch(share, gb * GB, peak_of)
    assert share % micro == 0
    budget = gb * GB * 0.85
    if peak.total <= budget:
        bigger = [d for d in range(micro + 1, share + 1) if share % d == 0]
        assert all(peak_of(d).total > budget for d in bigger)
    else:
        assert micro == 1


def test_the_paper_shape_at_its_batch_needs_micro_batches_on_an_h100():
    """Stage 2's largest batch (896 sequences of 1,024) in one forward is far over 80 GB; auto splits it."""
    whole = training_peak("smollm2-135m", 49152, 1024, 896, precision="bf16", keeps_best=True)
    assert whole.total > 80 * GB
    fit = fit_stage("smollm2-135m", 49152, 1024, 896, 1, gpus_per_worker=1, keeps_best=True)
    assert fit.fits and fit.micro < 896 and 896 % fit.micro == 0 and fit.accumulation == 896 // fit.micro


def test_a_study_that_cannot_fit_is_refused_naming_the_key_and_the_numbers():
    path = ROOT / "search_spaces" / "paper-1b-frontier.yaml"
    with pytest.raises(
        StudyConfigError, match=r"posttrain\.micro_batch_size: a micro-batch of 1 sequence of 1024 tokens needs ≈ [\d.]+ GB"
    ) as e:
        load_study(path, ["posttrain.resources.memory_gb=8", "finetune.resources.memory_gb=8"])
    assert "8 GB (resources.memory_gb)" in str(e.value) and "activation_checkpointing" in str(e.value)


def test_a_micro_batch_must_divide_each_workers_share():
    with pytest.raises(StudyConfigError, match=r"pretrain\.micro_batch_size \(3\) must divide each worker's share"):
        load_study(None, ["pretrain.micro_batch_size=3"])
    assert load_study(None, ["pretrain.micro_batch_size=4"]).pretrain.micro_batch_size == 4


def test_micro_batches_and_memory_change_no_study_hash():
    base = load_study()
    changed = load_study(
        None,
        [
            "pretrain.micro_batch_size=2",
            "posttrain.activation_checkpointing=true",
            "posttrain.resources.memory_gb=12",
            "finetune.resources.memory_gb=12",
        ],
    )
    assert changed.content_hash() == base.content_hash()
