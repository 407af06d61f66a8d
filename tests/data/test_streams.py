"""Stream plans over token shards: exact mixing (checked on the packed blocks, against the plain-numpy
specification), held-out data kept out, determinism, the rows each rank reads, and repeated passes."""

import json

import numpy as np
import pytest

from raysweep.data.blocks import rank_rows, reference_blocks
from raysweep.data.mixing import mix_share, replay_tokens, seeded_order, take_budget
from raysweep.data.streams import StreamReader, StreamRows, build_plan, read_blocks
from raysweep.presets import PRESETS
from raysweep.store.keys import derive_seed
from tests.helpers import token_view

EOS = 0


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_ray_stream_equals_the_specification_and_counts_per_source(ray_local, tmp_path, lam):
    """Each source uses its own token-id range, so the blocks themselves tell how many tokens came from where."""
    rng = np.random.default_rng(7)
    pre_docs = [rng.integers(1, 1000, rng.integers(1, 90)) for _ in range(300)]
    post_docs = [rng.integers(1000, 2000, rng.integers(1, 90)) for _ in range(200)]
    # small shard files: a stream's pieces come from several files of each corpus
    pre, post = (
        token_view(tmp_path / "pre", pre_docs, "pre", max_bytes=4000),
        token_view(tmp_path / "post", post_docs, "post", max_bytes=4000),
    )
    assert len(pre.files) > 1
    pre_sel = take_budget(pre.lengths, seeded_order(300, 1), 5000)
    post_sel = mix_share(post.lengths, seeded_order(200, 2), 4000, lam)
    parts = {"pre": (pre, pre_sel)} | ({"post": (post, post_sel)} if post_sel.tokens else {})
    stream = build_plan("t", parts, 11, 31, EOS, tmp_path / "streams")
    blocks = read_blocks(stream)
    spec = reference_blocks({"pre": pre_docs, "post": post_docs}, {k: v[1] for k, v in parts.items()}, 11, 32, EOS)
    assert blocks.shape == spec.shape and (blocks == spec).all()  # byte for byte what mixing.py + streams.pack specify
    # realised tokens per source, counted in the packed blocks: exact to one block (the dropped tail)
    flat = blocks.reshape(-1)
    n_post, n_pre = int(((flat >= 1000) & (flat < 2000)).sum()), int(((flat >= 1) & (flat < 1000)).sum())
    n_sep = int((flat == EOS).sum())
    assert n_pre + n_post + n_sep == blocks.size
    assert round(lam * 4000) + 5000 - blocks.size < 32  # waste under one block
    for sel, docs, n in ((post_sel, post_docs, n_post), (pre_sel, pre_docs, n_pre)):
        content = sum(min(b, len(docs[r])) - a for r, a, b in zip(sel.rows, sel.start, sel.stop))  # selected non-separator tokens
        assert 0 <= content - n < 32  # every selected token is in the blocks, except the tail cut off (< one block)
    assert stream.stats["tokens"] == {k: v[1].tokens for k, v in parts.items()}
    assert stream.stats["waste_tokens"] == sum(stream.stats["tokens"].values()) - blocks.size


def test_smoke_streams_hold_exactly_the_configured_shares(smoke_data):
    study, data = smoke_data
    p1 = study.pretrain
    for lam, stream in data.pretrain.items():
        assert stream.stats["tokens"]["pre"] == p1.tokens
        assert stream.stats["tokens"].get("post", 0) == round(lam * p1.post_tokens)
        assert 0 <= stream.stats["waste_tokens"] < stream.stats["block_len"]
    for (_, r), stream in data.posttrain.items():
        assert stream.stats["tokens"]["post"] == p1.post_tokens
        assert stream.stats["tokens"].get("replay", 0) == replay_tokens(p1.post_tokens, r)


def test_streams_are_reproducible_bit_for_bit(smoke_data, tmp_path):
    study, data = smoke_data
    stream = data.pretrain[0.5]
    rebuilt = build_plan("again", _parts_of(study, data, 0.5), stream.stats["seed"], study.model.seq_len, EOS, tmp_path, data.tokenizer_id)
    assert (read_blocks(rebuilt) == read_blocks(stream)).all()
    assert rebuilt.stats["content"] == stream.stats["content"]  # the same pieces of the same shards


def _views(study, data):
    """The smoke corpora's train and held-out views (already read: tokenize_corpus finds its cache)."""
    from raysweep.data.corpus import tokenize_corpus
    from raysweep.data.mixing import ROLES, needed_tokens

    need = needed_tokens(study)
    return {
        r: tokenize_corpus(
            getattr(study.corpora, r),
            f"corpora.{r}",
            study.seed,
            study.out / "cache" / "tokens",
            data.tokenizer_path,
            data.tokenizer_id,
            data.vocab_size,
            need[r],
            parallel=False,
        )
        for r in ROLES
    }


def _parts_of(study, data, lam):
    # rebuild the 0.5 arm's parts from the same pure selection the study used
    corpora = _views(study, data)
    pre, post = corpora["pre"].train, corpora["post"].train
    pre_sel = take_budget(pre.lengths, seeded_order(len(pre.lengths), derive_seed(study.seed, "order", "pre")), study.pretrain.tokens)
    post_order = seeded_order(len(post.lengths), derive_seed(study.seed, "order", "post"))
    return {"pre": (pre, pre_sel), "post": (post, mix_share(post.lengths, post_order, study.pretrain.post_tokens, lam))}


def test_heldout_documents_never_reach_a_training_stream(smoke_data):
    study, data = smoke_data
    # by text hash, on what was tokenized: no held-out text is a training document
    for role, corpus in _views(study, data).items():
        train, held = set(corpus.train.hashes.tolist()), set(corpus.heldout.hashes.tolist())
        assert held and not train & held, role

    # and on the packed blocks: no whole held-out document appears in any training stream
    def doc_digests(stream):
        flat = read_blocks(stream).reshape(-1)
        docs = np.split(flat, np.flatnonzero(flat == EOS) + 1)
        return {d.tobytes() for d in docs[1:-1] if len(d) > 8}  # first and last piece may be cut

    heldout = set().union(*(doc_digests(s) for s in data.heldout.values()))
    assert heldout
    for stream in [*data.pretrain.values(), *data.posttrain.values(), data.finetune]:
        assert not heldout & doc_digests(stream), stream.stats["name"]


def test_stream_stats_are_on_disk(smoke_data):
    _, data = smoke_data
    stream = data.posttrain[0.0, 0.0]
    stats = json.loads((stream.path.parent / "stats.json").read_text())  # the plan's folder
    assert stats == stream.stats and 0 <= stats["waste_fraction"] < 0.05 and stats["tokenizer_id"] == data.tokenizer_id


def _random_stream(tmp_path, n_docs=120, seed=3):
    rng = np.random.default_rng(5)
    docs = [rng.integers(1, 500, rng.integers(1, 60)) for _ in range(n_docs)]
    view = token_view(tmp_path / "v", docs, "src", max_bytes=1000)
    sel = take_budget(view.lengths, seeded_order(n_docs, 1), int(view.lengths.sum()))
    return build_plan("r", {"src": (view, sel)}, seed, 15, EOS, tmp_path / "streams")


def test_each_rank_reads_its_slice_of_every_global_batch_at_any_worker_count(tmp_path):
    stream = _random_stream(tmp_path)
    reader = StreamReader(stream.path)
    whole = read_blocks(stream)
    one = StreamRows(reader, 8, 1, 0)
    two = [StreamRows(reader, 8, 2, r) for r in (0, 1)]
    for step in range(3 * one.steps_per_pass + 2):  # first pass and three reshuffled ones
        assert (np.concatenate([t.batch(step) for t in two]) == one.batch(step)).all()
    first = np.concatenate([one.batch(s) for s in range(one.steps_per_pass)])
    assert (first == whole[one.order(0)]).all()  # pass 0 is its seeded order of the stream's rows (the spec)
    assert sorted(one.order(0).tolist()) == rank_rows(len(whole), 8, 1, 0).tolist()  # the same rows as the plan's, tail left out


def test_every_pass_the_first_included_is_a_fresh_seeded_order_of_the_same_rows(tmp_path):
    stream = _random_stream(tmp_path)
    rows = StreamRows(StreamReader(stream.path), 4, 1, 0)
    n = rows.steps_per_pass
    passes = [np.concatenate([rows.rows(p * n + k) for k in range(n)]) for p in range(3)]
    assert not (passes[0] == np.arange(n * 4)).all()  # not the stream's own order: batches mix the stream
    for p in (0, 1, 2):
        assert sorted(passes[p].tolist()) == list(range(n * 4))  # every row once per pass
    assert not (passes[1] == passes[0]).all() and not (passes[1] == passes[2]).all()
    again = StreamRows(StreamReader(stream.path), 4, 1, 0)  # seeded: any process, any time, the same order
    assert (np.concatenate([again.rows(n + k) for k in range(n)]) == passes[1]).all()
    # a resumed run asks for its step directly: the batch equals the uninterrupted one's
    assert (again.batch(2 * n + 3) == rows.batch(2 * n + 3)).all()


def test_a_plan_refuses_a_shard_cut_short(tmp_path):
    stream = _random_stream(tmp_path)
    shard = next((tmp_path / "v").glob("*.tokens"))
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(FileNotFoundError, match="missing or not"):
        StreamReader(stream.path)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_cached_plan_is_planned_again_never_read(tmp_path, capsys, damage):
    stream = _random_stream(tmp_path)
    whole = read_blocks(stream)
    ends = stream.path.parent / "ends.npy"
    raw = bytearray(ends.read_bytes())
    if damage == "flip":
        raw[-3] ^= 0x10  # one bit of a cumulative end: the blocks would shift silently
    ends.write_bytes(bytes(raw) if damage == "flip" else bytes(raw[:-5]))
    again = _random_stream(tmp_path)
    assert "planning it again" in capsys.readouterr().out
    assert again.stats == stream.stats and (read_blocks(again) == whole).all()
    _random_stream(tmp_path)
    assert "planning it again" not in capsys.readouterr().out  # an intact plan is reused as it is


def test_a_worker_without_the_drivers_disk_fetches_a_published_plan_once(tmp_path, monkeypatch):
    """With an object-store node store, the data cache is published beside the nodes; a machine that
    cannot see the driver's files fetches the plan and the shards it reads into its own cache."""
    from raysweep.data.mirror import publish
    from raysweep.data.streams import StreamSource, source_of

    stream = _random_stream(tmp_path)
    mirror = (tmp_path / "bucket" / "data").as_uri()
    publish([stream], tmp_path, mirror)
    publish([stream], tmp_path, mirror)  # idempotent: files already there are skipped
    here = source_of(stream, tmp_path, mirror)
    elsewhere = StreamSource(str(tmp_path / "not-on-this-machine" / "plan.json"), here.mirror, here.rel)
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "worker-cache"))
    want = StreamRows(StreamReader(stream.path), 4, 1, 0)
    got = elsewhere.rows_for(4, 1, 0)
    assert str(got.reader.folder).startswith(str(tmp_path / "worker-cache"))
    assert all((got.batch(s) == want.batch(s)).all() for s in range(2 * want.steps_per_pass))
    # held-out sets reach such a worker the same way (a run's evaluations read them through the mirror too)
    from raysweep.train.context import LoopConfig, load_eval_sets

    evals = load_eval_sets(LoopConfig(PRESETS["debug"], 512, 15, 10_000, {"post": elsewhere}, "tok"))
    assert (evals["post"].numpy() == read_blocks(stream)).all()


def test_token_ids_take_the_smallest_dtype_that_holds_the_vocabulary():
    from raysweep.data.shards import token_dtype

    assert token_dtype(4096) == np.uint16 and token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32
    with pytest.raises(ValueError, match="does not fit in uint32"):
        token_dtype(2**32 + 1)


def test_a_disk_too_small_for_the_shards_fails_before_reading(tmp_path, monkeypatch):
    import shutil

    from raysweep.config import StudyConfigError, load_study
    from raysweep.data import prepare as prepare_mod

    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n')
    study = load_study(
        None,
        [f"output_dir={tmp_path / 'out'}", f"corpora.pre={{source: local, path: {tmp_path / 'c.jsonl'}}}", "pretrain.tokens=2000000000"],
    )
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 10**9, 10**9))  # 1 GB free
    with pytest.raises(StudyConfigError, match=r"output_dir: the token shards need ≈ 3\.7\d GiB .* 0\.93 GiB are free"):
        prepare_mod._check_disk(study, {}, 4096, tmp_path / "out" / "cache")


def test_published_data_is_checked_by_sha256_on_fetch_and_a_flipped_bit_is_never_trained_on(s3_server, tmp_path, monkeypatch):
    """On the S3 API: a bit flipped on the way is fetched again; a bit flipped in the mirror itself
    (twice the same wrong bytes) stops the fetch, and the local copy is never completed."""
    from raysweep.data.mirror import CorruptData, publish
    from raysweep.data.streams import StreamSource, source_of
    from raysweep.store import storage
    from tests.helpers import s3_uri

    stream = _random_stream(tmp_path)
    mirror = storage.join(s3_uri(s3_server[0], "published"), "data")
    publish([stream], tmp_path, mirror)
    here = source_of(stream, tmp_path, mirror)
    want = read_blocks(stream)
    shard = next(
        n for n in json.loads(storage.read_text(storage.join(mirror, *here.rel.split("/")[:-1], "manifest.json"))) if n.endswith(".tokens")
    )

    real = storage.download_file
    flips = []

    def once_wrong(uri, dest):  # the first download of the shard arrives with one bit flipped
        ok = real(uri, dest)
        if ok and uri.split("?")[0].endswith(shard) and not flips:
            raw = bytearray(dest.read_bytes())
            raw[7] ^= 0x04
            dest.write_bytes(bytes(raw))
            flips.append(uri)
        return ok

    monkeypatch.setattr(storage, "download_file", once_wrong)
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache-a"))
    elsewhere = StreamSource(str(tmp_path / "elsewhere" / "plan.json"), here.mirror, here.rel)
    assert (read_blocks(elsewhere.local_plan()) == want).all() and flips  # fetched again, right this time

    # now the mirror's own copy is damaged: every fetch gets the same wrong bytes
    monkeypatch.setattr(storage, "download_file", real)
    local = tmp_path / "flipped.tokens"
    real(storage.join(mirror, *shard.split("/")), local)
    raw = bytearray(local.read_bytes())
    raw[11] ^= 0x80
    fs_uri = storage.join(mirror, *shard.split("/")[:-1])
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / shard.split("/")[-1]).write_bytes(bytes(raw))
    storage.upload_files(tmp_path / "up", fs_uri, [shard.split("/")[-1]])
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache-b"))
    with pytest.raises(CorruptData, match=r"differ from the manifest's .* after fetching it twice; delete it"):
        elsewhere.local_plan()
    assert not list((tmp_path / "cache-b").rglob("stats.json"))  # nothing a worker would take as complete


def test_a_first_pass_batch_mixes_documents_from_across_the_stream(tmp_path):
    """Documents of 40-80 tokens packed into blocks of 15: taken in the stream's own order a batch
    of 16 blocks held about 4 documents; in the seeded order it holds about as many as it has blocks."""
    n_docs = 200
    rng = np.random.default_rng(1)
    docs = [np.full(int(rng.integers(40, 80)), i + 1) for i in range(n_docs)]  # a document is its id, repeated
    view = token_view(tmp_path / "d", docs, "src")
    sel = take_budget(view.lengths, seeded_order(n_docs, 1), int(view.lengths.sum()))
    stream = build_plan("docs", {"src": (view, sel)}, 7, 15, EOS, tmp_path / "streams")
    whole = read_blocks(stream)
    rows = StreamRows(StreamReader(stream.path), 16, 1, 0)
    docs_in = lambda blocks: len(set(blocks.ravel().tolist()) - {EOS})
    shuffled = np.mean([docs_in(rows.batch(s)) for s in range(rows.steps_per_pass)])
    consecutive = np.mean([docs_in(whole[s * 16 : (s + 1) * 16]) for s in range(rows.steps_per_pass)])
    assert consecutive < 6 and shuffled > 12, (consecutive, shuffled)


def test_a_held_out_set_is_a_seeded_sample_from_across_it_or_all_of_it(tmp_path):
    from raysweep.data.streams import sample_blocks

    stream = _random_stream(tmp_path)
    whole = read_blocks(stream)
    assert (sample_blocks(stream, 10**9) == whole).all()  # enough tokens: every block
    tokens = whole.shape[1] * (len(whole) // 4)
    part = sample_blocks(stream, tokens)
    assert len(part) == len(whole) // 4 and (part == sample_blocks(stream, tokens)).all()  # the same sample each time
    rows = [next(i for i, b in enumerate(whole) if (b == p).all()) for p in part]
    assert rows == sorted(rows) and rows[-1] > len(whole) // 2  # from across the set, not its first blocks
