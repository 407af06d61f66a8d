"""raysweep.data.tokenizer: a pretrained tokenizer read from a local folder laid out as the hub
serves it (stored by content, once), and a clear error where there is none."""

from __future__ import annotations

import pytest

from tests.data import hub_layouts


def test_pretrained_tokenizer_from_a_local_folder(tmp_path):
    from raysweep.data.tokenizer import eos_token, load_pretrained, load_tokenizer

    folder = hub_layouts.pretrained_tokenizer(tmp_path, [f"some text {i}" for i in range(200)])
    path = load_pretrained(str(folder), None, tmp_path / "cache")
    assert eos_token(path) == "<|endoftext|>" and load_tokenizer(path).token_to_id("<|endoftext|>") == 0
    assert load_pretrained(str(folder), None, tmp_path / "cache") == path  # stored by content: loaded twice, one copy
    with pytest.raises(ValueError, match=r"tokenizer\.pretrained: cannot load"):
        load_pretrained(str(tmp_path / "no-such-tokenizer"), None, tmp_path / "cache")
