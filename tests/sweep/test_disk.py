"""The dry run's disk arithmetic (raysweep.sweep.disk); bench/disk.py checks it against `du`."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raysweep.config import load_study
from raysweep.presets import estimate_parameters
from raysweep.sweep.describe import PRETRAINED_VOCAB, describe_tree
from raysweep.sweep.disk import ADAM_BYTES, WEIGHT_BYTES, lora_parameters, study_disk
from tests.helpers import ROOT, SMOKE

PAPER = ROOT / "search_spaces" / "paper-135m-frontier.yaml"


@settings(max_examples=30, deadline=None)
@given(slots=st.integers(1, 10_000), lrs=st.integers(1, 4), data=st.none() | st.integers(0, 10**12))
def test_the_peak_is_the_end_plus_one_largest_checkpoint_per_slot_the_tree_can_feed(slots, lrs, data):
    study = load_study(SMOKE, [f"finetune.lr={[1e-3 * (i + 1) for i in range(lrs)]}"])
    d = study_disk(study, study.tokenizer.vocab_size, slots, data)
    counts = study.run_counts()
    assert d.slots == min(slots, counts["pretrain"] + counts["posttrain"])  # a slot holds an arm or a subtree
    assert d.nodes_peak == d.nodes_end  # no run of the smoke study writes a progress checkpoint (below)
    assert d.nodes_end == sum(s.runs * s.node_bytes for s in d.stages.values())
    assert d.stages["finetune"].runs == counts["finetune"] and d.data == data
    assert all(s.progress_bytes == 0 for s in d.stages.values())  # the smoke runs are shorter than checkpoint_every (100)
    often = load_study(SMOKE, [f"{s}.checkpoint_every=5" for s in ("pretrain", "posttrain", "finetune")])
    d = study_disk(often, 512, slots, data)
    assert all(s.progress_bytes > s.node_bytes for s in d.stages.values())  # weights, optimizer, more
    leaf = d.stages["finetune"]
    # the last leaves train, each holding two checkpoints while the next one replaces the last
    assert leaf.rewrites and leaf.progress_peak == 2 * leaf.progress_bytes
    assert d.nodes_peak - d.nodes_end == d.slots * (leaf.progress_peak - leaf.node_bytes)
    once = load_study(SMOKE, ["finetune.checkpoint_every=9"])  # 15 steps: one checkpoint, at step 9
    assert (
        study_disk(once, 512, slots, data).stages["finetune"].progress_peak
        == study_disk(once, 512, slots, data).stages["finetune"].progress_bytes
    )


def test_paper_scale_nodes_are_their_weights_and_checkpoints_add_the_optimizer():
    study = load_study(PAPER)
    n = estimate_parameters(study.model.shape, PRETRAINED_VOCAB)
    stored = n + 576 * PRETRAINED_VOCAB  # the tied embedding once more, as the head (safetensors stores both keys)
    d = study_disk(study, PRETRAINED_VOCAB, 16, None)
    for stage, s in d.stages.items():
        assert abs(s.node_bytes / (stored * WEIGHT_BYTES) - 1) < 0.01, stage  # 135M fp32: metadata is noise
    # progress: weights once, two moments; stage 2 also its best weights for early stopping (the
    # tied embedding once: raysweep.train.model.host_state keeps it one tensor, as torch.save does)
    assert abs(d.stages["pretrain"].progress_bytes / (n * (WEIGHT_BYTES + ADAM_BYTES)) - 1) < 0.01
    assert abs(d.stages["posttrain"].progress_bytes / (n * (2 * WEIGHT_BYTES + ADAM_BYTES)) - 1) < 0.01
    assert d.leaf_weights == 270 * stored * WEIGHT_BYTES


def test_lora_checkpoints_hold_the_adapters_moments_only():
    full = load_study(PAPER)
    lora = load_study(PAPER, ["posttrain.tuning=[lora]"])
    vocab = PRETRAINED_VOCAB
    adapters = lora_parameters(lora, vocab)
    # SmolLM2-135M, rank 64, o/gate/up/down per layer (the tied head is not adapted)
    assert adapters == 30 * 64 * ((576 + 576) + 2 * (576 + 1536) + (1536 + 576))
    saved = (
        study_disk(full, vocab, 1, None).stages["posttrain"].progress_bytes
        - study_disk(lora, vocab, 1, None).stages["posttrain"].progress_bytes
    )
    assert saved == (estimate_parameters(full.model.shape, vocab) - adapters) * ADAM_BYTES


def test_the_dry_run_prints_the_disk_of_every_paper_study():
    for path in sorted((ROOT / "search_spaces").glob("paper-*.yaml")):
        text = describe_tree(load_study(path))
        lines = [line for line in text.splitlines() if line.startswith("  disk ")]
        assert len(lines) == 3, path.name
        assert "GB at the end" in lines[0] and "max_concurrent_trials" in lines[0] and "data cache" in lines[2], path.name


def test_the_paper_frontier_peaks_while_its_last_stage2_runs_replace_their_checkpoints():
    """A stage-2 run's checkpoint (2.3 GB) is smaller than the stage-2 node and 3 leaves it stands in
    for, but twice it (while the next replaces it) is not: the last 16 stage-2 runs' checkpoints come
    on top of the store (before 2026-12-07 the dry run said the store was fullest at its end); without
    leaf weights, on top of a much smaller store."""
    kept = study_disk(load_study(PAPER), PRETRAINED_VOCAB, 16, None)
    post, leaf = kept.stages["posttrain"], kept.stages["finetune"]
    assert post.rewrites and post.progress_bytes < post.node_bytes + 3 * leaf.node_bytes < post.progress_peak
    assert kept.nodes_peak == kept.nodes_end + 16 * (post.progress_peak - post.node_bytes - 3 * leaf.node_bytes)
    lean = study_disk(load_study(PAPER, ["finetune.keep_weights=false"]), PRETRAINED_VOCAB, 16, None)
    post, leaf = lean.stages["posttrain"], lean.stages["finetune"]
    assert lean.nodes_peak == lean.nodes_end + 16 * (post.progress_peak - post.node_bytes - 3 * leaf.node_bytes)
    assert lean.nodes_end < kept.nodes_end - lean.leaf_weights * 0.99


def test_halving_counts_its_rung_nodes_and_only_the_survivors_whole_runs():
    """`search: halving` (issue 47): the dry run's store holds a rung node (weights) per live
    configuration at each rung but the last, a probe per stage-3 lr from each (no weights), and the
    last rung's configurations' whole stage-2 runs and their stage-3 runs, not the grid's 270."""
    from collections import Counter

    from raysweep.sweep.disk import describe_disk
    from raysweep.sweep.halving import planned_nodes, survivors
    from raysweep.sweep.plan import grid, method_of

    grid_study = load_study(PAPER)
    study = load_study(PAPER, ["posttrain.search=halving"])
    planned = planned_nodes(study)
    sizes = Counter(method_of(c.mix_fraction, c.replay, c.dropout, c.tuning) for c in grid(study)).values()
    counts = [survivors(n, len(study.posttrain.rungs), study.posttrain.eta) for n in sizes]
    assert sum(sizes) == 90 and len(sizes) >= 2  # unmixed and mixed (and their +dropout), pruned apart
    assert planned["rung"] == sum(sum(c[:-1]) for c in counts) and planned["posttrain"] == sum(c[-1] for c in counts)
    assert planned["finetune"] == planned["posttrain"] * len(study.finetune.lr) < 270
    d = study_disk(study, PRETRAINED_VOCAB, 16, None)
    grid_disk = study_disk(grid_study, PRETRAINED_VOCAB, 16, None)
    # the rungs whose configuration went on keep their weights; a pruned one's are dropped once decided
    kept = sum(sum(c[1:]) for c in counts)
    assert d.stages["rung"].runs == planned["rung_weights"] == kept and d.stages["rung"].node_bytes == d.stages["posttrain"].node_bytes
    assert d.stages["pruned rung"].runs == planned["rung"] - kept and d.stages["pruned rung"].node_bytes < 1e6
    # before the first rung is decided, all its rung nodes hold weights: the peak counts them
    assert planned["rung_weights_peak"] >= sum(c[0] for c in counts) and d.nodes_peak >= d.rung_peak > 0
    assert d.stages["probe"].node_bytes < 1e6  # losses and points only
    assert d.nodes_end == sum(s.runs * s.node_bytes for s in d.stages.values()) < grid_disk.nodes_end
    [line] = [x for x in describe_disk(d, "max_concurrent_trials") if "halving keeps" in x]
    assert f"{planned['rung']} rung nodes" in line and f"{planned['finetune']} stage-3 runs" in line
