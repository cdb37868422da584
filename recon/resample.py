"""Moving images between grids in physical space (SimpleITK does the sampling)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from recon.errors import GeometryError, InputError
from recon.geometry import Grid
from recon.volume import LabelMap, Volume

AIR_HU = -1024.0


def canonical_grid(grid: Grid, spacing_mm: float) -> Grid:
    """An axis-aligned LPS grid (identity direction) at ``spacing_mm`` covering every voxel of ``grid``: the
    orientation recon's network is trained in, so left stays left whatever the input's axes."""
    corners = grid.corners_lps()
    low, high = corners.min(axis=0), corners.max(axis=0)
    shape = np.maximum(1, np.ceil((high - low) / spacing_mm).astype(int) + 1)
    centre = (low + high) / 2
    return Grid(tuple(shape), (spacing_mm,) * 3, centre - (shape - 1) / 2 * spacing_mm)


def require_usable_zooms(zooms, *, network: bool) -> None:
    """Test-time zooms (``zoomed_grid``'s) are positive, and given only where recon's network segments."""
    if any(not zoom > 0 for zoom in zooms):
        raise InputError(f"test-time zooms must be positive numbers (1.1: 10% finer), got {list(zooms)}")
    if zooms and not network:
        raise InputError("test-time zooms (--zooms) are for recon's network, not an existing segmentation or "
                         "TotalSegmentator: leave them out")


def zoomed_grid(grid: Grid, zoom: float) -> Grid:
    """An axis-aligned LPS grid ``zoom`` times finer than the axis-aligned ``grid`` (coarser below 1), centred on
    it and reaching no further than its outermost voxel centres, so that nothing sampled onto it lies outside."""
    spacing = np.asarray(grid.spacing_mm) / zoom
    extent = (np.asarray(grid.shape) - 1) * np.asarray(grid.spacing_mm)
    shape = np.floor(extent / spacing + 1e-6).astype(int) + 1
    centre = np.asarray(grid.origin_lps_mm) + extent / 2
    return Grid(tuple(shape), tuple(spacing), centre - (shape - 1) / 2 * spacing)


def resample_volume(volume: Volume, grid: Grid) -> np.ndarray:
    """CT values on ``grid`` by linear interpolation in LPS (float32); outside the source: air.

    Where ``grid`` is coarser than the source, the source is first smoothed so that each coarse voxel holds
    the mean of the tissue it covers, as a scan reconstructed at that voxel size would (and as recon's
    phantoms are rendered), not a point sample of fine-grid noise and texture."""
    return resample_array(volume.hu.astype(np.float32, copy=False), volume.grid, grid, sitk.sitkLinear, AIR_HU,
                          smoothing_mm=antialiasing_sigma_mm(volume.grid, grid))


def antialiasing_sigma_mm(source: Grid, grid: Grid) -> tuple[float, float, float]:
    """Gaussian sigma (mm) along each source axis whose variance adds up to that of averaging over a box of
    the target's voxel size: sqrt((t^2 - s^2) / 12), t being the target's extent along that axis."""
    along = np.abs(source.direction_matrix.T @ grid.direction_matrix)  # source axis a . target axis b
    target = np.sqrt(np.square(along) @ np.square(np.asarray(grid.spacing_mm)))
    excess = np.square(target) - np.square(np.asarray(source.spacing_mm))
    return tuple(float(v) for v in np.sqrt(np.maximum(excess, 0.0) / 12.0))


def resample_labels(labels: LabelMap, grid: Grid) -> LabelMap:
    """``labels`` sampled onto ``grid`` by nearest neighbour in LPS; voxels outside the source are 0.

    Refuses grids that share no physical space with the source."""
    if not grid.overlaps(labels.grid):
        raise GeometryError(
            "the two label maps do not overlap in patient space (LPS); they belong to different scans or one "
            "has a wrong origin or direction in its header"
        )
    moved = resample_array(labels.labels, labels.grid, grid, sitk.sitkNearestNeighbor, 0)
    return LabelMap(grid, moved, dict(labels.names))


def resample_array(array: np.ndarray, source_grid: Grid, grid: Grid, interpolator, outside: float,
                   smoothing_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """``array`` on ``source_grid`` sampled onto ``grid`` with a SimpleITK interpolator; ``outside`` beyond it.
    ``smoothing_mm``: a Gaussian (sigma per source axis, mm) applied to the source first."""
    source = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    source.SetSpacing(source_grid.spacing_mm)
    source.SetOrigin(source_grid.origin_lps_mm)
    source.SetDirection(source_grid.direction)
    if max(smoothing_mm) > 0:
        source = _smooth(source, smoothing_mm, source_grid.spacing_mm)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in grid.shape])
    resampler.SetOutputSpacing(grid.spacing_mm)
    resampler.SetOutputOrigin(grid.origin_lps_mm)
    resampler.SetOutputDirection(grid.direction)
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(outside)
    return np.ascontiguousarray(sitk.GetArrayFromImage(resampler.Execute(source)).transpose(2, 1, 0))


def _smooth(image: sitk.Image, sigma_mm, spacing_mm) -> sitk.Image:
    """A Gaussian with its own sigma per axis (mm); axes whose sigma is under a fifth of a voxel are left."""
    for axis, (sigma, spacing) in enumerate(zip(sigma_mm, spacing_mm)):
        if sigma > 0.2 * spacing:
            along_axis = sitk.RecursiveGaussianImageFilter()
            along_axis.SetDirection(axis)
            along_axis.SetSigma(float(sigma))
            image = along_axis.Execute(image)
    return image
