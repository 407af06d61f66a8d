"""The 135M rehearsal, shortened (bench/rehearsal_135m.py --quick): the real width (576) and
SmolLM2's 49,152-row vocabulary, 2 layers, through the CLI with the nodes on a local S3 API, a
stage-2 worker SIGKILLed with no retries, and the study run again. The bench's speed and memory
figures are printed, not asserted here (they are timings and this machine's); what is asserted
does not depend on timing."""

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.rehearsal
def test_the_shortened_135m_rehearsal_resumes_the_killed_run_and_trains_nothing_twice(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/rehearsal_135m.py", "--quick", "--json", str(tmp_path / "r.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    doc = json.loads((tmp_path / "r.json").read_text())
    runs = doc["runs"]
    assert runs == 5 and doc["first"]["rc"] == 1 and doc["first"]["stored"] < runs  # the killed subtree failed
    assert sum(doc["second"]["trained"].values()) == runs - doc["first"]["stored"]  # exactly the missing
    assert doc["second"]["stored"] == runs and doc["twice"] == 0
    assert doc["resumed_from"] == [3, 3]  # the killed runs (full, LoRA) continued from their progress checkpoints
    assert doc["bytes_error"] <= 0.10  # the dry run's node and progress-checkpoint bytes
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"rehearsal: dry-run bytes error [\d.]+%, memory model worst error -?[\d.]+%, nodes trained twice 0, loop/bare [\d.]+", last
    ), last
