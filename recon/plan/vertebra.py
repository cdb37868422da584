"""One vertebra in its own frame: symmetry plane, endplates, canal, and its bone resampled on a fine grid.

The frame's columns are the vertebra's left, posterior and superior directions (LPS vectors); its origin is
the centre of the vertebral body. The left axis is the normal of the plane of bilateral symmetry (found by
mirroring the label onto itself), the superior axis the mean normal of the two endplates, so scoliotic and
rotated vertebrae get their own frame rather than the scanner's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from recon.geometry import Grid

LOCAL_SPACING_MM = 0.75
COARSE_SPACING_MM = 1.5  # while the frame is being refined
MARGIN_MM = 6.0
SYMMETRY_POINTS = 3000
ENDPLATE_CORE = 0.5  # fraction of the body's width and depth whose columns sample the endplates


class VertebraError(ValueError):
    """The label does not look like a whole vertebra (the message says why, for the plan's reason)."""


@dataclass(frozen=True, eq=False)
class VertebraBone:
    """The vertebra resampled on a grid aligned with its frame.

    ``occupancy`` is the (lightly smoothed) label's bone fraction per voxel; its 0.5 level is the bone
    surface. Local coordinates are
    millimetres along (left, posterior, superior) from ``origin_lps_mm``; voxel (0, 0, 0) sits at
    ``corner_local_mm``.
    """

    origin_lps_mm: np.ndarray
    axes_lps: np.ndarray
    corner_local_mm: np.ndarray
    spacing_mm: float
    occupancy: np.ndarray
    canal_local_mm: np.ndarray  # (x, y) centre of the canal
    canal_front_y_mm: float  # posterior wall of the body at the midline

    def to_lps(self, local_mm: np.ndarray) -> np.ndarray:
        return np.asarray(local_mm) @ self.axes_lps.T + self.origin_lps_mm

    def to_local(self, lps_mm: np.ndarray) -> np.ndarray:
        return (np.asarray(lps_mm) - self.origin_lps_mm) @ self.axes_lps

    def occupancy_at(self, local_mm: np.ndarray) -> np.ndarray:
        """Trilinear samples of the bone fraction at local points (..., 3); 0 outside the grid."""
        points = np.asarray(local_mm, dtype=np.float64)
        index = ((points.reshape(-1, 3) - self.corner_local_mm) / self.spacing_mm).T
        values = ndimage.map_coordinates(self.occupancy, index, order=1, mode="constant", cval=0.0)
        return values.reshape(points.shape[:-1])

    def distance_field(self, low_mm: np.ndarray, high_mm: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """The signed distance to the bone surface (mm, negative inside) as a function of local points (N, 3),
        computed once over the box from ``low_mm`` to ``high_mm`` (farther bone is not seen)."""
        low = np.maximum(np.floor((np.asarray(low_mm) - self.corner_local_mm) / self.spacing_mm).astype(int), 0)
        high = np.minimum(np.ceil((np.asarray(high_mm) - self.corner_local_mm) / self.spacing_mm).astype(int) + 1,
                          self.occupancy.shape)
        inside = self.occupancy[tuple(slice(a, b) for a, b in zip(low, high))] >= 0.5
        # distances between voxel centres, less half a voxel: the surface lies midway between centres
        half = self.spacing_mm / 2
        sdf = np.where(inside, half - ndimage.distance_transform_edt(inside, sampling=self.spacing_mm),
                       ndimage.distance_transform_edt(~inside, sampling=self.spacing_mm) - half).astype(np.float32)
        corner = self.corner_local_mm + low * self.spacing_mm

        def at(local_points: np.ndarray) -> np.ndarray:
            index = ((np.asarray(local_points, dtype=np.float64) - corner) / self.spacing_mm).T
            return ndimage.map_coordinates(sdf, index, order=1, mode="nearest")

        return at


def vertebra_bone(mask: np.ndarray, grid: Grid, *, up_hint_lps: np.ndarray) -> VertebraBone:
    """Find the vertebra's frame from its label ``mask`` on ``grid`` and resample it in that frame.

    ``up_hint_lps`` is the spine's superior direction near this vertebra (from its neighbours, or the
    patient's superior axis); the endplates refine it.
    """
    smooth = ndimage.gaussian_filter(mask.astype(np.float32), sigma=0.5, mode="constant")
    points = grid.index_to_lps(np.argwhere(mask))
    if len(points) < 50:
        raise VertebraError("the label is too small to be a vertebra")
    left, on_plane = _symmetry_plane(mask, grid, points)
    up = _orthogonal(up_hint_lps, left)
    origin = points.mean(axis=0)
    origin -= left * ((origin - on_plane) @ left)
    for _ in range(2):
        bone = _resample(smooth, grid, points, origin, np.column_stack([left, np.cross(up, left), up]),
                         COARSE_SPACING_MM)
        up, origin = _endplate_frame(bone, left, up)
    return _resample(smooth, grid, points, origin, np.column_stack([left, np.cross(up, left), up]), LOCAL_SPACING_MM)


def _symmetry_plane(mask: np.ndarray, grid: Grid, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plane that best mirrors the label onto itself: its unit normal (towards patient left) and a
    point on it."""
    distance_out = ndimage.distance_transform_edt(~mask, sampling=grid.spacing_mm).astype(np.float32)
    sample = points[np.random.default_rng(0).permutation(len(points))[:SYMMETRY_POINTS]]
    centre = sample.mean(axis=0)

    def normal(angles):
        yaw, roll = angles
        return np.array([np.cos(yaw) * np.cos(roll), np.sin(yaw) * np.cos(roll), np.sin(roll)])

    def cost(parameters):
        n, offset = normal(parameters[:2]), parameters[2]
        mirrored = sample - 2.0 * (((sample - centre) @ n) - offset)[:, None] * n
        index = grid.lps_to_index(mirrored).T
        return float(np.mean(ndimage.map_coordinates(distance_out, index, order=1, mode="nearest")))

    starts = [np.array([np.radians(yaw), 0.0, 0.0]) for yaw in (-25, 0, 25)]
    best = min((optimize.minimize(cost, start, method="Nelder-Mead",
                                  options={"xatol": 1e-3, "fatol": 1e-4, "maxiter": 300}) for start in starts),
               key=lambda result: result.fun)
    n = normal(best.x[:2])
    return (n if n[0] >= 0 else -n), centre + best.x[2] * n


def _orthogonal(vector: np.ndarray, normal: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, float) - (np.asarray(vector, float) @ normal) * normal
    length = np.linalg.norm(vector)
    if length < 0.5:
        raise VertebraError("the vertebra's plane of symmetry is not sagittal; the label may be damaged")
    return vector / length


def _resample(smooth: np.ndarray, grid: Grid, points: np.ndarray, origin: np.ndarray, axes: np.ndarray,
              spacing: float) -> VertebraBone:
    local_points = (points - origin) @ axes
    corner = local_points.min(axis=0) - MARGIN_MM
    shape = np.ceil((local_points.max(axis=0) + MARGIN_MM - corner) / spacing).astype(int) + 1
    to_index = np.linalg.inv(grid.affine_lps[:3, :3])  # LPS offset from the grid origin -> grid index
    matrix = to_index @ axes * spacing
    offset = to_index @ (origin + axes @ corner - np.asarray(grid.origin_lps_mm))
    occupancy = ndimage.affine_transform(smooth, matrix, offset, output_shape=tuple(shape), order=1,
                                         mode="constant", cval=0.0)
    canal, front = _canal(occupancy >= 0.5, corner, spacing)
    return VertebraBone(origin, axes, corner, spacing, occupancy, canal, front)


def _canal(inside: np.ndarray, corner: np.ndarray, spacing: float) -> tuple[np.ndarray, float]:
    """The vertebral foramen as the hole that the bone encloses when seen from above: its (x, y) centre
    and its anterior edge at the midline (the posterior wall of the body)."""
    projection = inside.any(axis=2)
    for closing_mm in (0.0, 1.5, 3.0):
        closed = projection
        if closing_mm:
            radius = int(round(closing_mm / spacing))
            disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
            closed = ndimage.binary_closing(np.pad(projection, radius + 1), disk)[radius + 1:-radius - 1,
                                                                                 radius + 1:-radius - 1]
        holes, count = ndimage.label(ndimage.binary_fill_holes(closed) & ~closed)
        if count:
            sizes = ndimage.sum_labels(np.ones_like(holes), holes, index=np.arange(1, count + 1))
            hole = holes == 1 + int(np.argmax(sizes))
            if sizes.max() * spacing**2 >= 40.0:
                break
    else:
        raise VertebraError("the label encloses no vertebral canal (posterior arch missing or broken)")
    cells = np.argwhere(hole)
    centre = corner[:2] + spacing * cells.mean(axis=0)
    column = int(round((centre[0] - corner[0]) / spacing))
    rows = cells[cells[:, 0] == column, 1] if np.any(cells[:, 0] == column) else cells[:, 1]
    front = corner[1] + spacing * (rows.min() - 0.5)
    return centre, float(front)


def _endplate_frame(bone: VertebraBone, left: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A better superior axis (the mean normal of both endplates) and the body's centre, in LPS."""
    inside = bone.occupancy >= 0.5
    x = bone.corner_local_mm[0] + bone.spacing_mm * np.arange(inside.shape[0])
    y = bone.corner_local_mm[1] + bone.spacing_mm * np.arange(inside.shape[1])
    z = bone.corner_local_mm[2] + bone.spacing_mm * np.arange(inside.shape[2])
    body = inside & (y < bone.canal_front_y_mm)[None, :, None]
    columns = np.argwhere(body.any(axis=2))
    if len(columns) < 20:
        raise VertebraError("no vertebral body in front of the canal")
    xs, ys = x[columns[:, 0]], y[columns[:, 1]]
    x_mid, y_mid = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    core = ((np.abs(xs - x_mid) <= ENDPLATE_CORE * (xs.max() - xs.min()) / 2)
            & (np.abs(ys - y_mid) <= ENDPLATE_CORE * (ys.max() - ys.min()) / 2))
    columns, xs, ys = columns[core], xs[core], ys[core]
    occupied = body[columns[:, 0], columns[:, 1], :]
    top = z[occupied.shape[1] - 1 - np.argmax(occupied[:, ::-1], axis=1)]
    bottom = z[np.argmax(occupied, axis=1)]
    design = np.column_stack([np.ones_like(xs), xs - x_mid, ys - y_mid])
    normals = []
    for heights in (top, bottom):
        coefficients, *_ = np.linalg.lstsq(design, heights, rcond=None)
        normal = np.array([-coefficients[1], -coefficients[2], 1.0])
        normals.append(normal / np.linalg.norm(normal))
    up_local = normals[0] + normals[1]
    up_local /= np.linalg.norm(up_local)
    new_up = _orthogonal(bone.axes_lps @ up_local, left)
    centre_local = np.array([x_mid, y_mid, (np.median(top) + np.median(bottom)) / 2])
    centre_local[0] = 0.0  # stay in the plane of symmetry
    return new_up, bone.to_lps(centre_local)
