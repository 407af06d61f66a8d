"""`model.compile: true` (torch.compile of the training step, inductor on CPU here): a study trains
through the compiled step, the compiled graphs are really built, and the results match the eager
reference run to float tolerance (not bit for bit: the compiled kernels round differently)."""

import pytest

from raysweep.config import load_study
from raysweep.study import run_study
from tests.helpers import REDUCED, SMOKE, node_results, with_reference_data


def test_compiled_training_step_matches_the_eager_run(ray_local, reference, tmp_path):
    ref_out = reference[0]
    out = with_reference_data(ref_out, tmp_path / "study", arm_to=tmp_path / "study" / "checkpoints")
    # one stage-2 configuration of the reference (same node keys) and its child: one slot, one compile
    study = load_study(SMOKE, [f"output_dir={out}", *REDUCED, "posttrain.lr=[1e-3]", "model.compile=true"])
    summary = run_study(study)
    assert summary["failures"] == [] and summary["trained"] == {"pretrain": 0, "posttrain": 1, "finetune": 1}
    got, want = node_results(out), node_results(ref_out)
    trained = [k for k in got if "compiled_graphs" in got[k]]
    assert len(trained) == 2 and all(got[k]["compiled_graphs"] > 0 for k in trained)
    for k in trained:
        assert got[k]["steps"] == want[k]["steps"]
        assert got[k]["losses"] == pytest.approx(want[k]["losses"], rel=1e-4)
