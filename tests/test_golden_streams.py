"""Golden stream contents: the blocks of every stream of the smoke and default studies, pinned by
SHA-256 before the data layer was rebuilt on token shards and stream plans (issue 17).

A stream's first pass must stay byte for byte what it was (raysweep.data.blocks.reference_blocks is
its specification), however it is stored and read. Written with the old data layer; rewrite with
`RAYSWEEP_WRITE_GOLDEN=1 python -m pytest tests/test_golden_streams.py` only when a change is
meant to alter what the studies train on (a note and the README must then say why).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "streams.json"
STUDIES = {"smoke": ROOT / "search_spaces" / "smoke.yaml", "default": ROOT / "search_spaces" / "default.yaml"}
WRITE = os.environ.get("RAYSWEEP_WRITE_GOLDEN") == "1"


def _find(name: str, *modules: str):
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"{name} is in none of {modules}")


def _digest(blocks: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(blocks, dtype="<i4").tobytes()).hexdigest()


@pytest.mark.parametrize("study_name", sorted(STUDIES))
def test_every_stream_holds_the_pinned_blocks(ray_local, tmp_path, study_name):
    from raysweep.config import load_study
    from raysweep.data.prepare import prepare

    read_blocks = _find("read_blocks", "raysweep.data.streams", "raysweep.data.blocks")
    data = prepare(load_study(STUDIES[study_name], [f"output_dir={tmp_path}"]))
    streams = [*data.pretrain.values(), *data.posttrain.values(), data.finetune, *data.heldout.values()]
    found = {}
    for stream in streams:
        blocks = read_blocks(stream)
        found[stream.stats["name"]] = {"blocks": int(len(blocks)), "block_len": int(blocks.shape[1]), "sha256": _digest(blocks)}
    if WRITE:
        doc = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        doc[study_name] = found
        GOLDEN.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return
    assert found == json.loads(GOLDEN.read_text())[study_name]
