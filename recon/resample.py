"""Moving images between grids in physical space (SimpleITK does the sampling)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from recon.errors import GeometryError
from recon.geometry import Grid
from recon.volume import LabelMap


def resample_labels(labels: LabelMap, grid: Grid) -> LabelMap:
    """``labels`` sampled onto ``grid`` by nearest neighbour in LPS; voxels outside the source are 0.

    Refuses grids that share no physical space with the source."""
    if not grid.overlaps(labels.grid):
        raise GeometryError(
            "the two label maps do not overlap in patient space (LPS); they belong to different scans or one "
            "has a wrong origin or direction in its header"
        )
    source = sitk.GetImageFromArray(np.ascontiguousarray(labels.labels.transpose(2, 1, 0)))
    source.SetSpacing(labels.grid.spacing_mm)
    source.SetOrigin(labels.grid.origin_lps_mm)
    source.SetDirection(labels.grid.direction)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in grid.shape])
    resampler.SetOutputSpacing(grid.spacing_mm)
    resampler.SetOutputOrigin(grid.origin_lps_mm)
    resampler.SetOutputDirection(grid.direction)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampler.SetDefaultPixelValue(0)
    moved = sitk.GetArrayFromImage(resampler.Execute(source)).transpose(2, 1, 0)
    return LabelMap(grid, np.ascontiguousarray(moved), dict(labels.names))
