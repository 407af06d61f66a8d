"""The unstated conventions as study options (raysweep.config.conventions): each changes exactly
what it names, and only a convention set off its default enters a node key."""

import re

import numpy as np
import pytest

from raysweep.config import load_study
from raysweep.spec import all_nodes
from raysweep.sweep.plan import plan
from raysweep.train.callbacks.early_stopping import EarlyStopping
from raysweep.train.loop import RunProgress
from raysweep.train.model import build_model
from tests.helpers import SMOKE, run_spec


def test_defaults_change_no_key_and_no_hash(tmp_path):
    base = load_study(SMOKE, [f"output_dir={tmp_path}"])
    same = load_study(SMOKE, [f"output_dir={tmp_path}", "conventions.schedule=warmup_cosine", "conventions.early_stop_min_delta=1e-4"])
    assert same.content_hash() == base.content_hash()
    assert load_study(SMOKE, [f"output_dir={tmp_path}", "conventions.decay_1d=true"]).content_hash() != base.content_hash()


@pytest.mark.parametrize(
    ("override", "changed"),
    [
        ("conventions.schedule=wsd", {"pretrain", "posttrain", "finetune"}),
        ("conventions.decay_1d=true", {"pretrain", "posttrain", "finetune"}),
        ("conventions.early_stop_min_delta=0.01", {"posttrain"}),  # stage 2 alone stops early
    ],
)
def test_a_training_convention_enters_the_keys_of_the_stages_it_changes_and_their_children(smoke_data, override, changed):
    study, data = smoke_data
    before = plan(study, data)
    after = plan(load_study(SMOKE, [f"output_dir={study.out}", override]), data)
    moved = {a.spec.stage for a, b in zip(all_nodes(*before), all_nodes(*after)) if a.spec.node_key != b.spec.node_key}
    first = min(changed, key=["pretrain", "posttrain", "finetune"].index)
    below = {"pretrain": {"pretrain", "posttrain", "finetune"}, "posttrain": {"posttrain", "finetune"}, "finetune": {"finetune"}}[first]
    assert moved == below  # its own stage and everything trained from it
    key, value = override.removeprefix("conventions.").split("=")
    spec = next(n.spec for n in all_nodes(*after) if n.spec.stage == first)
    assert str(getattr(spec, key)).lower() == value.lower() or getattr(spec, key) == float(value)


def test_the_early_stopping_threshold_decides_what_counts_as_better(tmp_path):
    model = build_model("debug", 64, 16)
    for delta, improved in ((1e-4, True), (0.01, False)):
        spec = run_spec(tmp_path / "n", early_stop_on="post", patience=5, early_stop_min_delta=delta)
        p = RunProgress(best=3.0)
        EarlyStopping(p, model).on_evaluated(spec, 0, {"post": 2.995})
        assert (p.best == 2.995) is improved and p.bad == (0 if improved else 1)


def test_packing_seq_cuts_blocks_of_seq_len_tokens(smoke_data):
    """seq: blocks of seq_len tokens (seq_len − 1 predictions each) in training and held-out streams alike."""
    from raysweep.data.prepare import prepare
    from raysweep.data.streams import StreamReader

    study, data = smoke_data
    seq = load_study(SMOKE, [f"output_dir={study.out}", "conventions.packing=seq"])
    other = prepare(seq)
    L = study.model.seq_len
    for streams, block in ((data, L + 1), (other, L)):
        assert StreamReader(streams.finetune.path).block_len == block
        assert {StreamReader(s.path).block_len for s in streams.heldout.values()} == {block}
        assert StreamReader(streams.pretrain[0.5].path).block_len == block
    # the same tokens, cut shorter: more blocks, one fewer prediction per block
    assert other.finetune.n_blocks > data.finetune.n_blocks
    # its streams differ, so does every node trained on them
    assert all(n.spec.node_key != m.spec.node_key for n, m in zip(all_nodes(*plan(study, data)), all_nodes(*plan(seq, other))))


def test_stage1_mixing_blocks_packs_each_corpus_apart(smoke_data):
    """blocks: the λ > 0 stream holds D_pre's blocks, then D_post's (one block may straddle), and
    the pass order permutes whole blocks; documents (today): the two are interleaved before packing.
    λ = 0 has one corpus: the same stream, so the same arm, either way."""
    from raysweep.data.prepare import prepare
    from raysweep.data.streams import StreamReader

    study, data = smoke_data
    apart = prepare(load_study(SMOKE, [f"output_dir={study.out}", "conventions.stage1_mixing=blocks"]))
    assert apart.pretrain[0.0].path == data.pretrain[0.0].path
    assert apart.pretrain[0.5].stats["tokens"] == data.pretrain[0.5].stats["tokens"]  # the same shares

    def source_runs(stream):
        """How many times the stream switches between the two corpora, piece by piece."""
        reader = StreamReader(stream.path)
        corpus = np.array(["notation" in str(p) for p in reader.paths])[reader.arrays["file"]]  # D_post's shards
        return int((corpus[1:] != corpus[:-1]).sum())

    assert source_runs(apart.pretrain[0.5]) == 1 and source_runs(data.pretrain[0.5]) > 10


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("{schedule: linear}", "robustness[0].schedule: Input should be"),
        ("{lr: 0.1}", "robustness[0]: 'lr' is no convention"),
        ("{packing: seq_plus_one}", "robustness[0].packing: 'seq_plus_one' is the study's own convention"),
        ("{schedule: wsd, decay_1d: true}", "robustness[0]: a variant changes one convention"),
        ("{heldout_carving: position}", "conventions.heldout_carving: no corpus of this study carves"),  # built-in corpora only
    ],
)
def test_a_bad_robustness_variant_is_refused_with_its_entry_named(tmp_path, entry, said):
    from raysweep.config import StudyConfigError

    with pytest.raises(StudyConfigError, match=re.escape(said)):
        load_study(SMOKE, [f"output_dir={tmp_path}", f"robustness=[{entry}]"])


def test_a_variant_is_the_study_under_another_name_sharing_its_folders(tmp_path):
    from raysweep.robustness import variant_study

    study = load_study(SMOKE, [f"output_dir={tmp_path}", "robustness=[{decay_1d: true}]"])
    v = variant_study(study, {"decay_1d": True})
    assert v.name == "smoke.decay_1d-true" and v.conventions.decay_1d and not v.robustness
    assert (v.out, v.checkpoints) == (study.out, study.checkpoints)
    assert v.content_hash() != study.content_hash()
    # the section is no part of the study's identity: the study's own run is the same with or without it
    assert study.content_hash() == load_study(SMOKE, [f"output_dir={tmp_path}"]).content_hash()


def test_the_dry_run_says_what_each_robustness_variant_adds(tmp_path):
    """A stage-2-only change retrains stages 2 and 3; stage-1 mixing only the arms with D_post in
    them and below; any other change everything."""
    from raysweep.sweep.describe import describe_tree, stage_tokens, variant_cost

    study = load_study(
        SMOKE, [f"output_dir={tmp_path}", "robustness=[{early_stop_min_delta: 0.01}, {stage1_mixing: blocks}, {packing: seq}]"]
    )
    sizes, (t1, t2, t3) = study.run_counts(), stage_tokens(study)
    assert variant_cost(study, {"early_stop_min_delta": 0.01}) == (sizes["posttrain"] + sizes["finetune"], t2 + t3)
    assert variant_cost(study, {"stage1_mixing": "blocks"}) == (sum(sizes.values()) / 2, (t1 + t2 + t3) / 2)  # λ ∈ {0, 0.5}
    assert variant_cost(study, {"packing": "seq"}) == (sum(sizes.values()), t1 + t2 + t3)
    [line] = [x for x in describe_tree(study).splitlines() if x.startswith("  robust.")]
    assert "3 variants" in line and "early_stop_min_delta=0.01: 16 runs" in line and "stage1_mixing=blocks: 9 runs" in line
    # and the node store they add: each stage's runs anew at that stage's node size
    from raysweep.sweep.describe import disk_of, variant_runs
    from raysweep.sweep.disk import gb

    disk = disk_of(study, study.tokenizer.vocab_size)[0]
    added = sum(n * disk.stages[s].node_bytes for c in study.robustness for s, n in variant_runs(study, c).items())
    assert variant_runs(study, {"early_stop_min_delta": 0.01})["pretrain"] == 0 and added > 0
    assert f"and {gb(added)} to the node store" in line
