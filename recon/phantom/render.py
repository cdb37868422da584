"""Painting solids onto a CT grid with partial-volume edges, then scanner blur and correlated noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from recon.geometry import Grid
from recon.phantom.shapes import Shape

SLAB_VOXELS = 4_000_000
COARSE_CELL_MM = 3.0
DIRECT_VOXELS = 64_000
GEOMETRIC_SHARE = 0.5  # label the voxels whose centre lies inside: the geometric truth


@dataclass(frozen=True, eq=False)
class Paint:
    """Fill ``shape`` with ``hu``; where the share of a voxel inside it reaches the render's
    ``labelled_share`` also set ``label`` unless None.

    ``layers`` paints nested shells in one pass: (depth below the surface in mm, HU) pairs, in order.
    ``smooth`` marks a large, gently curved solid whose distances may be interpolated everywhere from a
    coarse grid (a 150 mm radius bends less than 0.01 mm over 3 mm).
    """

    shape: Shape
    hu: float
    label: int | None = None
    layers: tuple[tuple[float, float], ...] = ()
    smooth: bool = False


@dataclass(frozen=True)
class Imaging:
    """Scanner effects: Gaussian blur (sigma in mm per axis) and noise (std in HU after the blur)."""

    blur_sigma_mm: tuple[float, float, float]
    noise_std_hu: float


def render(grid: Grid, paints: list[Paint], *, background_hu: float,
           labelled_share: float = GEOMETRIC_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """Paint in order onto (i, j, k) arrays: HU as float32 and labels as uint8.

    A voxel takes a paint's label when at least ``labelled_share`` of it lies inside the solid (by the linear
    partial-volume ramp): 0.5 labels the voxels whose centre is inside, the geometric truth; a smaller share
    also labels the partial-volume voxels at the edge, as reference segmentations of real CT do."""
    hu = np.full(grid.shape, background_hu, dtype=np.float32)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    ramp_mm = float(np.sqrt(np.mean(np.square(grid.spacing_mm))))  # the solid share falls linearly across it
    label_margin_mm = ramp_mm * (GEOMETRIC_SHARE - labelled_share)
    for paint in paints:
        _paint(grid, hu, labels, paint, ramp_mm, label_margin_mm)
    return hu, labels


def _paint(grid: Grid, hu: np.ndarray, labels: np.ndarray, paint: Paint, ramp_mm: float,
           label_margin_mm: float) -> None:
    depths = (0.0,) + tuple(depth for depth, _ in paint.layers)
    box = _index_box(grid, paint.shape, ramp_mm + max(depths))
    if box is None:
        return
    (i0, i1), (j0, j1), (k0, k1) = box
    step = max(1, int(COARSE_CELL_MM // max(grid.spacing_mm)))
    if paint.smooth:
        step *= 2
    slab = max(step, SLAB_VOXELS // ((i1 - i0) * (j1 - j0)) // step * step)
    band_mm = ramp_mm + step * float(np.linalg.norm(grid.spacing_mm))
    for k_start in range(k0, k1, slab):
        region = (slice(i0, i1), slice(j0, j1), slice(k_start, min(k1, k_start + slab)))
        distance = _distances(grid, paint.shape, region, depths, step, 0.0 if paint.smooth else band_mm)
        values = hu[region]
        for depth_mm, layer_hu in zip(depths, (paint.hu,) + tuple(h for _, h in paint.layers)):
            fraction = np.clip(0.5 - (distance + depth_mm) / ramp_mm, 0.0, 1.0).astype(np.float32)
            values += (np.float32(layer_hu) - values) * fraction
        if paint.label is not None:
            labels[region][distance <= label_margin_mm] = paint.label


def _distances(grid: Grid, shape: Shape, region, depths: tuple[float, ...], step: int, band_mm: float) -> np.ndarray:
    """Signed distances on ``region``: exact within ``band_mm`` of every layer's surface, elsewhere
    interpolated from a grid ``step`` times coarser (far from a surface only the sign matters)."""
    size = [axis.stop - axis.start for axis in region]
    if step == 1 or np.prod(size) <= DIRECT_VOXELS:
        return shape.sdf(_points(grid, region).reshape(-1, 3)).reshape(size)
    coarse_region = tuple(slice(axis.start, axis.start + step * int(np.ceil((n - 1) / step)) + 1, step)
                          for axis, n in zip(region, size))
    coarse_points = _points(grid, coarse_region)
    coarse = shape.sdf(coarse_points.reshape(-1, 3)).reshape(coarse_points.shape[:-1])
    factors = [step if m > 1 else 1 for m in coarse.shape]
    distance = ndimage.zoom(coarse, factors, order=1, grid_mode=False)[: size[0], : size[1], : size[2]]
    if band_mm <= 0:
        return distance
    near = np.zeros(distance.shape, dtype=bool)
    for depth in depths:
        near |= np.abs(distance + depth) < band_mm
    index = np.nonzero(near)
    if index[0].size:
        ijk = np.column_stack(index).astype(np.float32) + np.array([axis.start for axis in region], np.float32)
        affine = grid.affine_lps.astype(np.float32)
        distance[index] = shape.sdf(ijk @ affine[:3, :3].T + affine[:3, 3])
    return distance


def _points(grid: Grid, region: tuple[slice, slice, slice]) -> np.ndarray:
    """LPS centres (float32) of the voxels in ``region`` (slices may have a step), shape (ni, nj, nk, 3)."""
    affine = grid.affine_lps.astype(np.float32)
    steps = [np.arange(axis.start, axis.stop, axis.step or 1, dtype=np.float32)[:, None] * affine[:3, c]
             for c, axis in enumerate(region)]
    return (steps[0][:, None, None, :] + steps[1][None, :, None, :] + steps[2][None, None, :, :]
            + affine[:3, 3])


def _index_box(grid: Grid, shape: Shape, margin_mm: float):
    low, high = shape.bounds()
    low, high = np.asarray(low) - margin_mm, np.asarray(high) + margin_mm
    low = np.where(np.isfinite(low), low, -1e6)
    high = np.where(np.isfinite(high), high, 1e6)
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    index = grid.lps_to_index(corners)
    start = np.clip(np.floor(index.min(axis=0)).astype(int), 0, grid.shape)
    stop = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, 0, grid.shape)
    if np.any(stop <= start):
        return None
    return tuple(zip(start.tolist(), stop.tolist()))


def apply_imaging(hu: np.ndarray, grid: Grid, imaging: Imaging, rng: np.random.Generator) -> np.ndarray:
    """Add white noise, blur both by the scanner's point spread, and round to whole HU (int16).

    ``hu`` is used as scratch space (the noise is added to it in place) to spare a full-size copy.

    Blurring after the noise correlates it over the blur width, as a reconstruction kernel does; the
    white noise is scaled beforehand so that its standard deviation after the blur is ``noise_std_hu``.
    """
    sigma = np.asarray(imaging.blur_sigma_mm) / np.asarray(grid.spacing_mm)
    sigma = np.where(sigma > 0.2, sigma, 0)
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    hu += noise * np.float32(imaging.noise_std_hu / _blurred_noise_std(sigma))
    del noise
    blurred = ndimage.gaussian_filter(hu, sigma=sigma, mode="nearest", truncate=2.5)
    np.clip(blurred, -1024, 3071, out=blurred)
    return np.rint(blurred).astype(np.int16)


def _blurred_noise_std(sigma: np.ndarray) -> float:
    """The standard deviation of unit white noise after this blur, measured on a patch."""
    patch = np.random.default_rng(0).standard_normal((48, 48, 48)).astype(np.float32)
    return float(ndimage.gaussian_filter(patch, sigma=sigma, mode="wrap", truncate=2.5).std())
