"""Writing CT as a classic CT Image Storage series (one file per slice).

Used for the built-in example, the benchmark and test fixtures. Stored values are unsigned 12-bit with
RescaleIntercept -1024, as most scanners write them; HU outside [-1024, 3071] are clipped.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from recon.io.atomic import atomic_path
from recon.volume import Volume

HU_OFFSET = 1024
STORED_MAX = 4095


def write_ct_series(volume: Volume, folder: str | Path, *, description: str = "recon synthetic CT") -> list[Path]:
    """Write one DICOM file per k-slice of ``volume`` into ``folder``; returns the paths in k order."""
    grid = volume.grid
    direction = grid.direction_matrix
    positions = [grid.index_to_lps((0, 0, k)) for k in range(grid.shape[2])]
    slices = [volume.hu[:, :, k] for k in range(grid.shape[2])]
    orientation = np.concatenate([direction[:, 0], direction[:, 1]])
    return write_ct_slices(slices, positions, orientation, grid.spacing_mm[:2], folder, description=description)


def write_ct_slices(
    slices_ij: Sequence[np.ndarray],
    positions_lps_mm: Sequence[np.ndarray],
    orientation: Sequence[float],
    pixel_spacing_ij_mm: Sequence[float],
    folder: str | Path,
    *,
    description: str = "recon synthetic CT",
) -> list[Path]:
    """Write 2-D HU slices, each (i, j) = (column, row), at the given positions as one CT series.

    ``orientation`` is ImageOrientationPatient (row direction, then column direction); slices may be placed
    anywhere, so tilted or unevenly spaced acquisitions can be written too.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    common = _series_dataset(slices_ij[0].shape, pixel_spacing_ij_mm, description)
    common.ImageOrientationPatient = [_ds(v) for v in orientation]
    gaps = np.linalg.norm(np.diff(np.asarray(positions_lps_mm, float), axis=0), axis=1)
    common.SliceThickness = _ds(float(np.median(gaps)) if len(gaps) else 1.0)
    paths = []
    for k, (hu, position) in enumerate(zip(slices_ij, positions_lps_mm, strict=True)):
        dataset = _slice_dataset(common, k)
        dataset.ImagePositionPatient = [_ds(v) for v in position]
        stored = np.clip(np.round(hu) + HU_OFFSET, 0, STORED_MAX).astype(np.uint16)
        dataset.PixelData = np.ascontiguousarray(stored.T).tobytes()
        path = folder / f"{k:05d}.dcm"
        with atomic_path(path) as temporary:
            dataset.save_as(temporary, enforce_file_format=True)
        paths.append(path)
    return paths


def _series_dataset(shape_ij: tuple[int, int], pixel_spacing_ij_mm: Sequence[float], description: str) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = CTImageStorage
    dataset.Modality = "CT"
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    dataset.Manufacturer = "recon"
    dataset.SeriesDescription = description
    dataset.PatientName = "Synthetic^Phantom"
    dataset.PatientID = "SYNTHETIC"
    dataset.PatientBirthDate = dataset.PatientSex = dataset.ReferringPhysicianName = ""
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.FrameOfReferenceUID = generate_uid()
    now = datetime.datetime.now()
    dataset.StudyDate = dataset.SeriesDate = now.strftime("%Y%m%d")
    dataset.StudyTime = dataset.SeriesTime = now.strftime("%H%M%S")
    dataset.StudyID = "1"
    dataset.AccessionNumber = ""
    dataset.SeriesNumber = 1
    dataset.Rows, dataset.Columns = shape_ij[1], shape_ij[0]
    dataset.PixelSpacing = [_ds(pixel_spacing_ij_mm[1]), _ds(pixel_spacing_ij_mm[0])]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    dataset.RescaleIntercept, dataset.RescaleSlope, dataset.RescaleType = -HU_OFFSET, 1, "HU"
    return dataset


def _slice_dataset(common: Dataset, k: int) -> Dataset:
    dataset = Dataset()
    dataset.update(common)
    dataset.SOPInstanceUID = generate_uid()
    dataset.InstanceNumber = k + 1
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, as DICOM's DS allows."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.8g}"
