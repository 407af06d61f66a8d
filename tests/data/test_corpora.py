from raysweep.data.corpora.synthetic import NOTATION_SYMBOLS, generate


def test_generation_is_seeded_and_deterministic():
    a = list(generate("notation", 3, "train", 20))
    assert a == list(generate("notation", 3, "train", 20))
    assert a != list(generate("notation", 4, "train", 20))


def test_only_the_post_domain_uses_its_notation():
    for corpus in ("general", "chem"):
        text = " ".join(d["text"] for d in generate(corpus, 0, "train", 500))
        assert not any(s in text for s in NOTATION_SYMBOLS), corpus
    post = " ".join(d["text"] for d in generate("notation", 0, "train", 50))
    assert all(s in post for s in ("♪", "‖"))


def test_shared_words_change_sense_between_domains():
    general = " ".join(d["text"] for d in generate("general", 0, "train", 2000))
    music = " ".join(d["text"] for d in generate("notation", 0, "train", 500))
    assert "key opens the door" in general and "key of" in music


def test_synthetic_corpus_is_ingested_once_with_disjoint_splits(tmp_path):
    import pyarrow.parquet as pq

    from raysweep.config import CorpusConfig
    from raysweep.data.corpora.sources import ingest

    cfg = CorpusConfig(name="chem", train_docs=50, heldout_docs=10)
    files = ingest(cfg, "corpora.ft", 0, tmp_path)
    mtime = files.train.stat().st_mtime_ns
    assert ingest(cfg, "corpora.ft", 0, tmp_path).train == files.train and files.train.stat().st_mtime_ns == mtime  # cached
    ids = {
        s: set(pq.read_table(p, columns=["id"]).column("id").to_pylist()) for s, p in (("train", files.train), ("heldout", files.heldout))
    }
    assert len(ids["train"]) == 50 and len(ids["heldout"]) == 10 and not ids["train"] & ids["heldout"]


def test_the_config_knows_exactly_the_generators_and_templates_there_are():
    """config.py names the built-in corpora (it may not import the data layer); they must be the generators."""
    from raysweep.config import SYNTHETIC_CORPORA, TEMPLATES
    from raysweep.data.corpora.sources import render
    from raysweep.data.corpora.synthetic import GENERATORS

    assert set(SYNTHETIC_CORPORA) == set(GENERATORS)
    assert render({"inputs": "q", "targets": "a"}, "k", "text", "flan") == TEMPLATES["flan"].format(inputs="q", targets="a")
