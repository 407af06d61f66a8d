import json

from raysweep.corpora.synthetic import NOTATION_SYMBOLS, generate, write_corpus


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


def test_written_corpus_is_cached_and_splits_are_disjoint(tmp_path):
    paths = write_corpus(tmp_path, "chem", 0, 50, 10)
    mtime = paths["train"].stat().st_mtime_ns
    assert write_corpus(tmp_path, "chem", 0, 50, 10) == paths and paths["train"].stat().st_mtime_ns == mtime
    ids = {s: {json.loads(l)["id"] for l in p.open()} for s, p in paths.items()}
    assert len(ids["train"]) == 50 and len(ids["heldout"]) == 10 and not ids["train"] & ids["heldout"]
