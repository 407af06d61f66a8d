"""Corpora from the hub (on local copies laid out like the hub), local files and the built-in generators:
held-out splits given or carved, budgets, templates, tokenizers, and the errors users get."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysweep.config import CorpusConfig, StudyConfigError, load_study
from raysweep.data.corpora.sources import CorpusError
from raysweep.data.prepare import corpus_line
from tests.data import hub_layouts


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # the hub code path must never reach the network in tests
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _column(path, name="text"):
    return pq.read_table(path, columns=[name]).column(name).to_pylist()


def _hub(repo, **kw) -> CorpusConfig:
    return CorpusConfig(source="hub", dataset=str(repo), **kw)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A small byte-level BPE (lossless: decoding gives the text back) and its id."""
    from raysweep.data.tokenizer import tokenizer_id, train_tokenizer

    root = tmp_path_factory.mktemp("tok")
    path = train_tokenizer([("test", lambda: (f"the web chem music text {i} 2 H2 + O2 -> 2 H2O" for i in range(200)))], 300, root)
    return path, tokenizer_id(path)


def _read(cfg, key, root, tokenizer, need=None, parallel=False, wave=1):
    from raysweep.data.corpus import tokenize_corpus

    path, tok_id = tokenizer
    return tokenize_corpus(cfg, key, 0, root, path, tok_id, 300, need, wave=wave, parallel=parallel)


def _texts(view, tokenizer) -> list[str]:
    from raysweep.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer[0])
    return [tok.decode(view.tokens(i).tolist()) for i in range(len(view.lengths))]


def test_c4_layout_uses_its_validation_split(tmp_path, tokenizer):
    cfg = _hub(hub_layouts.c4(tmp_path), subset="en", heldout_split="validation", heldout_docs=30)
    corpus = _read(cfg, "corpora.pre", tmp_path / "cache", tokenizer)
    st = corpus.stats
    assert st["heldout"] == "given" and st["train_docs"] == 400 and st["heldout_docs"] == 30 and st["exhausted"]
    assert all(t.startswith("webval ") for t in _texts(corpus.heldout, tokenizer))
    assert all(t.startswith("web ") for t in _texts(corpus.train, tokenizer))


def test_reading_stops_once_the_budget_is_read_and_reads_only_the_shards_it_needs(tmp_path, tokenizer):
    cfg = _hub(hub_layouts.c4(tmp_path), subset="en", heldout_split="validation", heldout_docs=10)
    corpus = _read(cfg, "corpora.pre", tmp_path / "cache", tokenizer, need=2000)
    longest = int(corpus.train.lengths.max()) + 1
    assert 2000 <= corpus.train.n_tokens < 2000 + longest and not corpus.stats["exhausted"]  # stops within one document of the need
    assert corpus.stats["shards_read"] == 1 < corpus.stats["shards_available"] == 2
    assert f"{corpus.stats['documents_read']:,} documents read from 1 of 2 shards (the budgets need no more" in corpus_line(
        "pre", corpus.stats
    )
    more = _read(cfg, "corpora.pre", tmp_path / "cache", tokenizer, need=10**7)  # a bigger budget adds the other shard, reuses the first
    assert more.stats["shards_read"] == 2 and more.stats["exhausted"]
    assert f"all {more.stats['documents_read']:,} documents of its 2 shards read" in corpus_line("pre", more.stats)
    assert (more.train.lengths[: len(corpus.train.lengths)] == corpus.train.lengths).all()
    # read again: everything comes from the cache, the dataset is not even asked how many files it has
    from raysweep.data.corpora import sources

    def offline(*_):
        raise AssertionError("the hub was asked again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources, "_hub_shard_count", offline)
        assert _read(cfg, "corpora.pre", tmp_path / "cache", tokenizer, need=10**7).train.digest == more.train.digest


def test_musicpile_layout_gets_a_carved_heldout_split_that_never_leaks(tmp_path, tokenizer):
    repo = hub_layouts.musicpile(tmp_path)  # one split, with exact duplicate texts
    cfg = _hub(repo, heldout_fraction=0.1, heldout_docs=25)
    corpus = _read(cfg, "corpora.post", tmp_path / "a", tokenizer)
    assert corpus.stats["heldout"] == "carved" and corpus.stats["heldout_docs"] == 25
    assert not set(corpus.train.hashes.tolist()) & set(corpus.heldout.hashes.tolist())  # by text hash: duplicates kept out too
    assert not set(_texts(corpus.train, tokenizer)) & set(_texts(corpus.heldout, tokenizer))
    # carving depends on the text alone: the same held-out set whatever the read size
    small = _read(cfg, "corpora.post", tmp_path / "b", tokenizer, need=3000)
    assert _texts(small.heldout, tokenizer) == _texts(corpus.heldout, tokenizer)


def test_chempile_layout_with_train_validation_test(tmp_path, tokenizer):
    cfg = _hub(hub_layouts.chempile(tmp_path), heldout_split="validation", heldout_docs=50)
    corpus = _read(cfg, "corpora.ft", tmp_path / "cache", tokenizer)
    assert corpus.stats["train_docs"] == 400 and all(t.startswith("chem-validation") for t in _texts(corpus.heldout, tokenizer))


def test_flan_layout_is_rendered_by_a_named_template(tmp_path, tokenizer):
    repo = hub_layouts.flan(tmp_path)
    corpus = _read(_hub(repo, template="flan", heldout_docs=20, heldout_fraction=0.05), "corpora.post", tmp_path / "c", tokenizer)
    src = pq.read_table(repo / "data")
    expected = {f"{i}\n\n{t}" for i, t in zip(src.column("inputs").to_pylist(), src.column("targets").to_pylist())}
    got = set(_texts(corpus.train, tokenizer)) | set(_texts(corpus.heldout, tokenizer))
    assert got <= expected and len(got) == len(expected)
    with pytest.raises(CorpusError, match=r"corpora\.post\.text_field: records have no field 'text' \(fields: inputs, targets"):
        _read(_hub(repo), "corpora.post", tmp_path / "d", tokenizer)
    with pytest.raises(CorpusError, match=r"template: records have no field 'question'"):
        _read(_hub(repo, template="question-answer"), "corpora.post", tmp_path / "e", tokenizer)


def test_hub_errors_name_the_key_and_the_choices(tmp_path, tokenizer):
    repo = hub_layouts.c4(tmp_path, train_docs=20, val_docs=5)
    with pytest.raises(CorpusError, match=r"corpora\.pre\.heldout_split.*Available splits: \['train', 'validation'\]"):
        _read(_hub(repo, subset="en", heldout_split="test"), "corpora.pre", tmp_path / "c", tokenizer)
    with pytest.raises(CorpusError, match=r"corpora\.pre\.dataset.*'xx' not found"):
        _read(_hub(repo, subset="xx"), "corpora.pre", tmp_path / "c", tokenizer)
    empty = tmp_path / "empty-repo"
    (empty / "data").mkdir(parents=True)
    (empty / "README.md").write_text(
        hub_layouts._readme("- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n")
    )
    with pytest.raises(CorpusError, match=r"corpora\.ft\.dataset: cannot stream .*empty-repo"):
        _read(_hub(empty), "corpora.ft", tmp_path / "c", tokenizer)


def test_many_hub_shards_are_read_in_parallel_exactly_as_in_order(ray_local, tmp_path, tokenizer):
    """24 data files, read by Ray Data tasks side by side: the same documents, in the same order, as
    one process reading them one after another."""
    repo = hub_layouts.c4(tmp_path, train_docs=480, val_docs=30, shards=24)
    cfg = _hub(repo, subset="en", heldout_split="validation", heldout_docs=20)
    parallel = _read(cfg, "corpora.pre", tmp_path / "par", tokenizer, parallel=True, wave=8)
    serial = _read(cfg, "corpora.pre", tmp_path / "ser", tokenizer)
    assert parallel.stats["shards_read"] == parallel.stats["shards_available"] == 24
    assert parallel.train.digest == serial.train.digest  # the same shards, byte for byte, and the same rows
    assert _texts(parallel.train, tokenizer) == _texts(serial.train, tokenizer) and len(parallel.train.lengths) == 480
    assert (parallel.train.hashes == serial.train.hashes).all()


def test_a_corrupt_or_truncated_shard_is_found_and_read_again_never_used(tmp_path, tokenizer, capsys):
    cfg = _hub(hub_layouts.c4(tmp_path), subset="en", heldout_split="validation", heldout_docs=10)
    first = _read(cfg, "corpora.pre", tmp_path / "cache", tokenizer)
    folder = first.train.folder
    flipped = folder / f"{first.train.files[0]}.tokens"
    data = bytearray(flipped.read_bytes())
    data[7] ^= 0x01
    flipped.write_bytes(bytes(data))
    cut = folder / f"{first.train.files[1]}.tokens"
    cut.write_bytes(cut.read_bytes()[:-10])
    again = _read(cfg, "corpora.pre", tmp_path / "cache", tokenizer)
    out = capsys.readouterr().out
    assert "does not match the SHA-256" in out and "truncated" in out and "reading it again" in out
    assert again.train.digest == first.train.digest  # rebuilt to exactly what it was
    assert _texts(again.train, tokenizer) == _texts(first.train, tokenizer)


def test_an_unreadable_file_names_its_key_and_path(tmp_path, tokenizer):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.jsonl").write_text(json.dumps({"text": "fine"}) + "\n")
    (tmp_path / "docs" / "b.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match=r"corpora\.pre\.path: cannot read .*b\.jsonl\.gz"):
        _read(CorpusConfig(source="local", path=str(tmp_path / "docs")), "corpora.pre", tmp_path / "c", tokenizer)


# ----------------------------------------------------------------------------- local files


def _write_all_formats(root, records):
    (root / "jsonl").mkdir(parents=True)
    with (root / "jsonl" / "a.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with gzip.open(root / "docs.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    (root / "array.json").write_text(json.dumps(records))
    pq.write_table(pa.Table.from_pylist(records), root / "docs.parquet")
    (root / "txt" / "sub").mkdir(parents=True)
    for i, r in enumerate(records):
        (root / "txt" / ("sub" if i % 2 else "") / f"{i:03d}.txt").write_text(r["text"])
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list(records)
    ds.save_to_disk(str(root / "saved"))
    DatasetDict({"train": ds, "validation": Dataset.from_list(records[:5])}).save_to_disk(str(root / "saved_dict"))


@pytest.mark.parametrize("path", ["jsonl", "docs.jsonl.gz", "array.json", "docs.parquet", "txt", "saved", "saved_dict"])
def test_local_formats_all_read_the_same_documents(tmp_path_factory, path, tokenizer):
    root = tmp_path_factory.getbasetemp() / "local-formats"
    records = [{"id": f"d{i}", "text": f"document number {i} about {'music' if i % 3 else 'chemistry'}"} for i in range(60)]
    if not root.exists():
        _write_all_formats(root, records)
    cfg = CorpusConfig(source="local", path=str(root / path), heldout_docs=6, heldout_fraction=0.2)
    corpus = _read(cfg, "corpora.pre", tmp_path_factory.mktemp("cache"), tokenizer)
    texts = _texts(corpus.train, tokenizer) + _texts(corpus.heldout, tokenizer)
    assert set(texts) <= {r["text"] for r in records} and corpus.stats["heldout_docs"] == 6
    assert corpus.stats["train_docs"] + 6 + corpus.stats["skipped"]["carved_beyond_heldout_docs"] == 60


def test_local_heldout_path_and_save_to_disk_split(tmp_path, tokenizer):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": f"train {i}"}) + "\n" for i in range(20)))
    (tmp_path / "val.jsonl").write_text(
        "".join(json.dumps({"text": f"val {i}"}) + "\n" for i in range(5)) + json.dumps({"text": "train 3"}) + "\n"
    )
    cfg = CorpusConfig(source="local", path=str(tmp_path / "train.jsonl"), heldout_path=str(tmp_path / "val.jsonl"), heldout_docs=10)
    corpus = _read(cfg, "corpora.ft", tmp_path / "cache", tokenizer)
    assert "train 3" not in _texts(corpus.train, tokenizer)  # a training copy of a held-out text is dropped
    assert corpus.stats["skipped"]["heldout_copies"] == 1 and corpus.stats["train_docs"] == 19


def test_empty_and_missing_corpora_are_clear_errors(tmp_path, tokenizer):
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": "  "}) + "\n")
    with pytest.raises(CorpusError, match=r"corpora\.pre\.path \(.*empty\.jsonl\): no training documents with text"):
        _read(CorpusConfig(source="local", path=str(tmp_path / "empty.jsonl")), "corpora.pre", tmp_path / "c", tokenizer)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CorpusError, match=r"holds no .*\.jsonl"):
        _read(CorpusConfig(source="local", path=str(tmp_path / "nothing")), "corpora.pre", tmp_path / "c", tokenizer)


@pytest.mark.parametrize("name", ["w.jsonl", "w.jsonl.gz", "w.json", "w.txt"])
def test_a_file_saved_on_windows_with_a_bom_and_crlf_reads_as_any_other(tmp_path, tokenizer, name):
    """Notepad's UTF-8 writes a byte-order mark first and ends lines with CRLF: same documents."""
    texts = [f"windows document {i} with ümlauts" for i in range(30)]
    if name == "w.txt":
        (tmp_path / "w").mkdir()
        for i, t in enumerate(texts):
            (tmp_path / "w" / f"{i:02d}.txt").write_bytes(b"\xef\xbb\xbf" + t.encode())
        path = tmp_path / "w"
    else:
        body = (
            json.dumps([{"text": t} for t in texts]) if name == "w.json" else "\r\n".join(json.dumps({"text": t}) for t in texts) + "\r\n"
        )
        raw = b"\xef\xbb\xbf" + body.encode()
        (tmp_path / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
        path = tmp_path / name
    cfg = CorpusConfig(source="local", path=str(path), heldout_docs=3, heldout_fraction=0.1)
    from raysweep.data.corpora.sources import probe_local

    probe_local(cfg, "corpora.post")
    corpus = _read(cfg, "corpora.post", tmp_path / "cache", tokenizer)
    got = _texts(corpus.train, tokenizer) + _texts(corpus.heldout, tokenizer)
    assert set(got) <= set(texts) and not any("\ufeff" in t or "\r" in t for t in got)
    assert corpus.stats["train_docs"] + corpus.stats["heldout_docs"] + corpus.stats["skipped"]["carved_beyond_heldout_docs"] == 30


def test_the_probe_reads_past_empty_files_and_refuses_files_without_text(tmp_path):
    """A folder whose first files are empty is read on to its text; one with no text at all is
    refused before Ray starts, with the key, instead of after the tokenizer ran (issue 45)."""
    from raysweep.data.corpora.sources import probe_local

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.jsonl").write_text("")
    (tmp_path / "docs" / "b.jsonl").write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": " \n "}) + "\n")
    with pytest.raises(
        CorpusError,
        match=r"corpora\.post\.path: .*docs \(2 files\) holds no document with text \(2 records, all empty\); check corpora\.post\.text_field",
    ):
        probe_local(CorpusConfig(source="local", path=str(tmp_path / "docs")), "corpora.post")
    (tmp_path / "docs" / "c.jsonl").write_text(json.dumps({"text": "a tune"}) + "\n")
    probe_local(CorpusConfig(source="local", path=str(tmp_path / "docs")), "corpora.post")  # c.jsonl has text
    (tmp_path / "empty").mkdir()
    for f in "ab":
        (tmp_path / "empty" / f"{f}.jsonl").write_text("")
    with pytest.raises(CorpusError, match=r"empty \(2 files\) holds no records"):
        probe_local(CorpusConfig(source="local", path=str(tmp_path / "empty")), "corpora.post")


# ----------------------------------------------------------------------- config errors, early


def _study_error(tmp_path, *overrides) -> str:
    with pytest.raises(StudyConfigError) as err:
        load_study(None, list(overrides))
    return str(err.value)


def test_config_errors_for_sources_and_mixing_name_the_key(tmp_path):
    msg = _study_error(tmp_path, "corpora.pre.source=local", f"corpora.pre.path={tmp_path}/missing.jsonl")
    assert "corpora.pre" in msg and "missing.jsonl does not exist" in msg
    msg = _study_error(tmp_path, "corpora.post.dataset=m-a-p/MusicPile")
    assert "dataset: not used by source 'synthetic'" in msg
    msg = _study_error(tmp_path, "corpora.ft.source=hub")
    assert "source hub needs dataset" in msg
    assert "would exceed one pass over D_post" in _study_error(tmp_path, "pretrain.mix_fraction=[0, 1.5]")
    msg = _study_error(tmp_path, "pretrain.mode=compute_matched")  # λ = 1 leaves stage 2 nothing
    assert "compute_matched mode λ=1 leaves" in msg and "disjoint" in msg
    assert "replay fraction 1.0 outside" in _study_error(tmp_path, "posttrain.replay=[1.0]")
    assert "only for a trained BPE tokenizer" in _study_error(tmp_path, "tokenizer.pretrained=x", "tokenizer.vocab_size=300")
    assert "template 'nope' is neither" in _study_error(
        tmp_path, "corpora.post.source=hub", "corpora.post.dataset=x", "corpora.post.template=nope"
    )


# ------------------------------------------------- the hub pipeline, end to end through prepare


def _hub_study(tmp_path, *extra):
    root = tmp_path / "hub"
    c4, mp, chem = hub_layouts.c4(root, train_docs=600), hub_layouts.musicpile(root), hub_layouts.chempile(root)
    tok = hub_layouts.pretrained_tokenizer(root, _column_texts(c4, mp, chem))
    return load_study(
        None,
        [
            f"output_dir={tmp_path / 'out'}",
            "model.preset=debug",
            "model.seq_len=32",
            f"tokenizer={{pretrained: {tok}}}",
            f"corpora.pre={{source: hub, dataset: {c4}, subset: en, heldout_split: validation, heldout_docs: 40}}",
            f"corpora.post={{source: hub, dataset: {mp}, heldout_docs: 20, heldout_fraction: 0.05}}",
            f"corpora.ft={{source: hub, dataset: {chem}, heldout_split: validation, heldout_docs: 40}}",
            "pretrain.mode=compute_matched",
            "pretrain.mix_fraction=[0, 0.25, 0.5]",
            "pretrain.tokens=9000",
            "pretrain.post_tokens=6000",
            "posttrain.replay=[0, 0.1]",
            "finetune.tokens=3000",
            "pretrain.batch_size=4",
            "posttrain.batch_size=4",
            "finetune.batch_size=4",
            "pretrain.eval_tokens=256",
            "posttrain.eval_tokens=256",
            "finetune.eval_tokens=256",
            *extra,
        ],
    )


def _column_texts(*repos):
    texts = []
    for repo in repos:
        for p in sorted(repo.rglob("*.parquet")):
            texts += _column(p)
    return texts or ["x"]


def test_hub_study_prepares_exact_compute_matched_and_replay_streams(ray_local, tmp_path):
    import raysweep.data.prepare as prepare_mod

    study = _hub_study(tmp_path)
    data = prepare_mod.prepare(study)
    P = study.pretrain.post_tokens
    for lam, stream in data.pretrain.items():
        assert stream.stats["tokens"]["pre"] == 9000 and stream.stats["tokens"].get("post", 0) == round(lam * P)
    for (lam, r), stream in data.posttrain.items():
        stage2 = P - round(lam * P)  # the disjoint rest: one pass over D_post in total
        assert stream.stats["tokens"]["post"] == stage2
        replay = stream.stats["tokens"].get("replay", 0)
        assert abs(replay - r * (stage2 + replay)) <= 1
    assert data.corpora["pre"]["heldout"] == "given" and data.corpora["post"]["heldout"] == "carved"
    assert data.corpora["pre"]["train_tokens"] >= 9000 and data.corpora["pre"]["need_tokens"] == 9000
    assert all(s.stats["tokenizer_id"] == data.tokenizer_id for s in [*data.pretrain.values(), data.finetune])

    # a budget beyond the corpus: a clear error with the tokens available, before any training
    with pytest.raises(
        StudyConfigError, match=r"finetune\.tokens: 10,000,000 tokens asked, but corpus '.*chempile-education' holds [\d,]+ training tokens"
    ):
        prepare_mod.prepare(_hub_study(tmp_path, "finetune.tokens=10000000"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 60), min_size=1, max_size=120), st.floats(0.05, 0.6), st.integers(1, 20))
def test_carving_never_lets_a_heldout_text_into_training(tmp_path_factory, tokenizer, picks, fraction, heldout_docs):
    """Any corpus (with exact duplicates): every document ends up in exactly one place, and no
    held-out text (by hash) is a training document."""
    root = tmp_path_factory.mktemp("carve")
    texts = [f"text number {k}" for k in picks]  # repeats of k are exact duplicates
    (root / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    try:
        corpus = _read(
            CorpusConfig(source="local", path=str(root / "c.jsonl"), heldout_docs=heldout_docs, heldout_fraction=fraction),
            "corpora.post",
            root / "cache",
            tokenizer,
        )
    except CorpusError as e:  # every text carved, or none: a clear error, never a half corpus
        assert "no training documents" in str(e) or "no held-out documents" in str(e)
        return
    train, held = corpus.train.hashes.tolist(), corpus.heldout.hashes.tolist()
    assert not set(train) & set(held)
    assert len(set(held)) == len(held) <= heldout_docs
    skipped = corpus.stats["skipped"]
    assert len(train) + len(held) + skipped["heldout_copies"] + skipped["carved_beyond_heldout_docs"] + skipped["empty"] == len(texts)


@pytest.mark.parametrize(
    "name, content, over, match",
    [
        ("tunes.jsonl", bytes(range(256)) * 64, {}, r"corpora\.post\.path: cannot read .*tunes\.jsonl \(UnicodeDecodeError"),
        ("tunes.txt", "Grüße".encode("latin-1") * 100, {}, r"corpora\.post\.path: cannot read .*tunes\.txt \(UnicodeDecodeError"),
        ("tunes.jsonl", b'{"abc": "X:1"}\n', {}, r"corpora\.post\.text_field: records have no field 'text' \(fields: abc\)"),
        ("tunes.jsonl", b"not json\n", {}, r"corpora\.post\.path: cannot read .*JSONDecodeError"),
        ("tunes.parquet", b"PAR1 broken", {}, r"corpora\.post\.path: cannot read .*tunes\.parquet"),
        ("tunes.jsonl", b"", {}, r"corpora\.post\.path: .*tunes\.jsonl holds no records"),
        ("tunes.jsonl", "Grüße".encode("utf-16"), {}, r"corpora\.post\.path: cannot read .*tunes\.jsonl \(UnicodeDecodeError.*UTF-8"),
        ("tunes.jsonl", b'{"q": "a"}\n', {"template": "{question}"}, r"corpora\.post\.template: records have no field 'question'"),
    ],
)
def test_a_local_corpus_is_read_far_enough_to_refuse_it_before_ray_starts(tmp_path, name, content, over, match):
    """Binary, another encoding, no text field: said with the key from the first record, before any compute."""
    from raysweep.data.prepare import check_corpora

    (tmp_path / name).write_bytes(content)
    study = load_study(None, [f"output_dir={tmp_path / 'out'}", f"corpora.post={{source: local, path: {tmp_path / name}}}"])
    if over:
        study = study.model_copy(update={"corpora": study.corpora.model_copy(update={"post": study.corpora.post.model_copy(update=over)})})
    with pytest.raises(StudyConfigError, match=match):
        check_corpora(study)


def test_the_cli_refuses_an_unreadable_local_corpus_before_ray(tmp_path):
    """RAY_ADDRESS names no cluster: had the CLI started or joined Ray first, it would fail another way."""
    import os
    import subprocess
    import sys

    (tmp_path / "tunes.jsonl").write_bytes(bytes(range(256)) * 4096)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raysweep.main",
            "--set",
            f"output_dir={tmp_path / 'out'}",
            "--set",
            f"corpora.post={{source: local, path: {tmp_path / 'tunes.jsonl'}}}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": "127.0.0.1:9"},
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "corpora.post.path: cannot read" in proc.stderr and "[data]" not in proc.stdout
    assert "1 problem with what the study points at" in proc.stderr and "in the study config" not in proc.stderr  # the file is valid


def test_carving_by_position_holds_out_other_documents_and_may_train_on_a_held_out_text(tmp_path, tokenizer):
    """conventions.heldout_carving: position carves by a seeded draw per document, not by text, so
    the held-out set changes, each document is still in one place, and a held-out text's copy may be
    trained on (what hash carving never allows)."""
    from raysweep.data.corpus import position_carved, tokenize_corpus

    texts = [f"tune number {k % 40}" for k in range(200)]  # every text five times
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = CorpusConfig(source="local", path=str(tmp_path / "c.jsonl"), heldout_docs=30, heldout_fraction=0.1)
    path, tok_id = tokenizer

    def read(carving, where):
        return tokenize_corpus(cfg, "corpora.post", 0, tmp_path / where, path, tok_id, 300, None, wave=1, parallel=False, carving=carving)

    by_hash, by_position = read("hash", "a"), read("position", "b")
    assert by_position.stats["heldout"] == "carved by position" and by_hash.stats["heldout"] == "carved"
    held_h, held_p = by_hash.heldout.hashes.tolist(), by_position.heldout.hashes.tolist()
    assert set(held_h) != set(held_p)
    assert not set(by_hash.train.hashes.tolist()) & set(held_h)
    assert set(by_position.train.hashes.tolist()) & set(held_p)  # copies of held-out texts trained on
    assert len(by_position.train.lengths) + len(held_p) + by_position.stats["skipped"]["carved_beyond_heldout_docs"] == len(texts)
    assert (position_carved(50, 0.1, "k") == position_carved(200, 0.1, "k")[:50]).all()  # the same for every read size
    assert read("position", "c").heldout.hashes.tolist() == held_p  # and for every run
