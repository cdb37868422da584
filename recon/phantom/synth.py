"""``recon synth``: phantom cases on disk (CT as DICOM or NIfTI, labels, labels.json, truth.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from recon.io.dicom_write import write_ct_series
from recon.io.images import write_image
from recon.io.labels import write_label_map
from recon.phantom.generate import make_phantom

FORMATS = ("dicom", "nifti")


def synthesize(out: str | Path, *, count: int = 1, seed: int = 0, size: str = "small",
               fmt: str = "dicom") -> list[Path]:
    """Write ``count`` phantoms (seeds ``seed`` .. ``seed + count - 1``) as ``out/phantom_<seed>/``.

    Each case is written into a temporary folder and renamed when complete.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for case_seed in range(seed, seed + count):
        case = out / f"phantom_{case_seed:05d}"
        staging = out / f".tmp-{case.name}"
        shutil.rmtree(staging, ignore_errors=True)
        phantom = make_phantom(case_seed, size=size)
        if fmt == "dicom":
            write_ct_series(phantom.ct, staging / "ct", description="recon phantom")
        else:
            write_image(phantom.ct.hu, phantom.ct.grid, staging / "ct.nii.gz")
        write_label_map(phantom.labels, staging / "labels.nii.gz")
        (staging / "truth.json").write_text(json.dumps(phantom.truth, indent=1))
        shutil.rmtree(case, ignore_errors=True)
        staging.rename(case)
        cases.append(case)
    return cases
