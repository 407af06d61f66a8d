"""One stage on 2 Ray Train workers (DDP over gloo) and on one worker (in-process, as a one-worker
stage trains in its slot): the same data per step, identical replicas."""

import sys
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import raysweep
from raysweep.config import load_study
from raysweep.data.streams import StreamSource
from raysweep.store.nodes import node_done
from raysweep.study import run_study
from raysweep.sweep.slots import worker_setup
from raysweep.train.callbacks.audit import Audit
from raysweep.train.context import LoopConfig, Worker, load_eval_sets
from raysweep.train.trainer import Trainer, TrainerConfig
from tests.helpers import REDUCED, SMOKE, node_results, run_spec, with_reference_data


def _own_frames() -> list[str]:
    """The calls on this process's stack that are raysweep's own (module:function), outermost first."""
    package = str(Path(raysweep.__file__).parent)
    return [f"{Path(f.filename).stem}:{f.name}" for f in traceback.extract_stack() if f.filename.startswith(package)]


@dataclass(frozen=True)
class RouteProbe(TrainerConfig):
    """The real trainer, built after wrapping cross_entropy so that each process writes the stack
    of raysweep's own calls at its first training loss (one line per process, in `path`); the
    wrapper stands where cross_entropy's own frame would be."""

    path: str = ""

    def build(self, loop, worker, eval_sets):
        from raysweep.train import step

        real = step.cross_entropy

        def probe(*args, **kwargs):
            step.cross_entropy = real
            with open(self.path, "a") as f:
                f.write(" -> ".join([*_own_frames(), "loss:cross_entropy"]) + "\n")
            return real(*args, **kwargs)

        step.cross_entropy = probe
        return TrainerConfig.build(self, loop, worker, eval_sets)


def _run(study, data, tmp_path, name: str, **over):
    """One 12-step fine-tuning run with audit on, its spec, loop settings and sources."""
    spec = run_spec(
        tmp_path / name, stage="finetune", label="ddp", node_key=name, warmup_steps=2, weight_decay=0.1, batch_size=8, max_steps=12
    )
    spec = replace(spec, eval_every=6, monitor=["ft"], seed=1, **over)
    loop = LoopConfig(
        study.model.shape,
        data.vocab_size,
        study.model.seq_len,
        1024,
        {r: StreamSource(str(s.path)) for r, s in data.heldout.items()},
        data.tokenizer_id,
        callbacks=(Audit(),),
    )
    return spec, loop, {"train": StreamSource(str(data.finetune.path))}


def _fit(study, data, tmp_path, workers: int, name: str, **over):
    """The run on a Ray Train worker group of `workers` (DDP over gloo)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    spec, loop, sources = _run(study, data, tmp_path, name, **over)

    def train(config):  # each worker as a slot's (raysweep.sweep.slots.worker_setup); rank 0's results come back
        worker, eval_sets, own = worker_setup(loop, None)
        return Trainer(own, worker, eval_sets).fit([spec], sources)

    trainer = TorchTrainer(
        train,
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 2 / workers}),
        run_config=RunConfig(name=name, storage_path=str(tmp_path / "ray")),
    )
    [result] = trainer.fit().return_value
    return spec, result


def _here(study, data, tmp_path, name: str):
    """The run in this process, one worker, no Ray: how a one-worker stage trains (in its slot trial)."""
    import torch

    spec, loop, sources = _run(study, data, tmp_path, name)
    [result] = Trainer(loop, Worker(torch.device("cpu")), load_eval_sets(loop)).fit([spec], sources)
    return spec, result


def test_two_workers_see_the_one_worker_batches_and_agree(smoke_data, tmp_path):
    study, data = smoke_data
    spec, two = _fit(study, data, tmp_path, 2, "ddp2")
    rows0, rows1 = two["audit"]["rows"]
    assert len(rows0) == len(rows1) == 12 * 4  # 12 steps x 4 sequences per rank
    assert not set(rows0) & set(rows1)  # each rank trained on its own rows
    assert two["audit"]["weights"][0] == two["audit"]["weights"][1]  # DDP kept the replicas identical
    # the same seed gives the same data whatever the worker count: per step, rank 0's rows then
    # rank 1's are exactly the rows the one-worker run trained on (byte-identical, by digest)
    _, one = _here(study, data, tmp_path, "ddp1")
    [single] = one["audit"]["rows"]
    assert single == [row for s in range(12) for row in rows0[4 * s : 4 * s + 4] + rows1[4 * s : 4 * s + 4]]
    done = node_done(spec.node_dir)
    assert done["spec"]["batch_size"] == 8 and done["tokenizer_id"] == data.tokenizer_id  # the checkpoint carries its config
    assert set(done["result"]["losses"]) == {"pre", "post", "ft"}
    assert 0 <= done["result"]["data_wait_share"] < 1


@pytest.mark.gpu_path
def test_ddp_with_micro_batches_and_activation_checkpointing_equals_the_one_worker_run(smoke_data, tmp_path):
    """What a GPU node runs for the paper's batches: 2 DDP workers (gloo here, NCCL there), each
    rank's 4 rows in micro-batches of 1 whose gradients accumulate, activations recomputed in
    backward, against one worker training all 8 rows in one forward: the same run to float rounding."""
    study, data = smoke_data
    _, two = _fit(study, data, tmp_path, 2, "ddp-micro", micro_batch_size=1, activation_checkpointing=True)
    _, one = _here(study, data, tmp_path, "plain-one")
    assert two["micro_batch_size"] == 1 and two["accumulation_steps"] == 4 and one["accumulation_steps"] == 1
    assert two["audit"]["weights"][0] == two["audit"]["weights"][1]  # the replicas stayed identical
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)


def test_a_study_whose_stages_ask_different_resources(ray_local, reference, tmp_path, monkeypatch):
    """Pretraining on 2 DDP workers, stages 2-3 on 1: arms train first on warm slots of their shape,
    then the subtrees on theirs (raysweep.sweep.slots.phases); the items a 2-rank slot takes reach both
    ranks. Every node finishes, and the 2-worker arm matches the 1-worker reference's losses."""
    ref_out = reference[0]
    out = with_reference_data(ref_out, tmp_path / "study")
    study = load_study(SMOKE, [f"output_dir={out}", *REDUCED, "pretrain.resources.workers=2", "pretrain.resources.cpus_per_worker=1"])
    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers need not import this test module
    fits, fit = [], tune.Tuner.fit
    monkeypatch.setattr(tune.Tuner, "fit", lambda self: fits.append(_own_frames()) or fit(self))
    probe = RouteProbe(path=str(tmp_path / "route.txt"))
    summary = run_study(study, trainer=probe)
    assert summary["failures"] == [] and summary["trained"] == {"pretrain": 1, "posttrain": 2, "finetune": 2}
    got, want = node_results(out), node_results(ref_out)
    [arm] = [p.name for p in (out / "checkpoints" / "pretrain").iterdir() if "." not in p.name]  # resources are in no node key
    assert got[arm]["losses"] == pytest.approx(want[arm]["losses"], rel=1e-3)  # same data per step; only the reduction order differs
    # the route from the CLI to the loss (README): main -> run_study, then the driver's stack where
    # Tune takes over, then a slot's (one-worker: slot_trial on) or a DDP worker's (serve_queue on;
    # its slot_trial fitted the worker group) at the first loss; ≤ 10 own calls either way
    driver = fits[0][fits[0].index("study:run_study") :]
    assert driver == ["study:run_study", "study:train_language_models", "tree:train_tree"]
    routes = set((tmp_path / "route.txt").read_text().splitlines())
    tail = ["serve_queue", "fit", "run", "forward_backward", "cross_entropy"]
    one_worker = [r for r in routes if r.startswith("slots:slot_trial")]
    ddp = [r for r in routes if r.startswith("slots:serve_queue")]
    assert one_worker and ddp, routes
    for route in one_worker + ddp:
        names = [call.split(":")[1] for call in route.split(" -> ")]
        assert names[-5:] == tail, route
        whole = ["main", "run_study", "train_language_models", "train_tree", "slot_trial", *names[names[0] == "slot_trial" :]]
        assert len(whole) <= 10, " -> ".join(whole)
