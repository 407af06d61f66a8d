"""Keys and seeds (raysweep.store.keys): deterministic, path-dependent, namespaced; orders from seeds."""

import pytest

from raysweep.data.mixing import seeded_order
from raysweep.store.keys import (
    NAMESPACES,
    derive_seed,
    json_key,
    node_key,
    stream_key,
    stream_seed,
)


def test_seeds_are_deterministic_and_path_dependent():
    assert derive_seed(0, "pretrain", 0.5) == derive_seed(0, "pretrain", 0.5)
    assert len({derive_seed(0, "pretrain", x) for x in (0.0, 0.5, 1.0)}) == 3
    assert derive_seed(0, "order", "a") != derive_seed(1, "order", "a")
    assert (seeded_order(50, 7) == seeded_order(50, 7)).all()
    assert (seeded_order(50, 7) == seeded_order(50, 7)).all()


def test_an_unknown_namespace_is_refused_so_two_kinds_never_share_a_key():
    with pytest.raises(ValueError, match="unknown key namespace 'pretrian'"):
        node_key("pretrian", {"lr": 1e-3})
    with pytest.raises(ValueError, match="unknown key namespace"):
        derive_seed(0, "ordr", "pre")
    assert {"pretrain", "posttrain", "finetune", "order", "optuna"} <= set(NAMESPACES)


def test_the_recipes_are_the_ones_every_existing_key_was_made_with():
    """Spelled out once here, independently of raysweep.store.keys: the exact text each key hashes."""
    import hashlib
    import json

    def sha(text):
        return hashlib.sha256(text.encode()).hexdigest()

    parts = ({"b": 1, "a": [0.5, "x"]}, 3)
    assert node_key("finetune", *parts) == sha(json.dumps(("finetune", *parts), sort_keys=True, default=str))[:16]
    assert stream_key("pre", 7, None) == sha(json.dumps(["pre", "7", "None"]))[:16]
    assert json_key({"b": 1, "a": 2}) == sha('{"a": 2, "b": 1}')[:16]
    assert json_key({"b": 1, "a": 2}, sort_keys=False) == sha('{"b": 1, "a": 2}')[:16]
    assert derive_seed(3, "order", "pre") == int.from_bytes(hashlib.sha256(b"3/order/pre").digest()[:4], "little")
    assert stream_seed(3, "posttrain-replay0.1") == derive_seed(3, "posttrain", "replay0.1")
