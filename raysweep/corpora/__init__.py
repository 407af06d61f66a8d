"""Document sources. Each corpus is a pair of jsonl files ({"id", "text"} per line): train and held-out."""

from raysweep.corpora.synthetic import GENERATORS as _SYNTHETIC

SYNTHETIC_CORPORA = frozenset(_SYNTHETIC)

__all__ = ["SYNTHETIC_CORPORA"]
