"""raysweep.sweep.slots' pure parts (no Ray): what a slot trial and its workers reserve, which item
kinds share slots and how many slots each phase gets, the typed job a slot's workers receive."""

from __future__ import annotations

from raysweep.config import ResourcesConfig
from raysweep.sweep import slots
from raysweep.train.context import LoopConfig

ONE_CPU = ResourcesConfig()
DDP_GPU = ResourcesConfig(workers=4, cpus_per_worker=2.0, gpus_per_worker=1.0)


def test_a_one_worker_stage_trains_in_its_trial_which_reserves_that_worker():
    assert slots.trains_in_trial(ONE_CPU) and not slots.trains_in_trial(DDP_GPU)
    assert slots.trial_resources(ONE_CPU) == {"CPU": 1.0}
    # a trial of a worker group reserves one byte: its workers need the CPUs and GPUs (ray#25239)
    assert slots.trial_resources(DDP_GPU) == slots.TRIAL_RESOURCES == {"memory": 1}
    assert slots.worker_resources(DDP_GPU) == {"CPU": 2.0, "GPU": 1.0}


def test_slots_serve_arms_with_pretrainings_shape_and_the_rest_with_post_trainings():
    resources = {"pretrain": DDP_GPU, "posttrain": ONE_CPU, "finetune": ONE_CPU}
    assert slots.slot_resources(resources, ("arm",)) is DDP_GPU
    assert slots.slot_resources(resources, ("subtree", "leaf")) is ONE_CPU
    assert slots.slot_resources(resources, ("arm", "subtree", "leaf")) is ONE_CPU


def test_one_shape_shares_slots_and_two_shapes_run_arms_first(monkeypatch):
    monkeypatch.setattr(slots, "concurrency", lambda r: 8 if r is ONE_CPU else 2)
    same = {"pretrain": ONE_CPU, "posttrain": ONE_CPU, "finetune": ONE_CPU}
    assert slots.phases(same) == [(("arm", "subtree", "leaf"), 8)]
    two = {"pretrain": DDP_GPU, "posttrain": ONE_CPU, "finetune": ONE_CPU}
    assert slots.phases(two) == [(("arm",), 2), (("subtree", "leaf"), 8)]
    assert slots.subtree_slots(two, None, 3) == 3 and slots.subtree_slots(two, 2, 30) == 2 and slots.subtree_slots(two, None, 30) == 8


def test_a_phase_never_gets_more_slots_than_its_arms_and_subtrees():
    items = [("arm", 0), ("arm", 1), ("subtree", 0), ("subtree", 1), ("subtree", 2), ("leaf", 2, 1), ("leaf", 2, 2)]
    assert slots.phase_slots(("arm", "subtree", "leaf"), 16, None, items) == 5  # leaves come at the tail
    assert slots.phase_slots(("arm",), 16, None, items) == 2
    assert slots.phase_slots(("subtree", "leaf"), 16, 2, items) == 2  # max_concurrent_trials
    assert slots.phase_slots(("arm",), 16, None, items[2:]) == 0


def test_a_workers_threads_follow_its_cpus():
    loop = LoopConfig(None, 10, 8, 8, {}, "tok")
    assert slots.with_threads(loop, ResourcesConfig(cpus_per_worker=3.0)).threads == 3
    assert slots.with_threads(loop, ResourcesConfig(cpus_per_worker=0.5)).threads == 1


def test_a_trial_that_trains_itself_trains_on_the_device_it_reserved():
    assert slots.trains_in_trial(ONE_CPU) and slots.trial_device(ONE_CPU) == "cpu"
    assert slots.trial_device(ResourcesConfig(gpus_per_worker=1.0)) == "cuda"
    assert not slots.trains_in_trial(ResourcesConfig(workers=2))


def test_a_one_rank_group_broadcasts_nothing_and_errors_read_as_their_worker_raised_them():
    obj = object()
    assert slots.broadcast(obj, 1) is obj
    assert slots.error_text(RuntimeError("  out of memory \n")) == "out of memory"
    assert slots.error_text(KeyError()) == "KeyError"
