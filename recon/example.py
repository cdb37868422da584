"""The built-in example: a small synthetic CT of a torso with a bony column, written as DICOM.

A stand-in for ``make demo`` until the anatomical phantom generator (``recon.phantom``) lands.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from recon.geometry import Grid
from recon.io.dicom_write import write_ct_series
from recon.io.atomic import atomic_path
from recon.io.loading import convert_ct, describe_ct
from recon.volume import Volume

AIR_HU, FAT_HU, MUSCLE_HU, CANCELLOUS_HU, CORTICAL_HU = -1000.0, -100.0, 40.0, 250.0, 1200.0


def example_ct(shape: tuple[int, int, int] = (160, 128, 48), spacing_mm=(1.5, 1.5, 2.5), seed: int = 0) -> Volume:
    """An elliptic torso (fat around muscle) with a cylindrical bone (cortex around cancellous core)."""
    grid = Grid(shape, spacing_mm, origin_lps_mm=(-(shape[0] - 1) * spacing_mm[0] / 2, -120.0, -60.0))
    i, j, _ = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij", sparse=True)
    x = (i - (shape[0] - 1) / 2) * spacing_mm[0]
    y = (j - (shape[1] - 1) / 2) * spacing_mm[1]
    body = (x / 110) ** 2 + (y / 85) ** 2
    bone_radius = np.hypot(x, y - 35)
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    hu[np.broadcast_to(body <= 1, shape)] = FAT_HU
    hu[np.broadcast_to(body <= 0.8, shape)] = MUSCLE_HU
    hu[np.broadcast_to(bone_radius <= 18, shape)] = CORTICAL_HU
    hu[np.broadcast_to(bone_radius <= 15, shape)] = CANCELLOUS_HU
    noise = np.random.default_rng(seed).normal(0, 15, shape).astype(np.float32)
    return Volume(grid, hu + noise)


def run_demo(out: str | Path) -> dict:
    """Write the example as DICOM under ``out``, load it back, describe it and convert it to NIfTI."""
    out = Path(out)
    dicom_folder = out / "example_dicom"
    staging = out / ".tmp-example_dicom"
    shutil.rmtree(staging, ignore_errors=True)
    write_ct_series(example_ct(), staging, description="recon built-in example")
    shutil.rmtree(dicom_folder, ignore_errors=True)
    staging.rename(dicom_folder)
    description = describe_ct(dicom_folder)
    convert_ct(dicom_folder, out / "example_ct.nii.gz")
    with atomic_path(out / "info.json") as temporary:
        temporary.write_text(json.dumps(description, indent=2))
    return description
