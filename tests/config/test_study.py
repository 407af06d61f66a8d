import re
import subprocess
import sys
from pathlib import Path

import pytest

from raysweep.config import Study, StudyConfigError, load_study

ROOT = Path(__file__).resolve().parent.parent.parent


def test_default_file_is_the_schema_default():
    # config.py is the one place defaults live; the default study spells them out for readers.
    assert load_study() == Study()


@pytest.mark.parametrize(
    "override, match",
    [
        ("pretrain.mix_fraction=[-0.1]", r"pretrain\.mix_fraction: mixing fraction -0\.1 outside \[0\.0, 1\.0\]"),
        ("posttrain.dropout=[1.0]", r"posttrain\.dropout: dropout 1\.0 outside"),
        ("pretrain.tokens=0", r"pretrain\.tokens: Input should be greater than 0"),
        ("model.seq_len='128'", r"model\.seq_len: Input should be a valid integer"),
        ("posttrain.lr=[]", r"posttrain\.lr: needs at least one learning rate"),
        ("finetune.lr=[1e-3, 1e-3]", r"finetune\.lr: repeated learning rates"),
        ("pretrain.resources.workers=3", r"pretrain\.batch_size \(16\) must divide evenly over pretrain\.resources\.workers \(3\)"),
        ("finetune.resources.workers=2", r"finetune\.resources must equal posttrain\.resources"),
        ("finetune.min_lr=1.0", r"finetune\.min_lr \(1\.0\) is above its smallest lr"),
        ("name=a b", r"name: String should match pattern"),
        ("model.n_heads=3", r"model\.n_heads: 3 heads do not divide hidden 128"),
        ("model.hidden=36", r"model\.n_heads: head dimension hidden / n_heads = 9 is odd"),
        ("model.hidden=-64", r"model\.hidden: must be at least 1"),
        ("model.n_kv_heads=3", r"model\.n_kv_heads: 3 KV heads do not divide n_heads 4"),
        ("model.norm_eps=0", r"model\.norm_eps: must be in \(0, 1\)"),
        ("model.mlp_hidden=1.5", r"model\.mlp_hidden: Input should be a valid integer"),
        ("nonsense", r"expected key=value"),
    ],
)
def test_bad_values_name_the_key(override, match):
    with pytest.raises(StudyConfigError, match=match):
        load_study(None, [override])


def test_cli_rejects_bad_fraction_fast_without_starting_ray():
    """Fast because nothing heavy runs before the check: neither Ray, torch nor MLflow is imported
    (what the test checks, not a wall-clock time, which a loaded machine makes noisy)."""
    code = (
        "import sys; from raysweep.main import main; rc = main(['--set', 'pretrain.mix_fraction=[0, 1.5]']);"
        "heavy = [m for m in ('ray', 'torch', 'mlflow') if m in sys.modules]; assert not heavy, heavy; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "pretrain.mix_fraction" in proc.stderr and "1.5" in proc.stderr


def test_content_hash_follows_content():
    a, b = load_study(), load_study(None, ["seed=1"])
    assert a.content_hash() == load_study().content_hash() != b.content_hash()


def test_paper_study_dry_run_counts_its_search_space_offline_and_fast():
    import os
    import subprocess
    import sys

    path = ROOT / "search_spaces" / "paper-135m-frontier.yaml"
    study = load_study(path)
    p1, p2, p3 = study.pretrain, study.posttrain, study.finetune
    n2 = len(p1.mix_fraction) * len(p2.lr) * len(p2.dropout) * len(p2.replay) * len(p2.tuning) * len(p2.batch_sizes)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "RAY_ADDRESS": ""}
    # fast because it imports nothing heavy (checked, rather than a wall-clock time)
    code = (
        f"import sys; from raysweep.main import main; rc = main(['--config', {str(path)!r}, '--dry-run']);"
        "heavy = [m for m in ('ray', 'torch', 'mlflow', 'transformers') if m in sys.modules]; assert not heavy, heavy; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"pretrain   {len(p1.mix_fraction):>4} runs" in out.stdout
    assert f"posttrain  {n2:>4} runs" in out.stdout and n2 == 90
    assert f"finetune   {n2 * len(p3.lr):>4} runs" in out.stdout
    assert "H100-hours" in out.stdout


def test_dry_run_sizes_the_data_of_a_paper_study(capsys):
    """Per hub corpus: the tokens to tokenize, the token shards' size on disk and the CPU-hours."""
    from raysweep.main import main

    assert main(["--config", "search_spaces/paper-135m-frontier.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    pre = next(line for line in out.splitlines() if line.strip().startswith("data     pre"))
    assert "8,700,000,000 tokens to tokenize" in pre and "GB of token shards" in pre and "CPU-hours" in pre
    gb = float(pre.split("≈ ")[1].split(" GB")[0].replace(",", ""))
    assert 17.4 <= gb <= 18.5  # 8.7B uint16 ids (17.4 GB) plus the per-document index


def test_model_shape_fields_are_the_presets_shape_fields():
    from raysweep.config import ModelConfig
    from raysweep.presets import SHAPE_FIELDS

    assert set(SHAPE_FIELDS) <= set(ModelConfig.model_fields)
    shape = load_study(None, ["model.preset=debug", "model.mlp_hidden=256", "model.norm_eps=1e-6"]).model.shape
    assert (shape.n_layers, shape.hidden, shape.mlp_hidden, shape.norm_eps) == (2, 64, 256, 1e-6)  # the rest is the preset's


def test_a_model_kind_linear_study_refuses_a_llama_shape():
    with pytest.raises(StudyConfigError, match=r"model\.hidden: model\.kind linear has no Llama shape"):
        load_study(ROOT / "search_spaces" / "theory.yaml", ["model.hidden=64"])


def test_an_address_space_limit_too_small_for_ray_is_said_in_one_line(tmp_path):
    """Under `ulimit -v 8000000` ray.init hung for minutes in a C++ abort; now one line says what to change."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8_000_000 * 1024, 8_000_000 * 1024))

    proc = subprocess.run(
        [sys.executable, "-m", "raysweep.main", "--config", str(ROOT / "search_spaces" / "smoke.yaml"), "--set", f"output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: the address-space limit (ulimit -v) is 7.6 GiB"), proc.stderr[-3000:]
    assert "ulimit -v unlimited" in errors[0]


def test_every_sweep_axis_takes_a_scalar_as_its_one_value():
    """`x` and `[x]` are one study, for each axis (the plan test checks their node keys)."""
    axes = {
        "pretrain.mix_fraction": "0.5",
        "posttrain.lr": "1e-3",
        "posttrain.dropout": "0.1",
        "posttrain.replay": "0.01",
        "posttrain.tuning": "lora",
        "posttrain.lora_targets": "o_proj",
        "finetune.lr": "3e-4",
    }
    for key, value in axes.items():
        assert load_study(None, [f"{key}={value}"]) == load_study(None, [f"{key}=[{value}]"]), key
    with pytest.raises(StudyConfigError, match=r"posttrain\.dropout: Input should be a valid list \(got True\)"):
        load_study(None, ["posttrain.dropout=true"])  # a boolean is not silently 1.0


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("paper-*.yaml")), ids=lambda p: p.stem)
def test_a_paper_studys_dry_run_says_gpu_hours_per_stage_their_source_and_node_transfer_times(path, capsys):
    """What a researcher on a GPU node reads first (issue 44): per stage GPU-hours that add up to
    the tree's, the MFU they assume and that it is assumed (no GPU has measured it yet), and how
    long a node and a progress checkpoint take to move at a stated store bandwidth."""

    from raysweep.main import main
    from raysweep.sweep.describe import STORE_BYTES_PER_S

    assert main(["--config", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    total = float(re.search(r"≈ ([\d.e+]+) H100-hours at 40% MFU", out).group(1))
    assert "assumed, not measured for this shape: bench/gpu_check.py measures it" in out
    stages = re.findall(r"compute  (pretrain|posttrain|finetune) +\d+ runs, .* ≈ ([\d.e+]+) H100-hours", out)
    assert [s for s, _ in stages] == ["pretrain", "posttrain", "finetune"]
    assert sum(float(h) for _, h in stages) == pytest.approx(total, rel=0.01)
    [transfer] = [line for line in out.splitlines() if line.startswith("  transfer per node")]
    assert f"at {STORE_BYTES_PER_S / 1e6:,.0f} MB/s (assumed" in transfer
    for size, unit, seconds in re.findall(r"([\d.,]+) (GB|MB) ([\d.,]+) s", transfer):
        nbytes = float(size.replace(",", "")) * (1e9 if unit == "GB" else 1e6)
        assert float(seconds.replace(",", "")) == pytest.approx(nbytes / STORE_BYTES_PER_S, rel=0.05, abs=0.06)
