"""Placing 2D frames in space and stacking them onto a regular, orthogonal grid.

Slices are sorted by their position projected on the slice normal (never by file name or instance
number), and the slice spacing comes from those positions (never from SliceThickness). When the slices
are not evenly spaced, or advance along a direction other than the normal (gantry tilt), the stack is
resampled: every acquired slice is shifted in its own plane onto the orthogonal grid, and target slices
between acquired ones are interpolated linearly along the normal, so each acquired slice stays at its
true physical position.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

from recon.errors import CorruptFileError, InputError, TooLargeError
from recon.geometry import MAX_VOXELS, Grid, angle_between_deg

log = logging.getLogger(__name__)

DUPLICATE_POSITION_MM = 1e-3
EVEN_TOLERANCE_MM = 0.005
EVEN_TOLERANCE_FRACTION = 0.01
TILT_SHIFT_PIXELS = 0.05
MAX_SHIFT_RESIDUAL_PIXELS = 1.0
MAX_TILT_DEG = 45.0
MAX_UPSAMPLING = 8
INT16 = np.iinfo(np.int16)
ALIGNMENT_TOLERANCE = 0.1


@dataclass(frozen=True, eq=False)
class Frame:
    """One 2D image placed in LPS: ``pixels()`` returns stored values as (rows, cols).

    ``label`` names the frame in messages; ``file_label`` names the file that holds it.
    """

    label: str
    file_label: str
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing_mm: np.ndarray
    rows: int
    cols: int
    slope: float
    intercept: float
    thickness_mm: float
    pixels: Callable[[], np.ndarray]
    transfer_syntax: str = ""

    @cached_property
    def row_direction(self) -> np.ndarray:
        return self.orientation[:3] / np.linalg.norm(self.orientation[:3])

    @cached_property
    def column_direction(self) -> np.ndarray:
        """The column direction made exactly orthogonal to the row direction (headers round to 1e-6)."""
        row = self.row_direction
        column = self.orientation[3:] - (self.orientation[3:] @ row) * row
        return column / np.linalg.norm(column)

    @cached_property
    def normal(self) -> np.ndarray:
        normal = np.cross(self.row_direction, self.column_direction)
        return normal / np.linalg.norm(normal)

    def same_geometry(self, other: Frame, orientation_tolerance: float, spacing_tolerance_mm: float) -> bool:
        return (
            (self.rows, self.cols) == (other.rows, other.cols)
            and np.allclose(self.orientation, other.orientation, atol=orientation_tolerance)
            and np.allclose(self.pixel_spacing_mm, other.pixel_spacing_mm, atol=spacing_tolerance_mm)
        )

    def stored_pixels(self) -> np.ndarray:
        """The stored values as (rows, cols), checked against the header's matrix size."""
        stored = self.pixels()
        if stored.shape != (self.rows, self.cols):
            raise CorruptFileError(
                f"{self.label}: decoded pixels have shape {stored.shape}, header says {self.rows}x{self.cols}"
            )
        return stored

    @property
    def integer_rescale(self) -> bool:
        return float(self.slope).is_integer() and float(self.intercept).is_integer()


@dataclass(frozen=True, eq=False)
class StackedSlices:
    """A regular grid of Hounsfield units built from frames, with what was found on the way."""

    grid: Grid
    hu: np.ndarray
    gantry_tilt_deg: float
    warnings: tuple[str, ...]


def stack_frames(frames: list[Frame], *, source: str) -> StackedSlices:
    """Sort ``frames`` along their normal and put them on a regular orthogonal grid."""
    first = frames[0]
    _check_orientation(first)
    normal = first.normal
    heights = np.array([frame.position @ normal for frame in frames])
    order = np.argsort(heights, kind="stable")
    frames = [frames[i] for i in order]
    heights = heights[order]
    _check_duplicates(frames, heights, source)
    spacing_i, spacing_j = float(first.pixel_spacing_mm[1]), float(first.pixel_spacing_mm[0])
    shifts_ij = _in_plane_shifts(frames, heights, normal, spacing_i, spacing_j)
    tilt_deg = 0.0 if len(frames) < 2 else angle_between_deg(normal, frames[-1].position - frames[0].position)
    _check_shifts(shifts_ij, heights, tilt_deg, source)
    slice_spacing, warnings = _slice_spacing(frames, heights, source)
    _check_resampled_size(shifts_ij, heights, slice_spacing, first, source)
    hu_kji = _hounsfield_stack(frames)
    origin = frames[0].position.copy()
    tilted = np.abs(shifts_ij).max() > TILT_SHIFT_PIXELS
    if tilted:
        warnings.append(
            f"gantry tilt of {tilt_deg:.1f} degrees: slices advance {tilt_deg:.1f} degrees off their normal; "
            "resampled onto an orthogonal grid by shifting each slice in its plane"
        )
        hu_kji, corner_ij = _shift_slices(hu_kji, shifts_ij)
        origin += corner_ij[0] * spacing_i * first.row_direction + corner_ij[1] * spacing_j * first.column_direction
    if len(frames) > 1 and (tilted or _uneven(heights)):
        hu_kji = _interpolate_along_normal(hu_kji, heights - heights[0], slice_spacing)
    direction = np.column_stack([first.row_direction, first.column_direction, normal])
    grid = Grid(
        shape=hu_kji.shape[::-1],
        spacing_mm=(spacing_i, spacing_j, slice_spacing),
        origin_lps_mm=origin,
        direction=direction.ravel(),
    )
    for warning in warnings:
        log.warning("%s: %s", source, warning)
    return StackedSlices(grid, hu_kji.transpose(2, 1, 0), round(tilt_deg, 3), tuple(warnings))


def _hounsfield_stack(frames: list[Frame]) -> np.ndarray:
    """Rescaled slices as (k, rows, cols): int16 when every value is an integer that fits, else float32."""
    stored = [frame.stored_pixels() for frame in frames]
    fits = all(
        frame.integer_rescale
        and INT16.min <= min(pixels.min() * frame.slope, pixels.max() * frame.slope) + frame.intercept
        and max(pixels.min() * frame.slope, pixels.max() * frame.slope) + frame.intercept <= INT16.max
        for frame, pixels in zip(frames, stored)
    )
    dtype = np.dtype(np.int16 if fits and all(p.dtype.kind in "ui" for p in stored) else np.float32)
    hu = np.empty((len(frames), frames[0].rows, frames[0].cols), dtype=dtype)
    for frame, pixels, out in zip(frames, stored, hu):
        if dtype == np.int16 and frame.slope == 1:
            # the sum is exact modulo 2**16, so wrapping the intercept into int16 is exact whenever the HU fits
            np.add(pixels, np.array(int(frame.intercept)).astype(np.int16), out=out, casting="unsafe")
        elif dtype == np.int16:
            out[...] = pixels.astype(np.int32) * int(frame.slope) + int(frame.intercept)
        else:
            np.multiply(pixels, np.float32(frame.slope), out=out, dtype=np.float32)
            out += np.float32(frame.intercept)
    return hu


def _check_shifts(shifts_ij: np.ndarray, heights: np.ndarray, tilt_deg: float, source: str) -> None:
    """In-plane offsets must grow in step with height (a tilt), not jump about (inconsistent positions)."""
    if len(heights) < 3 or np.abs(shifts_ij).max() <= TILT_SHIFT_PIXELS:
        return
    design = np.column_stack([np.ones_like(heights), heights])
    fit, *_ = np.linalg.lstsq(design, shifts_ij, rcond=None)
    residual = float(np.abs(design @ fit - shifts_ij).max())
    if residual > MAX_SHIFT_RESIDUAL_PIXELS or tilt_deg > MAX_TILT_DEG:
        raise InputError(
            f"{source}: slice positions are inconsistent (in-plane offsets off a straight line by up to "
            f"{residual:.1f} pixels, apparent tilt {tilt_deg:.1f} degrees); a slice has a damaged "
            "ImagePositionPatient or the folder mixes series: check the files or load one series"
        )


def _check_resampled_size(shifts_ij, heights, spacing: float, first: Frame, source: str) -> None:
    extent = np.ceil(np.ptp(shifts_ij, axis=0)) + 1 if len(heights) > 1 else np.ones(2)
    n_slices = (heights[-1] - heights[0]) / spacing + 1
    voxels = (first.cols + extent[0]) * (first.rows + extent[1]) * n_slices
    if voxels > MAX_VOXELS:
        raise TooLargeError(
            f"{source}: resampling these slices would need {voxels:.3g} voxels, more than the {MAX_VOXELS} recon "
            "allocates; check the slice positions or load fewer slices"
        )


def _check_orientation(frame: Frame) -> None:
    row, col = frame.orientation[:3], frame.orientation[3:]
    norms_ok = np.allclose([np.linalg.norm(row), np.linalg.norm(col)], 1.0, atol=1e-2)
    if not norms_ok or abs(row @ col) > 1e-2:
        raise InputError(
            f"{frame.label}: ImageOrientationPatient {list(frame.orientation)} is not two orthogonal unit "
            "vectors; the header is damaged"
        )


def _check_duplicates(frames: list[Frame], heights: np.ndarray, source: str) -> None:
    gaps = np.diff(heights)
    if np.any(gaps < DUPLICATE_POSITION_MM):
        k = int(np.argmin(gaps))
        raise InputError(
            f"{source}: {frames[k].label} and {frames[k + 1].label} lie at the same position; the series mixes "
            "several acquisitions (phases or echoes): split them into separate folders and load one"
        )


def _in_plane_shifts(
    frames: list[Frame], heights: np.ndarray, normal: np.ndarray, spacing_i: float, spacing_j: float
) -> np.ndarray:
    """Each slice's in-plane offset from the first, in pixels along (i, j): zero without gantry tilt."""
    positions = np.array([frame.position for frame in frames])
    in_plane = positions - positions[0] - np.outer(heights - heights[0], normal)
    first = frames[0]
    return np.column_stack([in_plane @ first.row_direction / spacing_i, in_plane @ first.column_direction / spacing_j])


def _uneven(heights: np.ndarray) -> bool:
    gaps = np.diff(heights)
    if len(gaps) == 0:
        return False
    median = float(np.median(gaps))
    return bool(np.any(np.abs(gaps - median) > max(EVEN_TOLERANCE_MM, EVEN_TOLERANCE_FRACTION * median)))


def _slice_spacing(frames: list[Frame], heights: np.ndarray, source: str) -> tuple[float, list[str]]:
    """The regular slice spacing to use, and warnings about gaps or a single slice."""
    if len(frames) == 1:
        thickness = frames[0].thickness_mm
        spacing = thickness if thickness > 0 else 1.0
        return spacing, [f"a single slice: slice spacing taken as {spacing:g} mm (SliceThickness or 1 mm)"]
    gaps = np.diff(heights)
    span = float(heights[-1] - heights[0])
    if not _uneven(heights):
        return span / (len(frames) - 1), []
    spacing = _aligned_spacing(heights - heights[0], len(frames))
    median = float(np.median(gaps))
    if spacing is not None and abs(spacing - median) <= max(EVEN_TOLERANCE_MM, EVEN_TOLERANCE_FRACTION * median):
        steps = np.round(gaps / spacing)
        where = ", ".join(f"after {frames[k].label}" for k in np.flatnonzero(steps > 1)[:5])
        return spacing, [
            f"{int(steps.sum()) - len(gaps)} slice(s) missing ({where}): gaps of up to {gaps.max():.3g} mm in a "
            f"{spacing:.3g} mm series; the missing slices were interpolated"
        ]
    if spacing is None:
        spacing = max(float(gaps.min()), span / (MAX_UPSAMPLING * len(frames)))
    return spacing, [
        f"uneven slice spacing: gaps from {gaps.min():.3g} to {gaps.max():.3g} mm; resampled to a regular "
        f"{spacing:.3g} mm grid, interpolating linearly between acquired slices"
    ]


def _aligned_spacing(offsets: np.ndarray, n_slices: int) -> float | None:
    """The largest spacing whose planes, starting at the first slice, pass within a tenth of a spacing of
    every acquired slice (so acquired slices are kept, not blended), or None when none is fine enough."""
    gaps = np.diff(offsets)
    finest = offsets[-1] / (MAX_UPSAMPLING * n_slices)
    candidates = sorted({g / m for g in np.unique(np.round(gaps, 3)) for m in range(1, 9)}, reverse=True)
    for candidate in candidates:
        if candidate > gaps.min() * (1 + ALIGNMENT_TOLERANCE) or candidate < finest:
            continue
        spacing = offsets[-1] / round(offsets[-1] / candidate)
        steps = offsets / spacing
        if np.all(np.abs(steps - np.round(steps)) <= ALIGNMENT_TOLERANCE):
            return float(spacing)
    return None


def _shift_slices(hu_kji: np.ndarray, shifts_ij: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift each slice in its plane onto a canvas that holds them all; returns it and its corner (i, j)."""
    corner = np.floor(shifts_ij.min(axis=0))
    extent = np.ceil(shifts_ij.max(axis=0) - corner).astype(int)
    n_slices, n_j, n_i = hu_kji.shape
    canvas = np.empty((n_slices, n_j + extent[1], n_i + extent[0]), dtype=np.float32)
    fill = float(hu_kji.min())
    for k in range(n_slices):
        offset_ji = (corner - shifts_ij[k])[::-1]
        ndimage.affine_transform(
            hu_kji[k], np.eye(2), offset=offset_ji, output_shape=canvas.shape[1:],
            output=canvas[k], order=1, mode="constant", cval=fill,
        )
    return canvas, corner


def _interpolate_along_normal(hu_kji: np.ndarray, heights: np.ndarray, spacing: float) -> np.ndarray:
    """Resample slices at ``heights`` (mm from the first) onto planes every ``spacing`` mm."""
    n_target = int(round(heights[-1] / spacing)) + 1
    targets = np.arange(n_target) * spacing
    upper = np.clip(np.searchsorted(heights, targets, side="right"), 1, len(heights) - 1)
    lower = upper - 1
    weight = np.clip((targets - heights[lower]) / (heights[upper] - heights[lower]), 0.0, 1.0)
    result = np.empty((n_target,) + hu_kji.shape[1:], dtype=np.float32)
    for t in range(n_target):
        w = np.float32(weight[t])
        result[t] = hu_kji[lower[t]] * (1 - w) + hu_kji[upper[t]] * w
    return result
