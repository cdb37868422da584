"""Mutated DICOM (``tests/fuzz_dicom.py``) loads or is refused with a recon error, in a child process with a
memory cap; about a minute in CI with a fixed set of examples. ``RECON_FUZZ_EXAMPLES=20000 pytest
tests/test_fuzz_dicom.py`` fuzzes longer, on new examples each time."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import shared_path

EXAMPLES = int(os.environ.get("RECON_FUZZ_EXAMPLES", "2500"))
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


def test_recon_run_on_mutated_dicom_finishes_or_raises_a_recon_error(tmp_path):
    """Every stage after loading meets what a mutated study can become (tiny, flat, odd spacing)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from recon.errors import ReconError
    from recon.run import run_study
    from tests.fuzz_dicom import MUTATIONS, _own_series

    series = _own_series()

    @settings(max_examples=6, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(MUTATIONS, st.integers(0, 5)), max_size=2))
    def run(mutations):
        files = series
        for mutate, target in mutations:
            files = mutate(files, target)
        study, out = tmp_path / "study", tmp_path / "out"
        for folder in (study, out):
            shutil.rmtree(folder, ignore_errors=True)
        study.mkdir()
        for n, data in enumerate(files):
            (study / f"{n:04d}.dcm").write_bytes(data)
        try:
            run_study(study, out)
        except ReconError:
            return
        assert (out / "provenance.json").is_file()

    run()
