"""DICOM Segmentation objects (SEG) read as label maps, with highdicom: segment number -> id, segment label ->
name, the geometry from the SEG's own plane positions and orientation (LPS)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np

from recon.errors import InputError
from recon.geometry import Grid
from recon.volume import LabelMap, compact_label_dtype


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom_seg(path: Path) -> LabelMap:
    """Every segment of a binary or fractional SEG as one label (fractional: at 0.5); segments must not overlap."""
    try:
        segmentation = hd.seg.segread(path)
    except (ValueError, AttributeError, KeyError, TypeError, OSError) as err:
        raise InputError(f"{path}: not a readable DICOM SEG ({type(err).__name__}); check the file") from err
    try:
        volume = segmentation.get_volume(combine_segments=True)
    except (ValueError, RuntimeError) as err:
        raise InputError(f"{path}: its segments cannot form one label map ({err}); recon needs non-overlapping "
                         "segments on a regular grid") from err
    affine = np.asarray(volume.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    grid = Grid(volume.array.shape, spacing, affine[:3, 3], (affine[:3, :3] / spacing))
    labels = np.asarray(volume.array)
    names = {int(item.SegmentNumber): str(item.SegmentLabel) for item in segmentation.SegmentSequence}
    return LabelMap(grid, labels.astype(compact_label_dtype(labels)), names)
