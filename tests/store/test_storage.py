"""Object-store node stores (raysweep/store/storage.py), through pyarrow's filesystem API.

Most stores here are `file://` URIs: the same code path as s3:// or gs:// (pyarrow FileSystem.from_uri,
streams, selectors), with the "remote" side on local disk. The S3 tests talk to a real S3 API on
127.0.0.1 (moto's server, started by the session: tests/conftest.py). The checks: nodes are
written through the local cache and uploaded with node.json last; parents and progress are
fetched back when the cache is gone; a node bigger than the multipart threshold goes up in parts;
a whole study runs on S3 and resumes with every machine's cache wiped."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from raysweep.spec import RunSpec
from raysweep.store import storage
from raysweep.store.nodes import (
    NODE_FILE,
    load_progress,
    load_weights,
    node_done,
    progress_dir,
    save_node,
    save_progress,
)
from tests.helpers import run_spec


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "bucket", f"file://{tmp_path / 'bucket'}"


def test_paths_keep_a_uris_query_at_the_end():
    uri = "s3://b/nodes?region=eu-west-1&scheme=http"
    assert storage.join(uri, "pretrain", "abc") == "s3://b/nodes/pretrain/abc?region=eu-west-1&scheme=http"
    assert storage.with_suffix(storage.join(uri, "x"), ".resume") == "s3://b/nodes/x.resume?region=eu-west-1&scheme=http"
    assert storage.join("/data/nodes", "pretrain", "abc") == "/data/nodes/pretrain/abc"
    assert not storage.is_remote("/data/nodes") and storage.is_remote(uri)


def test_text_files_exist_and_delete_on_both_kinds(store, tmp_path):
    _, uri = store
    for base in (uri, str(tmp_path / "plain")):
        f = storage.join(base, "a", "flag")
        assert storage.read_text(f) is None and not storage.exists(f)
        storage.write_text(f, "x\n")
        assert storage.read_text(f) == "x\n" and storage.exists(f)
        storage.delete(f)
        assert not storage.exists(f)


def _spec(node_dir: str, **kw) -> RunSpec:
    return run_spec(node_dir, node_key="k1", monitor=["post"], **kw)


def test_a_node_is_uploaded_node_json_last_and_fetched_back_when_the_cache_is_gone(store, tmp_path):
    root, uri = store
    node_dir = storage.join(uri, "posttrain", "k1")
    uploaded: list[str] = []
    real = storage.upload_dir

    def spy(local, dest, last=None):
        real(local, dest, last)
        uploaded.extend(sorted(p.name for p in (root / "posttrain" / "k1").iterdir()))

    up = storage.Uploader()
    storage.upload_dir, saved = spy, storage.upload_dir
    try:
        state = {"w": torch.arange(6.0).reshape(2, 3)}
        save_node(_spec(node_dir), state, {"losses": {"post": 1.0}}, "tok", up)
        up.wait()
    finally:
        storage.upload_dir = saved
    assert set(uploaded) == {"model.safetensors", "metrics.json", NODE_FILE}
    assert node_done(node_dir)["result"]["losses"] == {"post": 1.0}

    shutil.rmtree(tmp_path / "cache")  # a new machine: nothing cached
    assert torch.equal(load_weights(node_dir, "tok")["w"], state["w"])  # downloaded once
    assert (storage.cache_dir(node_dir) / "model.safetensors").exists()
    from raysweep.store.nodes import TokenizerMismatchError

    with pytest.raises(TokenizerMismatchError):
        load_weights(node_dir, "another-tokenizer")


def test_upload_dir_writes_the_marker_file_after_every_other(tmp_path, store):
    _, uri = store
    local = tmp_path / "node"
    local.mkdir()
    for name in (NODE_FILE, "b.bin", "a.bin"):
        (local / name).write_text(name)
    seen = []

    class Spy:
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, k):
            return getattr(self.fs, k)

        def open_output_stream(self, path):
            seen.append(path.rsplit("/", 1)[1])
            return self.fs.open_output_stream(path)

    real = storage._resolve
    storage._resolve = lambda u: (Spy(real(u)[0]), real(u)[1])
    try:
        storage.upload_dir(local, storage.join(uri, "n"), last=NODE_FILE)
    finally:
        storage._resolve = real
    assert seen == ["a.bin", "b.bin", NODE_FILE]


def test_progress_is_uploaded_in_the_background_and_resumed_from_the_store(store, tmp_path):
    _, uri = store
    spec = _spec(storage.join(uri, "posttrain", "k1"))
    up = storage.Uploader()
    counters = {"step": 3, "best": 0.5, "best_step": 2, "bad": 0, "train_seconds": 1.5}
    save_progress(spec, 0, {"w": torch.ones(2)}, {"state": {}, "param_groups": []}, counters, None, up)
    up.wait()
    shutil.rmtree(progress_dir(spec.node_dir))  # the worker that saved it is gone
    state = load_progress(spec, 0)
    assert state["step"] == 3 and torch.equal(state["model"]["w"], torch.ones(2)) and state["rng"] is not None
    remote = json.dumps(sorted(p.name for p in (tmp_path / "bucket" / "posttrain" / "k1.resume").iterdir()))
    assert remote == json.dumps(["rng0.pt", "state.pt"])


def test_a_failed_upload_is_raised_by_wait():
    up = storage.Uploader()
    up.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        up.wait()


def _objects(uri: str) -> list[str]:
    """Every object under `uri`, relative to it."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(i.path.removeprefix(root + "/") for i in infos if i.type == pafs.FileType.File)


def test_a_node_bigger_than_the_multipart_threshold_goes_to_s3_and_back(s3_server, tmp_path, monkeypatch):
    """A real S3 API (moto's server on 127.0.0.1): 24 MB of weights go up in parts (pyarrow's
    multipart upload: its log shows the upload started and its parts), and come back bit for bit
    on a machine with nothing cached."""
    from tests.helpers import s3_uri

    port, log = s3_server
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    node_dir = storage.join(s3_uri(port, "multipart"), "posttrain", "big")
    state = {"w": torch.randn(6_000_000, generator=torch.Generator().manual_seed(0))}
    up = storage.Uploader()
    save_node(_spec(node_dir), state, {"losses": {"post": 1.0}}, "tok", up)
    up.wait()
    requests = log.read_text()
    assert "POST /multipart/nodes/posttrain/big/model.safetensors?uploads" in requests
    assert "PUT /multipart/nodes/posttrain/big/model.safetensors?partNumber=2&" in requests
    assert _objects(s3_uri(port, "multipart")) == sorted(f"posttrain/big/{n}" for n in ("metrics.json", NODE_FILE, "model.safetensors"))
    shutil.rmtree(tmp_path / "cache")  # a new machine
    assert torch.equal(load_weights(node_dir, "tok")["w"], state["w"])


def test_a_study_runs_and_resumes_on_s3_with_the_local_cache_wiped(ray_local, reference, s3_server, tmp_path):
    import os

    from raysweep.config import load_study
    from raysweep.study import run_study
    from tests.helpers import SMOKE, s3_uri, with_reference_data

    with_reference_data(reference[0], tmp_path / "out")  # the data is made once per session; its publishing is tested here
    uri = s3_uri(s3_server[0], "study")
    study = load_study(
        SMOKE,
        [
            f"output_dir={tmp_path / 'out'}",
            f"checkpoint_dir={uri}",
            "pretrain.mix_fraction=[0.5]",
            "posttrain.lr=[1e-3]",
            "finetune.lr=[1e-3]",
        ],
    )
    assert study.checkpoints == uri
    first = run_study(study)
    assert first["failures"] == [] and first["trained"] == {"pretrain": 1, "posttrain": 1, "finetune": 1}
    stored = _objects(uri)
    nodes = [p for p in stored if not p.startswith("data/")]
    # 3 files per node, and the stage-2 and stage-3 nodes' held-out slices' scores beside them
    assert len(nodes) == 11 and sum(p.endswith("/node.json") for p in nodes) == 3 and not any(".resume" in p for p in nodes)
    assert sum(p.endswith(".slices.json") for p in nodes) == 2
    # the data the workers read is published beside the nodes: every stream's plan and the token shards it reads
    plans = [p for p in stored if p.startswith("data/streams/") and p.endswith("/plan.json")]
    assert {p.split("/")[2].split("-")[0] for p in plans} >= {"pretrain", "posttrain", "finetune"}
    assert any(p.startswith("data/tokens/") and p.endswith(".tokens") for p in stored)
    cache = os.environ["RAYSWEEP_CACHE"]  # the driver's and the workers' (tests/conftest.py)
    shutil.rmtree(cache)  # as if every machine were new: nodes are found in S3 alone
    again = run_study(study)
    assert again["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 0} and again["rows"] == first["rows"]


def test_a_queued_progress_upload_of_a_finished_node_is_skipped_not_an_error(store, tmp_path):
    _, uri = store
    local = tmp_path / "progress"
    local.mkdir()
    (local / "state.pt").write_bytes(b"x")
    up = storage.Uploader()
    up.submit(storage.upload_files, local, storage.join(uri, "n.resume"), ["rng0.pt", "state.pt"])  # rng0.pt already gone
    up.wait()
    assert storage.exists(storage.join(uri, "n.resume", "state.pt")) and not storage.exists(storage.join(uri, "n.resume", "rng0.pt"))
