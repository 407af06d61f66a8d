"""One stage on 2 Ray Train workers (DDP over gloo): disjoint shards, identical weights."""

from dataclasses import asdict

from raysweep.stage import RunSpec, node_done
from raysweep.streams import as_train_dataset


def test_two_workers_read_disjoint_shards_and_agree(smoke_data, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysweep.stage import train_loop

    study, data = smoke_data
    spec = RunSpec(stage="finetune", label="ddp", node_key="ddp", node_dir=str(tmp_path / "node"), dataset="train",
                   lr=1e-3, min_lr=0.0, warmup_steps=2, weight_decay=0.1, batch_size=8, max_steps=12, eval_every=6,
                   monitor=["ft"], seed=1)
    ctx = {"preset": study.model.preset, "vocab_size": data.vocab_size, "seq_len": study.model.seq_len, "eval_tokens": 1024,
           "eval_paths": {r: str(s.path) for r, s in data.heldout.items()}, "tokenizer_id": data.tokenizer_id,
           "runs": [asdict(spec)], "audit": True, "threads": 1}
    trainer = TorchTrainer(
        train_loop, train_loop_config=ctx,
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="ddp", storage_path=str(tmp_path / "ray")),
        datasets={"train": as_train_dataset(data.finetune)},
    )
    [result] = trainer.fit().return_value
    audit = result["audit"]
    rows0, rows1 = audit["rows"]
    assert len(rows0) == len(rows1) == 12 * 4  # 12 steps x 4 sequences per rank
    assert not set(rows0) & set(rows1)  # each rank trained on its own shard
    assert audit["weights"][0] == audit["weights"][1]  # DDP kept the replicas identical
    done = node_done(spec.node_dir)
    assert done["spec"]["batch_size"] == 8 and done["tokenizer_id"] == data.tokenizer_id  # the checkpoint carries its config
    assert set(done["result"]["losses"]) == {"pre", "post", "ft"}
