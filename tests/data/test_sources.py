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
from raysweep.data.corpora.sources import CorpusError, ingest
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


def test_c4_layout_uses_its_validation_split(tmp_path):
    cfg = _hub(hub_layouts.c4(tmp_path), subset="en", heldout_split="validation", heldout_docs=30)
    files = ingest(cfg, "corpora.pre", 0, tmp_path / "cache")
    assert files.stats["heldout"] == "given" and files.stats["train_docs"] == 400 and files.stats["heldout_docs"] == 30
    assert all(t.startswith("webval ") for t in _column(files.heldout)) and all(t.startswith("web ") for t in _column(files.train))
    assert files.stats["exhausted"]


def test_reading_stops_once_the_budget_is_read(tmp_path):
    cfg = _hub(hub_layouts.c4(tmp_path), subset="en", heldout_split="validation", heldout_docs=10)
    files = ingest(cfg, "corpora.pre", 0, tmp_path / "cache", need_chars=5000)
    chars = sum(map(len, _column(files.train)))
    assert 5000 <= chars < 5000 + 400 and not files.stats["exhausted"]  # stops within one document of the need


def test_musicpile_layout_gets_a_carved_heldout_split_that_never_leaks(tmp_path):
    repo = hub_layouts.musicpile(tmp_path)  # one split, with exact duplicate texts
    cfg = _hub(repo, heldout_fraction=0.1, heldout_docs=25)
    files = ingest(cfg, "corpora.post", 0, tmp_path / "a")
    assert files.stats["heldout"] == "carved" and files.stats["heldout_docs"] == 25
    train, held = set(_column(files.train, "hash")), set(_column(files.heldout, "hash"))
    assert not train & held  # by text hash: duplicates of held-out texts are kept out too
    source_ids = set(pq.read_table(repo / "data").column("id").to_pylist())
    assert set(_column(files.train, "id")) <= source_ids  # the dataset's own ids are kept
    # carving depends on the text alone: the same held-out set whatever the read size
    again = ingest(cfg, "corpora.post", 0, tmp_path / "b", need_chars=10**9)
    assert _column(again.heldout) == _column(files.heldout)


def test_chempile_layout_with_train_validation_test(tmp_path):
    cfg = _hub(hub_layouts.chempile(tmp_path), heldout_split="validation", heldout_docs=50)
    files = ingest(cfg, "corpora.ft", 0, tmp_path / "cache")
    assert files.stats["train_docs"] == 400 and all(t.startswith("chem-validation") for t in _column(files.heldout))


def test_flan_layout_is_rendered_by_a_named_template(tmp_path):
    repo = hub_layouts.flan(tmp_path)
    files = ingest(_hub(repo, template="flan", heldout_docs=20, heldout_fraction=0.05), "corpora.post", 0, tmp_path / "c")
    src = pq.read_table(repo / "data")
    expected = {f"{i}\n\n{t}" for i, t in zip(src.column("inputs").to_pylist(), src.column("targets").to_pylist())}
    got = set(_column(files.train)) | set(_column(files.heldout))
    assert got <= expected and len(got) == len(expected)
    with pytest.raises(CorpusError, match=r"corpora\.post\.text_field: records have no field 'text' \(fields: inputs, targets"):
        ingest(_hub(repo), "corpora.post", 0, tmp_path / "d")
    with pytest.raises(CorpusError, match=r"template: records have no field 'question'"):
        ingest(_hub(repo, template="question-answer"), "corpora.post", 0, tmp_path / "e")


def test_hub_errors_name_the_key_and_the_choices(tmp_path):
    repo = hub_layouts.c4(tmp_path, train_docs=20, val_docs=5)
    with pytest.raises(CorpusError, match=r"corpora\.pre\.heldout_split.*Available splits: \['train', 'validation'\]"):
        ingest(_hub(repo, subset="en", heldout_split="test"), "corpora.pre", 0, tmp_path / "c")
    with pytest.raises(CorpusError, match=r"corpora\.pre\.dataset.*'xx' not found"):
        ingest(_hub(repo, subset="xx"), "corpora.pre", 0, tmp_path / "c")


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
def test_local_formats_all_read_the_same_documents(tmp_path_factory, path):
    root = tmp_path_factory.getbasetemp() / "local-formats"
    records = [{"id": f"d{i}", "text": f"document number {i} about {'music' if i % 3 else 'chemistry'}"} for i in range(60)]
    if not root.exists():
        _write_all_formats(root, records)
    cfg = CorpusConfig(source="local", path=str(root / path), heldout_docs=6, heldout_fraction=0.2)
    files = ingest(cfg, "corpora.pre", 0, tmp_path_factory.mktemp("cache"))
    texts = _column(files.train) + _column(files.heldout)
    assert sorted(texts) == sorted(r["text"] for r in records) or len(texts) < 60  # carved extras beyond heldout_docs are skipped
    assert set(texts) <= {r["text"] for r in records} and files.stats["heldout_docs"] == 6
    assert files.stats["train_docs"] + 6 + files.stats["skipped"]["carved_beyond_heldout_docs"] == 60


def test_local_heldout_path_and_save_to_disk_split(tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": f"train {i}"}) + "\n" for i in range(20)))
    (tmp_path / "val.jsonl").write_text(
        "".join(json.dumps({"text": f"val {i}"}) + "\n" for i in range(5)) + json.dumps({"text": "train 3"}) + "\n"
    )
    cfg = CorpusConfig(source="local", path=str(tmp_path / "train.jsonl"), heldout_path=str(tmp_path / "val.jsonl"), heldout_docs=10)
    files = ingest(cfg, "corpora.ft", 0, tmp_path / "cache")
    assert "train 3" not in _column(files.train)  # a training copy of a held-out text is dropped
    assert files.stats["skipped"]["heldout_copies"] == 1 and files.stats["train_docs"] == 19


def test_empty_and_missing_corpora_are_clear_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": "  "}) + "\n")
    with pytest.raises(CorpusError, match=r"corpora\.pre\.path \(.*empty\.jsonl\): no training documents with text"):
        ingest(CorpusConfig(source="local", path=str(tmp_path / "empty.jsonl")), "corpora.pre", 0, tmp_path / "c")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CorpusError, match=r"holds no .*\.jsonl"):
        ingest(CorpusConfig(source="local", path=str(tmp_path / "nothing")), "corpora.pre", 0, tmp_path / "c")


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


def test_pretrained_tokenizer_from_a_local_folder(tmp_path):
    from raysweep.data.tokenizer import eos_token, load_pretrained, load_tokenizer

    folder = hub_layouts.pretrained_tokenizer(tmp_path, [f"some text {i}" for i in range(200)])
    path = load_pretrained(str(folder), None, tmp_path / "cache")
    assert eos_token(path) == "<|endoftext|>" and load_tokenizer(path).token_to_id("<|endoftext|>") == 0
    assert load_pretrained(str(folder), None, tmp_path / "cache") == path  # stored by content: loaded twice, one copy
    with pytest.raises(ValueError, match=r"tokenizer\.pretrained: cannot load"):
        load_pretrained(str(tmp_path / "no-such-tokenizer"), None, tmp_path / "cache")


def test_a_checkpoint_from_another_tokenizer_is_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    from raysweep.data.tokenizer import TokenizerMismatchError
    from raysweep.nodes import NODE_FILE, load_weights

    node = tmp_path / "node"
    node.mkdir()
    save_file({"w": torch.zeros(2)}, str(node / "model.safetensors"))
    (node / NODE_FILE).write_text(json.dumps({"spec": {}, "result": {}, "tokenizer_id": "aaaa"}))
    assert set(load_weights(str(node), "aaaa")) == {"w"}
    with pytest.raises(TokenizerMismatchError, match="made with tokenizer 'aaaa'.*this study's tokenizer is 'bbbb'"):
        load_weights(str(node), "bbbb")


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


def test_hub_study_prepares_exact_compute_matched_and_replay_streams(ray_local, tmp_path, monkeypatch):
    import raysweep.data.prepare as prepare_mod

    monkeypatch.setattr(prepare_mod, "CHARS_PER_TOKEN_GUESS", 0.5)  # first reads come up short: the top-up must fix it
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
    assert data.corpora["pre"]["need_chars"] > 9000 * 0.5  # it was topped up past the first guess
    assert all(s.stats["tokenizer_id"] == data.tokenizer_id for s in [*data.pretrain.values(), data.finetune])

    # a budget beyond the corpus: a clear error with the tokens available, before any training
    with pytest.raises(
        StudyConfigError, match=r"finetune\.tokens: 10,000,000 tokens asked, but corpus '.*chempile-education' holds [\d,]+ training tokens"
    ):
        prepare_mod.prepare(_hub_study(tmp_path, "finetune.tokens=10000000"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 60), min_size=1, max_size=120), st.floats(0.05, 0.6), st.integers(1, 20))
def test_carving_never_lets_a_heldout_text_into_training(tmp_path_factory, picks, fraction, heldout_docs):
    """Any corpus (with exact duplicates): every document ends up in exactly one place, and no
    held-out text (by hash) is a training document."""
    root = tmp_path_factory.mktemp("carve")
    texts = [f"text number {k}" for k in picks]  # repeats of k are exact duplicates
    (root / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    try:
        files = ingest(
            CorpusConfig(source="local", path=str(root / "c.jsonl"), heldout_docs=heldout_docs, heldout_fraction=fraction),
            "corpora.post",
            0,
            root / "cache",
        )
    except CorpusError as e:  # every text carved, or none: a clear error, never a half corpus
        assert "no training documents" in str(e) or "no held-out documents" in str(e)
        return
    train, held = _column(files.train, "hash"), _column(files.heldout, "hash")
    assert not set(train) & set(held)
    assert len(set(held)) == len(held) <= heldout_docs
    skipped = files.stats["skipped"]
    assert len(train) + len(held) + skipped["heldout_copies"] + skipped["carved_beyond_heldout_docs"] + skipped["empty"] == len(texts)
