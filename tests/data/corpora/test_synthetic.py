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


def test_synthetic_corpus_is_tokenized_once_with_disjoint_splits(tmp_path):
    from raysweep.config import CorpusConfig
    from raysweep.data.corpus import tokenize_corpus
    from raysweep.data.tokenizer import tokenizer_id, train_tokenizer

    tok = train_tokenizer([("t", lambda: (d["text"] for d in generate("chem", 0, "train", 50)))], 300, tmp_path / "tok")
    cfg = CorpusConfig(name="chem", train_docs=4500, heldout_docs=10)  # three generator shards of 2000, 2000, 500
    corpus = tokenize_corpus(cfg, "corpora.ft", 0, tmp_path, tok, tokenizer_id(tok), 300, None, parallel=False)
    shard = corpus.train.folder / f"{corpus.train.files[0]}.tokens"
    mtime = shard.stat().st_mtime_ns
    again = tokenize_corpus(cfg, "corpora.ft", 0, tmp_path, tok, tokenizer_id(tok), 300, None, parallel=False)
    assert again.train.digest == corpus.train.digest and shard.stat().st_mtime_ns == mtime  # cached, not written again
    assert len(corpus.train.files) == 3 and len(corpus.train.lengths) == 4500 and len(corpus.heldout.lengths) == 10
    assert not set(corpus.train.hashes.tolist()) & set(corpus.heldout.hashes.tolist())
    whole = [d["text"] for d in generate("chem", 0, "train", 4500)]
    assert [d["text"] for d in generate("chem", 0, "train", 4500, start=2000)] == whole[
        2000:
    ]  # a shard is the same documents as in the whole


def test_the_config_knows_exactly_the_generators_and_templates_there_are():
    """config.py names the built-in corpora (it may not import the data layer); they must be the generators."""
    from raysweep.config import SYNTHETIC_CORPORA, TEMPLATES
    from raysweep.data.corpora.sources import render
    from raysweep.data.corpora.synthetic import GENERATORS

    assert set(SYNTHETIC_CORPORA) == set(GENERATORS)
    assert render({"inputs": "q", "targets": "a"}, "k", "text", "flan") == TEMPLATES["flan"].format(inputs="q", targets="a")


def test_a_small_builtin_corpus_is_tokenized_in_this_process_and_the_rest_in_ray_tasks(tmp_path):
    """Ray Data's start-up outweighs a small generated corpus; a hub or local corpus's size is not
    known before reading, so it always goes to Ray tasks when Ray is up."""
    from raysweep.config import CorpusConfig
    from raysweep.data.prepare import IN_PROCESS_DOCS, in_ray_tasks

    small = CorpusConfig(source="synthetic", name="chem", train_docs=1000, heldout_docs=100)
    big = CorpusConfig(source="synthetic", name="chem", train_docs=IN_PROCESS_DOCS, heldout_docs=100)
    (tmp_path / "docs.jsonl").write_text('{"text": "a"}\n')
    local = CorpusConfig(source="local", path=str(tmp_path / "docs.jsonl"))
    assert not in_ray_tasks(small, ray_up=True) and in_ray_tasks(big, ray_up=True)
    assert in_ray_tasks(local, ray_up=True)
    assert not any(in_ray_tasks(c, ray_up=False) for c in (small, big, local))
