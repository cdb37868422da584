"""Mutated DICOM (``tests/fuzz_dicom.py``) loads or is refused with a recon error, in a child process with a
memory cap; about a minute in CI. ``RECON_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz_dicom.py`` fuzzes longer."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from tests.conftest import shared_path

EXAMPLES = int(os.environ.get("RECON_FUZZ_EXAMPLES", "400"))
MEMORY_CAP_BYTES = 4 * 1024**3


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))


def test_mutated_dicom_loads_or_is_refused_with_a_recon_error():
    shared_path("dicom-edge/pydicom-samples/CT_small.dcm")  # the shared seeds must be there (CI fails otherwise)
    arguments = ["--examples", str(EXAMPLES)] + (["--random"] if "RECON_FUZZ_EXAMPLES" in os.environ else [])
    result = subprocess.run([sys.executable, "-m", "tests.fuzz_dicom", *arguments], capture_output=True, text=True,
                            timeout=3600, preexec_fn=_cap_memory, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["executions"] == EXAMPLES and counts["seeds"] == 7
    assert counts["loaded"] > 0 and counts["refused"] > 0
