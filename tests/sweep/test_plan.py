"""The tree's plan: deterministic, unique node keys, lineage; data budgets checked before training."""

import pytest

from raysweep.config import StudyConfigError, load_study
from raysweep.data.prepare import prepare
from raysweep.sweep.plan import plan
from tests.helpers import SMOKE, plan_smoke


def test_plan_is_deterministic_with_unique_keys_and_lineage(smoke_data):
    study, data = smoke_data
    arms, subtrees = plan(study, data)
    again = plan(study, data)
    assert [a.spec for a in arms] == [a.spec for a in again[0]]
    keys = [a.spec.node_key for a in arms] + [n.spec.node_key for n2, cs in subtrees for n in (n2, *cs)]
    assert len(keys) == len(set(keys)) == len(arms) + len(subtrees) * (1 + len(study.finetune.lr))
    arm_dirs = {a.spec.node_dir for a in arms}
    for n2, children in subtrees:
        assert n2.spec.init_from in arm_dirs and n2.spec.early_stop_on == "post"
        assert all(c.spec.init_from == n2.spec.node_dir and c.spec.dataset == "ft" for c in children)
    # stage 1 is at most one pass over its stream
    for a in arms:
        stream = data.pretrain[a.spec.meta["mix_fraction"]]
        assert a.spec.max_steps * a.spec.batch_size <= stream.n_blocks


def test_a_changed_upstream_config_changes_every_key_below_it(smoke_data, smoke_out):
    study, data = smoke_data
    changed = load_study(SMOKE, [f"output_dir={smoke_out}", "pretrain.lr=1e-3"])
    a, b = plan(study, data), plan(changed, data)
    assert {n.spec.node_key for n, _ in a[1]}.isdisjoint({n.spec.node_key for n, _ in b[1]})
    changed_ft = load_study(SMOKE, [f"output_dir={smoke_out}", "finetune.tokens=6000"])
    c = plan(changed_ft, data)
    assert [n.spec.node_key for n, _ in a[1]] == [n.spec.node_key for n, _ in c[1]]  # stage 2 untouched


def test_budget_beyond_the_corpus_fails_before_training(smoke_data, smoke_out):
    study = load_study(SMOKE, [f"output_dir={smoke_out}", "pretrain.tokens=10000000"])
    with pytest.raises(
        StudyConfigError, match=r"pretrain\.tokens: 10,000,000 tokens asked, but corpus 'general' holds [\d,]+ training tokens"
    ):
        prepare(study)


def test_stage2_batch_size_can_be_a_sweep_axis(smoke_data):
    base, both, swept = plan_smoke(smoke_data, "posttrain.batch_size=[4, 8]")
    assert len(both) == 2 * len(base)
    assert sorted({n.spec.batch_size for n, _ in both}) == [4, 8]
    for n, _ in both:  # the step budget follows the batch: same token budget
        assert n.spec.max_steps == swept.posttrain.tokens // (n.spec.batch_size * swept.model.seq_len)
        assert n.name.endswith(f"/batch={n.spec.batch_size}")
    assert len({n.spec.node_key for n, _ in both}) == len(both)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("finetune.lr", "3e-4"),
        ("pretrain.mix_fraction", "0.5"),
        ("posttrain.dropout", "0.1"),
        ("posttrain.tuning", "lora"),
        ("posttrain.lr", "1e-3"),
    ],
)
def test_a_scalar_for_a_sweep_axis_is_the_axis_of_that_one_value(smoke_data, smoke_out, setting, value):
    """`--set finetune.lr=3e-4` is `[3e-4]`: the same study and the same node keys (issue 45)."""
    study, data = smoke_data
    scalar = load_study(SMOKE, [f"output_dir={smoke_out}", f"{setting}={value}"])
    listed = load_study(SMOKE, [f"output_dir={smoke_out}", f"{setting}=[{value}]"])
    assert scalar == listed and scalar.content_hash() == listed.content_hash() != study.content_hash()
    keys = [
        [n.spec.node_key for n in (*arms, *(m for n2, cs in subtrees for m in (n2, *cs)))]
        for arms, subtrees in (plan(s, data) for s in (scalar, listed))
    ]
    assert keys[0] == keys[1] and len(keys[0]) == len(set(keys[0]))


def test_precision_auto_keeps_the_keys_and_an_explicit_precision_has_its_own(smoke_data, smoke_out):
    """model.precision: auto (the device's own, the default) is the keys older studies have; fp32
    or bf16 change results, so each has keys of its own and reaches the loop."""
    from raysweep.sweep.tree import loop_config

    study, data = smoke_data
    keys = {}
    for value in ("auto", "fp32", "bf16"):
        changed = load_study(SMOKE, [f"output_dir={smoke_out}", f"model.precision={value}"])
        arms, subtrees = plan(changed, data)
        keys[value] = {m.spec.node_key for m in (*arms, *(n for n2, cs in subtrees for n in (n2, *cs)))}
        assert loop_config(changed, data).precision == value
    base = plan(study, data)
    assert keys["auto"] == {m.spec.node_key for m in (*base[0], *(n for n2, cs in base[1] for n in (n2, *cs)))}
    assert keys["auto"].isdisjoint(keys["fp32"]) and keys["fp32"].isdisjoint(keys["bf16"])


def test_model_compile_reaches_the_training_loop_and_no_node_key(smoke_data, smoke_out):
    from raysweep.sweep.tree import loop_config

    study, data = smoke_data
    compiled = load_study(SMOKE, [f"output_dir={smoke_out}", "model.compile=true"])
    assert loop_config(compiled, data).compile and not loop_config(study, data).compile
    assert [a.spec.node_key for a in plan(compiled, data)[0]] == [a.spec.node_key for a in plan(study, data)[0]]  # operational


def test_every_operational_setting_reaches_the_runs_and_no_node_key(smoke_data, smoke_out):
    """raysweep.config.stages.OPERATIONAL, the one list of them: each reaches its stage's RunSpecs,
    none enters a node key, and only HASHED_OPERATIONAL enters the study's hash."""
    from raysweep.config.stages import HASHED_OPERATIONAL, OPERATIONAL

    study, data = smoke_data
    values = {"checkpoint_every": 7, "micro_batch_size": 1, "activation_checkpointing": True, "resources.memory_gb": 3.0}
    assert set(values) == set(OPERATIONAL)  # a setting added to the list is added here
    key = lambda a, s: [a_.spec.node_key for a_ in a] + [m.spec.node_key for n2, c in s for m in (n2, *c)]
    for path, value in values.items():
        # a stage-2 run's children share its worker group, so its resources are theirs too
        sets = [f"{stage}.{path}={value}" for stage in (("posttrain", "finetune") if path.startswith("resources") else ("posttrain",))]
        changed = load_study(SMOKE, [f"output_dir={smoke_out}", *sets, "pretrain.micro_batch_size=2"])
        (arms, subtrees), (arms2, subtrees2) = plan(study, data), plan(changed, data)
        assert key(arms2, subtrees2) == key(arms, subtrees), path  # operational
        assert getattr(subtrees2[0][0].spec, path.rpartition(".")[2]) == value != getattr(subtrees[0][0].spec, path.rpartition(".")[2])
        assert arms2[0].spec.micro_batch_size == 2 and arms[0].spec.micro_batch_size == "auto"
        same_hash = load_study(SMOKE, [f"output_dir={smoke_out}", *sets]).content_hash() == study.content_hash()
        assert same_hash == (path not in HASHED_OPERATIONAL), path
    n2 = plan(load_study(SMOKE, [f"output_dir={smoke_out}", "posttrain.activation_checkpointing=true"]), data)[1][0]
    assert n2[0].spec.activation_checkpointing and not n2[1][0].spec.activation_checkpointing  # its stage's runs only


def test_every_arm_of_a_seed_starts_from_the_same_weights(smoke_data, smoke_out):
    """Paired arms: the λ comparison is not also a comparison of initial weights."""
    import torch

    from raysweep.train.model import build_model

    study, data = smoke_data
    arms, _ = plan(study, data)
    assert len(arms) > 1 and len({a.spec.seed for a in arms}) == 1
    first, second = (build_model(study.model.shape, data.vocab_size, study.model.seq_len, seed=a.spec.seed).state_dict() for a in arms[:2])
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = plan(load_study(SMOKE, [f"output_dir={smoke_out}", "seed=1"]), data)[0]
    assert other[0].spec.seed != arms[0].spec.seed  # another seed, another (shared) start
