"""The built-in example that ``make demo`` runs on: a phantom study written as DICOM and processed the way a
user's study is, by ``recon run`` (segmented by the shipped model, meshed, planned, reported), with the
segmentation checked against the phantom's truth."""

from __future__ import annotations

import json
from pathlib import Path

from recon.evaluation.cohort import evaluate_cohort
from recon.io.atomic import atomic_path
from recon.io.loading import describe_ct
from recon.phantom.synth import synthesize
from recon.run import run_study

EXAMPLE_SEED = 7


def run_demo(out: str | Path, *, size: str = "clinical") -> dict:
    """Synthesize the example phantom as DICOM under ``out``, describe it (``info.json``), run the pipeline
    on it (``run/``: labels, meshes, plan, report.html, provenance) and evaluate the segmentation against the
    phantom's truth (``evaluation/``). Returns what the loader saw."""
    out = Path(out)
    case = synthesize(out, count=1, seed=EXAMPLE_SEED, size=size, fmt="dicom")[0]
    description = describe_ct(case / "ct")
    with atomic_path(out / "info.json") as temporary:
        temporary.write_text(json.dumps(description, indent=2))
    run_study(case / "ct", out / "run")
    evaluate_cohort(out / "run" / "labels.nii.gz", case / "labels.nii.gz", out=out / "evaluation")
    return description
