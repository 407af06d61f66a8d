"""Scoring stored weights without training (raysweep.train.score): the held-out slices' losses come
from the same evaluation as a run's final losses, so on the run's own held-out sets it gives them back."""

import json

import torch

from raysweep.store.nodes import load_weights
from raysweep.sweep.tree import loop_config
from raysweep.train.context import load_eval_sets
from raysweep.train.score import score_weights


def test_scoring_a_stored_checkpoint_gives_back_its_final_losses(smoke_study, smoke_data):
    study, _, _ = smoke_study
    _, data = smoke_data
    loop = loop_config(study, data)
    sets = load_eval_sets(loop)
    for stage in ("posttrain", "finetune"):
        node_dir = next(p.parent for p in sorted((study.checkpoints / stage).glob("*/node.json")))
        done = json.loads((node_dir / "node.json").read_text())
        [scored] = score_weights(load_weights(str(node_dir), data.tokenizer_id), loop, [sets], torch.device("cpu"))
        for role, loss in done["result"]["losses"].items():
            assert abs(scored[role] - loss) < 1e-4, (stage, role, scored[role], loss)
