"""The pedicle's axis and its isthmus (narrowest cross-section), found by slicing the bone across the pedicle.

A first axis comes from the view from above: lateral to the canal, the pedicle is the bony run between
canal and outside, and the centres of those runs line up along the pedicle. Cross-sections perpendicular
to that axis then give, at each depth, the width of the pedicle (its chord through the section's centroid,
across the vertebra's left-right direction) and its centroid; the isthmus is the middle of the narrowest
stretch (its width the median over 6 mm there, as voxel steps make single sections ragged), and a line through the
centroids around it is the new axis. Three rounds settle it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from recon.plan.vertebra import VertebraBone, VertebraError

SECTION_HALF_MM = 14.0
SECTION_STEP_MM = 0.375
SEARCH_BEHIND_MM = 8.0  # the first guess lies in the pedicle; farther back the thin lamina begins
SEARCH_AHEAD_MM = 12.0
DEPTH_STEP_MM = 0.75
PLATEAU_MM = 0.5  # sections this close to the narrowest width count as the isthmus stretch
FIT_HALF_MM = 5.0
ISTHMUS_HALF_MM = 3.0  # the isthmus width is the median over this much on either side of its middle
CHORD_STEP_MM = 0.05
ROUNDS = 3
MIN_FORWARD = 0.5  # a pedicle axis runs within 60 degrees of straight forward
MAX_TILT = 0.5  # and within 30 degrees of the endplates' plane
TUBE_WIDENING = 1.25
TUBE_OFFSET_MM = 0.5
MAX_BEHIND_MM = 30.0


@dataclass(frozen=True)
class Pedicle:
    """In the vertebra's local frame (mm): the isthmus centre, the axis (unit, pointing into the body),
    the isthmus width (left-right across the pedicle) and height, and how far the pedicle reaches back
    from the isthmus along the axis."""

    isthmus_local_mm: np.ndarray
    axis_local: np.ndarray
    width_mm: float
    height_mm: float
    behind_isthmus_mm: float


def find_pedicle(bone: VertebraBone, side: float) -> Pedicle:
    """The pedicle on ``side`` (+1 left, -1 right) of the vertebra."""
    point, axis = _first_axis(bone, side)
    anchor = point
    for _ in range(ROUNDS):
        start = point + ((anchor - point) @ axis) * axis  # the anchor's depth on the current line
        depths = np.arange(-SEARCH_BEHIND_MM, SEARCH_AHEAD_MM + 1e-9, DEPTH_STEP_MM)
        sections = [_section(bone, start + t * axis, axis) for t in depths]
        widths = np.array([s[1] if s else np.inf for s in sections])
        if not np.isfinite(widths).any():
            raise VertebraError("no pedicle found")
        narrow = np.flatnonzero(widths <= widths.min() + PLATEAU_MM)
        middle = narrow[np.argmin(np.abs(depths[narrow] - np.median(depths[narrow])))]
        near = [s[0] for t, s in zip(depths, sections) if s and abs(t - depths[middle]) <= FIT_HALF_MM]
        if len(near) >= 3:
            axis = _line_direction(np.array(near), axis)
        point = sections[middle][0]
    if axis[1] > -MIN_FORWARD or abs(axis[2]) > MAX_TILT:
        raise VertebraError("no pedicle found (the bone beside the canal does not lead into the body)")
    stretch = [i for i in range(len(depths)) if sections[i] and abs(depths[i] - depths[middle]) <= ISTHMUS_HALF_MM]
    width = float(np.median(widths[stretch]))
    height = float(np.median([sections[i][2] for i in stretch]))
    return Pedicle(point, axis, width, height, _length_behind(bone, point, axis, width))


def _length_behind(bone: VertebraBone, isthmus: np.ndarray, axis: np.ndarray, width: float) -> float:
    """How far the pedicle reaches back from its isthmus: until its cross-section stops being a tube
    around the axis no wider than TUBE_WIDENING times the isthmus (where lamina and processes join it)."""
    for back in np.arange(DEPTH_STEP_MM, MAX_BEHIND_MM, DEPTH_STEP_MM):
        centre = isthmus - back * axis
        section = _section(bone, centre, axis)
        if (section is None or section[1] > TUBE_WIDENING * width
                or np.linalg.norm(section[0] - centre) > TUBE_OFFSET_MM):
            return float(back - DEPTH_STEP_MM)
    return MAX_BEHIND_MM


def surface_crossing(bone: VertebraBone, start_local: np.ndarray, direction: np.ndarray, reach_mm: float) -> float | None:
    """Distance from ``start_local`` (inside bone) along ``direction`` to where the bone surface is first
    crossed, to within CHORD_STEP_MM by linear interpolation; None when the bone lasts beyond ``reach_mm``."""
    steps = np.arange(0.0, reach_mm, CHORD_STEP_MM)
    values = bone.occupancy_at(start_local + steps[:, None] * direction) - 0.5
    out = np.flatnonzero(values < 0)
    if not out.size:
        return None
    i = out[0]
    if i == 0:
        return 0.0
    return float(steps[i - 1] + CHORD_STEP_MM * values[i - 1] / (values[i - 1] - values[i]))


def _first_axis(bone: VertebraBone, side: float) -> tuple[np.ndarray, np.ndarray]:
    """From the view from above: the centres of the bony runs just lateral to the front half of the canal,
    row by row, fitted by a line."""
    inside = bone.occupancy >= 0.5
    projection = inside.any(axis=2)
    h, corner = bone.spacing_mm, bone.corner_local_mm
    canal_x, canal_y = bone.canal_local_mm
    start_column = int(round((canal_x - corner[0]) / h))
    front_row = int(round((bone.canal_front_y_mm - corner[1]) / h))
    back_row = int(round((canal_y - corner[1]) / h))  # pedicles flank the front half of the canal
    step = 1 if side > 0 else -1
    rows, centres, runs = [], [], []
    for row in range(max(front_row, 0), min(back_row, projection.shape[1] - 1) + 1):
        line = projection[start_column::step, row]
        bony = np.flatnonzero(line)
        if not bony.size or bony[0] == 0:  # no bone beside the canal, or not beside the canal at all
            continue
        first = bony[0]
        gaps = np.flatnonzero(~line[first:])
        last = first + (gaps[0] if gaps.size else line.size - first) - 1
        rows.append(row)
        centres.append(corner[0] + h * (start_column + step * (first + last) / 2))
        runs.append((last - first + 1) * h)
    if len(rows) < 3:
        raise VertebraError("no pedicle found beside the canal")
    rows, centres, runs = np.array(rows), np.array(centres), np.array(runs)
    narrowest = int(np.argmin(runs))
    slope = np.polyfit(corner[1] + h * rows, centres, 1)[0]
    axis = -np.array([slope, 1.0, 0.0]) / np.hypot(slope, 1.0)
    column = int(round((centres[narrowest] - corner[0]) / h))
    heights = np.flatnonzero(inside[column, rows[narrowest], :])
    z = corner[2] + h * (heights.mean() if heights.size else (inside.shape[2] - 1) / 2)
    return np.array([centres[narrowest], corner[1] + h * rows[narrowest], z]), axis


def _section(bone: VertebraBone, point: np.ndarray, axis: np.ndarray):
    """The pedicle's cross-section through ``point`` perpendicular to ``axis``: (centroid, width, height),
    or None when no bone is there or the section runs out of the window (not a pedicle)."""
    across = np.cross([0.0, 0.0, 1.0], axis)
    across /= np.linalg.norm(across)
    upward = np.cross(axis, across)
    offsets = np.arange(-SECTION_HALF_MM, SECTION_HALF_MM + 1e-9, SECTION_STEP_MM)
    a, b = np.meshgrid(offsets, offsets, indexing="ij")
    plane = point + a[..., None] * across + b[..., None] * upward
    bony = bone.occupancy_at(plane) >= 0.5
    pieces, count = ndimage.label(bony)
    if not count:
        return None
    middle = len(offsets) // 2
    piece = pieces[middle, middle]
    if not piece:
        cells = np.argwhere(bony)
        nearest = cells[np.argmin(np.sum((cells - middle) ** 2, axis=1))]
        if np.hypot(*(nearest - middle)) * SECTION_STEP_MM > 4.0:
            return None
        piece = pieces[tuple(nearest)]
    cells = np.argwhere(pieces == piece)
    if cells.min() == 0 or cells.max() == len(offsets) - 1:
        return None
    da, db = offsets[cells].mean(axis=0)
    centroid = point + da * across + db * upward
    width = _chord(bone, centroid, across)
    height = _chord(bone, centroid, upward)
    if width is None or height is None:
        return None
    return centroid, width, height


def _chord(bone: VertebraBone, centre: np.ndarray, direction: np.ndarray) -> float | None:
    ahead = surface_crossing(bone, centre, direction, SECTION_HALF_MM)
    behind = surface_crossing(bone, centre, -direction, SECTION_HALF_MM)
    if ahead is None or behind is None:
        return None
    return ahead + behind


def _line_direction(points: np.ndarray, previous: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    return direction if direction @ previous >= 0 else -direction
