"""The per-run loop on CUDA (bench/gpu_check.py's checks): skipped where there is no GPU, as in CI.
On a GPU machine: `python -m pytest -m gpu -p no:xdist -o addopts= tests/train/test_gpu.py`."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_the_loop_on_cuda_passes_every_check():
    from bench.gpu_check import checks

    results = checks(torch.device("cuda"), "debug", 512, 64)
    assert len(results) == 6 and all(c["ok"] for c in results), [c for c in results if not c["ok"]]
