"""The built-in offline corpora: three seeded text generators standing in for C4, MusicPile and ChemPile.

They are built so that the study's three losses mean what they mean in the paper:

* `general` (D_pre, "C4"): topic-coherent English-like prose from a small grammar over ~300
  common words. Shared words such as *key, scale, bar, note, rest, sharp, flat, measure* appear
  here in their everyday senses ("the key opens the door").
* `notation` (D_post, "MusicPile"): prose about pieces of music, where the same shared words take
  their musical senses, plus a notation of its own symbols (`♪ | A4 C♯5 E5 | ... ‖`) whose bars
  follow rules a model can learn: every note of a bar belongs to the scale of the declared key,
  and bars follow a I–IV–V–I chord progression. Forgetting these rules raises L_ret.
* `chem` (D_ft, "ChemPile"): prose about reactions and compounds with formulas (`2 H2 + O2 -> 2 H2O`)
  built from the general vocabulary; it never uses the notation's symbols, so fine-tuning on it
  pulls the model away from D_post without teaching anything about it.

Documents are generated from `random.Random(seed, corpus, split, index)`-style streams, so a
document's text depends only on (corpus, seed, split, index): the held-out split uses its own
stream and can never coincide with a training document by construction of its ids.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from raysweep.store.keys import path_digest

GENERATOR_VERSION = 1  # bump when a generator changes, so caches are rebuilt

_WORDS = {
    "det": "the a this that every one some".split(),
    "adj": (
        "small large old new quiet bright dark warm cold early late simple careful quick slow "
        "green red blue heavy light strong soft clear busy open narrow wide"
    ).split(),
    "noun_people": "child teacher farmer driver doctor writer neighbour student baker friend".split(),
    "noun_things": (
        "door house road river garden window table book market letter city village field tree "
        "train bridge school kitchen lamp box coat wall hill boat shop"
    ).split(),
    "verb": (
        "opens finds carries watches builds paints cleans visits follows moves reads writes "
        "fixes sells buys crosses holds leaves brings closes"
    ).split(),
    "prep": "near behind under beside across inside along past".split(),
    "time": "in the morning|at noon|in the evening|on monday|after lunch|before dawn|every week".split("|"),
    "adv": "slowly quietly often again carefully rarely always".split(),
}
# Words shared by all three corpora, whose sense (and so whose neighbours) differs by domain.
_EVERYDAY_SHARED = [
    "the {adj} key opens the door",
    "the {noun} is on a large scale",
    "they meet at the bar {time}",
    "she writes a note to the {noun}",
    "we rest {time}",
    "a sharp knife cuts the bread",
    "the road is flat near the {noun}",
    "they measure the {noun} with care",
]
_TOPICS = ["people", "things"]


def _cap(sentence: str) -> str:
    # str.capitalize() would lower-case the rest (and so the formulas and note names).
    return sentence[:1].upper() + sentence[1:]


def _pick(rng: random.Random, words: list[str]) -> str:
    # Zipf-like: earlier words are more frequent, so there is structure to learn beyond uniform.
    i = min(int(rng.paretovariate(1.2)) - 1, len(words) - 1)
    return words[i]


def _general_sentence(rng: random.Random, topic: str) -> str:
    w = _WORDS
    if rng.random() < 0.12:
        tmpl = rng.choice(_EVERYDAY_SHARED)
        return tmpl.format(adj=_pick(rng, w["adj"]), noun=_pick(rng, w["noun_things"]), time=rng.choice(w["time"]))
    subj_pool = w["noun_people"] if topic == "people" else w["noun_things"]
    obj_pool = w["noun_things"] if topic == "people" else w["noun_people"] + w["noun_things"]
    parts = [
        _pick(rng, w["det"]),
        _pick(rng, w["adj"]),
        _pick(rng, subj_pool),
        _pick(rng, w["verb"]),
        _pick(rng, w["det"]),
        _pick(rng, obj_pool),
    ]
    r = rng.random()
    if r < 0.4:
        parts += [_pick(rng, w["prep"]), "the", _pick(rng, w["noun_things"])]
    elif r < 0.7:
        parts += [rng.choice(w["time"])]
    if rng.random() < 0.3:
        parts.insert(3, _pick(rng, w["adv"]))
    return " ".join(parts)


def general_document(rng: random.Random) -> str:
    topic = rng.choice(_TOPICS)
    return ". ".join(_cap(_general_sentence(rng, topic)) for _ in range(rng.randint(3, 7))) + "."


# ---- notation ("MusicPile") -------------------------------------------------------------
_NOTES = ["C", "C♯", "D", "D♯", "E", "F", "F♯", "G", "G♯", "A", "A♯", "B"]
_MAJOR = [0, 2, 4, 5, 7, 9, 11]
_MINOR = [0, 2, 3, 5, 7, 8, 10]
_PROGRESSION = [0, 3, 4, 0]  # I IV V I, as scale degrees
_MUSIC_PROSE = [
    "the piece is in the key of {key} {mode}",
    "each bar holds {n} beats and the rest is short",
    "the melody climbs the scale and then falls",
    "a sharp raises the note and a flat lowers it",
    "measure {m} repeats the opening phrase",
    "the bass holds the root of the chord",
    "play the score {adv} with a light touch",
]


def _chord(root: int, scale: list[int], degree: int, octave: int) -> str:
    notes = []
    for step in (0, 2, 4):  # a triad on the scale degree
        idx = degree + step
        pitch = root + scale[idx % 7] + 12 * (idx // 7)
        notes.append(f"{_NOTES[pitch % 12]}{octave + pitch // 12}")
    return " ".join(notes)


def notation_document(rng: random.Random) -> str:
    root = rng.randrange(12)
    minor = rng.random() < 0.4
    scale = _MINOR if minor else _MAJOR
    key, mode = _NOTES[root], "minor" if minor else "major"
    octave = rng.choice([3, 4, 4, 5])
    bars = " | ".join(_chord(root, scale, d, octave) for d in _PROGRESSION * rng.randint(1, 2))
    prose = [
        t.format(key=key, mode=mode, n=rng.choice([3, 4, 6]), m=rng.randint(2, 16), adv=_pick(rng, _WORDS["adv"]))
        for t in rng.sample(_MUSIC_PROSE, 3)
    ]
    return f"Key of {key} {mode}. {_cap(prose[0])}. ♪ | {bars} ‖ {_cap(prose[1])}. {_cap(prose[2])}."


# ---- chem ("ChemPile") ------------------------------------------------------------------
_REACTIONS = [
    "2 H2 + O2 -> 2 H2O",
    "CH4 + 2 O2 -> CO2 + 2 H2O",
    "NaOH + HCl -> NaCl + H2O",
    "N2 + 3 H2 -> 2 NH3",
    "CaCO3 -> CaO + CO2",
    "2 Na + Cl2 -> 2 NaCl",
    "C + O2 -> CO2",
    "Zn + 2 HCl -> ZnCl2 + H2",
    "2 KClO3 -> 2 KCl + 3 O2",
    "Fe + S -> FeS",
]
_COMPOUNDS = {"H2O": 18.02, "NaCl": 58.44, "CO2": 44.01, "NH3": 17.03, "CH4": 16.04, "CaO": 56.08, "HCl": 36.46, "KCl": 74.55}
_CHEM_PROSE = [
    "the student heats the {adj} sample in the kitchen of the school",
    "the reaction is slow at a small scale",
    "a sharp peak shows the product",
    "the teacher writes a note about the {adj} solution",
    "the mixture stays {adj} after an hour",
    "we measure the mass of the product with care",
]


def chem_document(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(3, 6)):
        r = rng.random()
        if r < 0.35:
            sentences.append(f"the reaction {rng.choice(_REACTIONS)} gives the product")
        elif r < 0.6:
            name = rng.choice(list(_COMPOUNDS))
            sentences.append(f"the molar mass of {name} is {_COMPOUNDS[name]:.2f} g/mol")
        elif r < 0.85:
            sentences.append(rng.choice(_CHEM_PROSE).format(adj=_pick(rng, _WORDS["adj"])))
        else:
            sentences.append(_general_sentence(rng, "things"))
    return ". ".join(_cap(s) for s in sentences) + "."


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "general": general_document,
    "notation": notation_document,
    "chem": chem_document,
}
# Symbols only D_post may contain (tests check D_pre and D_ft never do).
NOTATION_SYMBOLS = ("♪", "♯", "‖", "|")


def _doc_rng(corpus: str, seed: int, split: str, index: int) -> random.Random:
    # A document's rng depends only on its identity, never on Python's hash() (salted per process).
    digest = path_digest(corpus, seed, split, index)
    return random.Random(int.from_bytes(digest[:8], "little"))


def generate(corpus: str, seed: int, split: str, n_docs: int, start: int = 0) -> Iterator[dict]:
    """Documents start..n_docs-1 of a split (each depends only on its index, so any range is the same
    documents as in the whole)."""
    gen = GENERATORS[corpus]
    for i in range(start, n_docs):
        yield {"id": f"{corpus}/{split}/{i}", "text": gen(_doc_rng(corpus, seed, split, i))}
