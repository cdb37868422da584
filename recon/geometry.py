"""The physical frame: ``Grid`` maps voxel indices (i, j, k) to DICOM patient coordinates (LPS, mm)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.errors import GeometryError

ORTHONORMAL_TOLERANCE = 1e-4
MAX_VOXELS = 2**30  # the largest grid recon agrees to allocate (4 GiB of float32)


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid in LPS millimetres.

    ``direction`` holds 9 numbers, row-major, whose columns are the unit vectors of the i, j and k axes in
    LPS. A voxel index ``ijk`` lies at ``origin + direction @ (spacing * ijk)``; index (0, 0, 0) is the
    centre of the first voxel.
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "origin_lps_mm", tuple(float(o) for o in self.origin_lps_mm))
        object.__setattr__(self, "direction", tuple(float(d) for d in np.ravel(self.direction)))
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise GeometryError(f"grid shape must be three positive integers, got {self.shape}")
        if len(self.spacing_mm) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing_mm):
            raise GeometryError(f"grid spacing must be three positive finite numbers, got {self.spacing_mm}")
        if len(self.origin_lps_mm) != 3 or not np.all(np.isfinite(self.origin_lps_mm)):
            raise GeometryError(f"grid origin must be three finite numbers, got {self.origin_lps_mm}")
        if len(self.direction) != 9 or not is_orthonormal(self.direction_matrix):
            raise GeometryError(f"grid direction must be an orthonormal 3x3 matrix, got {self.direction}")

    @property
    def direction_matrix(self) -> np.ndarray:
        """The 3 x 3 direction matrix; column c is the unit vector of index axis c in LPS."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def affine_lps(self) -> np.ndarray:
        """The 4 x 4 matrix taking homogeneous (i, j, k, 1) to (L, P, S, 1) in mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix * np.asarray(self.spacing_mm)
        affine[:3, 3] = self.origin_lps_mm
        return affine

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Map continuous indices of shape (..., 3) to LPS millimetres of shape (..., 3)."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.affine_lps[:3, :3].T + np.asarray(self.origin_lps_mm)

    def lps_to_index(self, lps_mm: np.ndarray) -> np.ndarray:
        """Map LPS millimetres of shape (..., 3) to continuous indices of shape (..., 3)."""
        offset = np.asarray(lps_mm, dtype=float) - np.asarray(self.origin_lps_mm)
        return (offset @ self.direction_matrix) / np.asarray(self.spacing_mm)

    def same_as(self, other: Grid, *, tolerance_mm: float = 1e-4) -> bool:
        """True when both grids have the same shape and place every voxel within ``tolerance_mm``
        (checked at the corner voxels, so a small rotation of a large grid counts)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing_mm, other.spacing_mm, rtol=0, atol=tolerance_mm)
            and np.allclose(self.direction, other.direction, rtol=0, atol=ORTHONORMAL_TOLERANCE)
            and np.allclose(self.corners_lps(), other.corners_lps(), rtol=0, atol=tolerance_mm)
        )

    def corners_lps(self) -> np.ndarray:
        """The LPS positions of the centres of the 8 corner voxels, shape (8, 3)."""
        far = np.asarray(self.shape) - 1
        corners = np.array([[i, j, k] for i in (0, far[0]) for j in (0, far[1]) for k in (0, far[2])])
        return self.index_to_lps(corners)

    def overlaps(self, other: Grid) -> bool:
        """True when the boxes the two grids' voxels cover intersect (tested on ``other``'s corners mapped into
        this grid's index space, so it may err towards overlap for rotated grids, never against it)."""
        corners = self.lps_to_index(other.corners_lps())
        half = 0.5 * np.abs(self.direction_matrix.T @ other.direction_matrix) @ np.asarray(other.spacing_mm)
        half = half / np.asarray(self.spacing_mm)
        low, high = corners.min(axis=0) - half, corners.max(axis=0) + half
        return bool(np.all(high >= -0.5) and np.all(low <= np.asarray(self.shape) - 0.5))


def is_orthonormal(matrix: np.ndarray, tolerance: float = ORTHONORMAL_TOLERANCE) -> bool:
    """True when ``matrix`` is a finite 3 x 3 rotation or reflection."""
    matrix = np.asarray(matrix, dtype=float)
    return bool(np.all(np.isfinite(matrix)) and np.allclose(matrix.T @ matrix, np.eye(3), atol=tolerance))


def nearest_orthonormal(matrix: np.ndarray) -> np.ndarray:
    """The orthonormal matrix closest to ``matrix`` (polar decomposition), keeping its handedness."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=float))
    return u @ vt


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    """The unsigned angle between two vectors in degrees."""
    cosine = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
