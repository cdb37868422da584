"""The pedicle's axis and its isthmus (narrowest cross-section).

A first guess comes from the view from above the pedicle's slab (the axial slices in which bone flanks the
front half of the canal, leaving out the articular processes that stand above and below it): lateral to the
canal, the pedicle is the bony run between canal and outside, and the centres of those runs line up along it.
The axis is then the line that keeps deepest inside the bone over 12 mm around that guess (the axis of the
widest cylinder the pedicle holds), and that is still in bone 8-20 mm ahead (a pedicle leads into the body; at
3 mm the pedicle and the transverse process can merge into one slab whose deepest line runs sideways), found
by Nelder-Mead over the line's offset and direction from three starting headings (tilting the line out of the
endplates' plane costs TILT_COST_MM of depth a radian: pedicles run close to that plane, and in a pedicle
taller than wide, or on 3 mm labels where one voxel more or less moves the deepest line, depth alone hardly
tells the tilt), then straightened onto the middles of the pedicle's cross-sections (the centres of the
ellipses fitted to their outlines, which voxel steps move far less than the middles of single chords).
The isthmus centre is where that line crosses the first guess's level (mid-pedicle); its width and height are
those of the ellipse fitted to the pedicle's outline in each cross-section (rays every 10 degrees, each to a
twentieth of a millimetre), the median over 6 mm of the line: a fit over the whole outline averages out the
voxel steps that make single chords ragged. A cross-section whose left-right chord is longer than 1.5 times
the diameter of the widest cylinder that fits at its centre has run on into a process and is left out; where
all are, that diameter is the width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from recon.plan.vertebra import VertebraBone, VertebraError

SECTION_HALF_MM = 14.0
CENTRING_ROUNDS = 2
DEPTH_STEP_MM = 0.75
ISTHMUS_HALF_MM = 3.0  # the isthmus width is the median over this much on either side of its middle
CHORD_STEP_MM = 0.05
COARSE_STEPS = 5  # surfaces are first bracketed every this many chord steps
MIN_CANAL_HALF_MM = 4.0  # the canal is wider than 8 mm where pedicles flank it
PEDICLE_ROW_SHARE = 0.75  # a slice through the pedicle has bone beside the canal's front half in this share of rows
CORRIDOR_HALF_MM = 6.0  # the stretch of the line, either side of the first guess, kept deep in bone
FIELD_HALF_MM = 20.0
AHEAD_MM = (8.0, 20.0)  # a pedicle leads into the body: this far ahead of the first guess, the line is in bone
MAX_SHIFT_MM = 6.0  # how far the corridor may move from the first guess before it pays
TILT_COST_MM = 1.0  # what tilting the corridor a radian out of the endplates' plane costs, in mm of depth
FIRST_YAWS_DEG = (-15.0, 0.0, 15.0)
CENTRE_HALF_MM = 6.0
CHORD_LIMIT = 1.5  # a chord longer than this many inscribed diameters has run into a process
OUTLINE_STEP_DEG = 10.0
ELLIPSE_OUTLIER = 1.3  # a ray reaching this much beyond the chords' ellipse has run into a process
CENTRE_ROUNDS = 3
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
    start, first_axis = _first_axis(bone, side)
    distance = bone.distance_field(start - FIELD_HALF_MM, start + FIELD_HALF_MM)
    point, axis = _centre_line(bone, *_widest_corridor(distance, start, first_axis), distance)
    if axis[1] > -MIN_FORWARD or abs(axis[2]) > MAX_TILT:
        raise VertebraError("no pedicle found (the bone beside the canal does not lead into the body)")
    isthmus = point + ((start - point) @ axis) * axis  # level with the first guess, mid-pedicle
    along = np.arange(-ISTHMUS_HALF_MM, ISTHMUS_HALF_MM + 1e-9, DEPTH_STEP_MM)
    inscribed = -2.0 * float(distance(isthmus[None])[0])
    if inscribed <= 0:
        raise VertebraError("no pedicle found (the corridor leaves the bone)")
    outlines = [_outline(bone, _section(bone, isthmus + t * axis, axis), axis, distance) for t in along]
    outlines = [outline for outline in outlines if outline]
    if outlines:
        width = float(np.median([outline[1] for outline in outlines]))
        height = float(np.median([outline[2] for outline in outlines]))
    else:  # every chord runs on into a process: the widest inscribed cylinder is the measure
        width = height = inscribed
    return Pedicle(isthmus, axis, width, height, _length_behind(bone, isthmus, axis, width))


def _centre_line(bone: VertebraBone, point: np.ndarray, axis: np.ndarray, distance) -> tuple[np.ndarray, np.ndarray]:
    """Straighten the corridor onto the pedicle's centre line: the line through the middles of its
    cross-sections (which the deepest corridor leaves loose up and down in a pedicle taller than wide), each
    the centre of the ellipse fitted to its outline, or of its chords where it runs into a process."""
    for _ in range(CENTRE_ROUNDS):
        centres = [_middle(bone, point + t * axis, axis, distance)
                   for t in np.arange(-CENTRE_HALF_MM, CENTRE_HALF_MM + 1e-9, DEPTH_STEP_MM)]
        found = np.array([centre for centre in centres if centre is not None])
        if len(found) < len(centres) // 2:
            break
        point = found.mean(axis=0)
        direction = np.linalg.svd(found - point, full_matrices=False)[2][0]
        axis = direction if direction @ axis >= 0 else -direction
    return point, axis


def _middle(bone: VertebraBone, point: np.ndarray, axis: np.ndarray, distance) -> np.ndarray | None:
    """The cross-section's centre: its fitted ellipse's, or its chords' where it runs into a process."""
    section = _section(bone, point, axis)
    outline = _outline(bone, section, axis, distance)
    if outline is not None:
        return outline[0]
    return None if section is None else section[0]


def _widest_corridor(distance, start: np.ndarray, first_axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The line near the first guess whose CORRIDOR_HALF_MM either side of the guess's plane stays deepest
    inside the bone, and whose stretch AHEAD_MM further on is in bone: the axis of the widest screw the pedicle
    holds. Returns a point on it and its unit direction (into the body)."""
    across = np.cross(first_axis, [0.0, 0.0, 1.0])
    across /= np.linalg.norm(across)
    upward = np.cross(across, first_axis)
    depths = np.linspace(-CORRIDOR_HALF_MM, CORRIDOR_HALF_MM, 25)
    ahead = np.linspace(*AHEAD_MM, 7)

    def line(parameters):
        u, v, yaw, pitch = parameters
        heading = np.cos(yaw) * first_axis + np.sin(yaw) * across
        return start + u * across + v * upward, np.cos(pitch) * heading + np.sin(pitch) * upward

    def cost(parameters):
        point, direction = line(parameters)
        shift = np.hypot(parameters[0], parameters[1])
        outside_ahead = max(0.0, float(distance(point + ahead[:, None] * direction).max()))
        tilt = abs(float(np.arcsin(np.clip(direction[2], -1.0, 1.0))))
        return float(distance(point + depths[:, None] * direction).max() + max(0.0, shift - MAX_SHIFT_MM)
                     + outside_ahead + TILT_COST_MM * tilt)

    simplex_steps = np.diag([2.0, 2.0, np.radians(8), np.radians(8)])
    results = []
    for yaw in np.radians(FIRST_YAWS_DEG):
        origin = np.array([0.0, 0.0, yaw, 0.0])
        results.append(optimize.minimize(cost, origin, method="Nelder-Mead",
                                         options={"initial_simplex": np.vstack([origin, origin + simplex_steps]),
                                                  "xatol": 0.01, "fatol": 0.005, "maxiter": 400}))
    return line(min(results, key=lambda result: result.fun).x)


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


def surface_crossing(bone: VertebraBone, start_local: np.ndarray, direction: np.ndarray,
                     reach_mm: float) -> float | None:
    """Distance from ``start_local`` (inside bone) along ``direction`` to where the bone surface is first
    crossed, to within CHORD_STEP_MM by linear interpolation; None when the bone lasts beyond ``reach_mm``."""
    found = surface_crossings(bone, start_local, np.asarray(direction)[None], np.array([reach_mm]))[0]
    return None if np.isnan(found) else float(found)


def surface_crossings(bone: VertebraBone, start_local: np.ndarray, directions: np.ndarray,
                      reaches_mm: np.ndarray) -> np.ndarray:
    """``surface_crossing`` along each of ``directions`` (N, 3) with its own reach, sampled together (every
    COARSE_STEPS chord steps, then finely in the step where the surface lies): the distances, NaN where the
    bone lasts beyond the reach."""
    coarse = COARSE_STEPS * CHORD_STEP_MM
    steps = np.arange(0.0, float(np.max(reaches_mm)), coarse)
    outside = _outside(bone, start_local, directions, steps, reaches_mm)
    crossed = outside.any(axis=1)
    first = np.argmax(outside, axis=1)
    found = np.where(crossed, 0.0, np.nan)
    rays = np.flatnonzero(crossed & (first > 0))
    if rays.size:
        fine = steps[first[rays] - 1][:, None] + CHORD_STEP_MM * np.arange(COARSE_STEPS + 1)
        values = bone.occupancy_at(start_local + fine[..., None] * directions[rays, None, :]) - 0.5
        after = np.argmax(values < 0, axis=1)  # the coarse step's end is outside, so there is one
        index = np.arange(rays.size)
        inside_value, outside_value = values[index, after - 1], values[index, after]
        found[rays] = fine[index, after - 1] + CHORD_STEP_MM * inside_value / (inside_value - outside_value)
    return found


def _outside(bone: VertebraBone, start_local: np.ndarray, directions: np.ndarray, steps: np.ndarray,
             reaches_mm: np.ndarray) -> np.ndarray:
    """Whether each of ``steps`` along each direction is outside the bone (never beyond the direction's reach)."""
    outside = bone.occupancy_at(start_local + steps[None, :, None] * directions[:, None, :]) < 0.5
    return outside & (steps[None, :] < np.asarray(reaches_mm)[:, None])


def _first_axis(bone: VertebraBone, side: float) -> tuple[np.ndarray, np.ndarray]:
    """From the view from above the pedicle's slab (``_pedicle_slab``): the centres of the bony runs just
    lateral to the front half of the canal, row by row, fitted by a line."""
    inside = bone.occupancy >= 0.5
    h, corner = bone.spacing_mm, bone.corner_local_mm
    canal_x, canal_y = bone.canal_local_mm
    start_column = int(round((canal_x - corner[0]) / h))
    front_row = max(int(round((bone.canal_front_y_mm - corner[1]) / h)), 0)
    # pedicles flank the canal's front half, which is at least MIN_CANAL_HALF_MM deep even where the arch
    # seen from above hides much of the canal and so moves its centre forward
    back_y = max(canal_y, bone.canal_front_y_mm + MIN_CANAL_HALF_MM)
    back_row = min(int(round((back_y - corner[1]) / h)), inside.shape[1] - 1)
    step = 1 if side > 0 else -1
    rows = np.arange(front_row, back_row + 1)
    kept = []
    if rows.size >= 3:  # fewer rows than that: no canal front to flank
        slab = _pedicle_slab(inside, start_column, step, rows, h)
        runs = [(row, _run_beside_canal(inside[start_column::step, row, slab].any(axis=1), h)) for row in rows]
        kept = [(row, run) for row, run in runs if run is not None]
    if len(kept) < 3:
        raise VertebraError("no pedicle found beside the canal")
    rows = np.array([row for row, _ in kept])
    centres = np.array([corner[0] + h * (start_column + step * (first + last) / 2) for _, (first, last) in kept])
    middle = len(rows) // 2
    slope = np.polyfit(corner[1] + h * rows, centres, 1)[0]
    axis = -np.array([slope, 1.0, 0.0]) / np.hypot(slope, 1.0)
    column = int(round((centres[middle] - corner[0]) / h))
    heights = slab.start + np.flatnonzero(inside[column, rows[middle], slab])
    z = corner[2] + h * (heights.mean() if heights.size else (slab.start + slab.stop - 1) / 2)
    return np.array([centres[middle], corner[1] + h * rows[middle], z]), axis


def _run_beside_canal(line: np.ndarray, h: float) -> tuple[int, int] | None:
    """The first and last voxel of the first bony run along ``line`` (outward from the canal's middle), or
    None where there is no bone, or bone closer than MIN_CANAL_HALF_MM (no canal there)."""
    bony = np.flatnonzero(line)
    if not bony.size or bony[0] * h < MIN_CANAL_HALF_MM:
        return None
    gaps = np.flatnonzero(~line[bony[0]:])
    return int(bony[0]), int(bony[0] + (gaps[0] if gaps.size else line.size - bony[0]) - 1)


def _pedicle_slab(inside: np.ndarray, start_column: int, step: int, rows: np.ndarray, h: float) -> slice:
    """The axial slices where the pedicle is: the tallest run of slices in which bone lies beside the canal in
    at least PEDICLE_ROW_SHARE of the rows flanking its front half (above and below it the articular processes
    stand apart from the body). All slices when there is no such run."""
    beside = np.array([np.mean([_run_beside_canal(inside[start_column::step, row, k], h) is not None
                                for row in rows]) >= PEDICLE_ROW_SHARE for k in range(inside.shape[2])])
    runs, count = ndimage.label(beside)
    if not count:
        return slice(0, inside.shape[2])
    tallest = 1 + int(np.argmax(ndimage.sum_labels(beside, runs, index=np.arange(1, count + 1))))
    slices = np.flatnonzero(runs == tallest)
    return slice(int(slices[0]), int(slices[-1]) + 1)


def _section(bone: VertebraBone, point: np.ndarray, axis: np.ndarray):
    """The pedicle's cross-section through ``point`` perpendicular to ``axis``, found by chords: the point
    is moved to the middle of its left-right chord and of its up-down chord, twice. Returns (centre,
    width, height), or None when the point is not in bone or a chord does not end within the window."""
    across, upward = _section_axes(axis)
    directions = np.array([across, -across, upward, -upward])
    reaches = np.full(len(directions), SECTION_HALF_MM)
    centre = point
    for centring in range(CENTRING_ROUNDS + 1):
        if centring < CENTRING_ROUNDS and bone.occupancy_at(centre) < 0.5:
            return None
        ends = surface_crossings(bone, centre, directions, reaches)
        if np.isnan(ends).any():
            return None
        if centring == CENTRING_ROUNDS:
            return centre, float(ends[0] + ends[1]), float(ends[2] + ends[3])
        centre = centre + (ends[0] - ends[1]) / 2 * across + (ends[2] - ends[3]) / 2 * upward


def _outline(bone: VertebraBone, section, axis: np.ndarray, distance):
    """Centre, width and height of the ellipse fitted to the pedicle's outline in ``section`` (as
    ``_section`` returns it, or None): where rays every OUTLINE_STEP_DEG from its centre leave the bone. Rays
    that run on into a process (beyond ELLIPSE_OUTLIER times the chords' ellipse) are left out, and so is the
    whole section when its left-right chord is longer than CHORD_LIMIT times the inscribed diameter at its
    centre."""
    if section is None:
        return None
    centre, chord_width, chord_height = section
    if not (chord_width > 0 and chord_height > 0):  # a degenerate section: no outline to fit
        return None
    if chord_width > CHORD_LIMIT * -2.0 * float(distance(centre[None])[0]):
        return None
    across, upward = _section_axes(axis)
    angles = np.radians(np.arange(0.0, 360.0, OUTLINE_STEP_DEG))
    expected = 1.0 / np.hypot(np.cos(angles) / (chord_width / 2), np.sin(angles) / (chord_height / 2))
    directions = np.cos(angles)[:, None] * across + np.sin(angles)[:, None] * upward
    reach = surface_crossings(bone, centre, directions, ELLIPSE_OUTLIER * expected)
    kept = ~np.isnan(reach)
    if kept.sum() < len(angles) // 2:
        return None
    x, z = reach[kept] * np.cos(angles[kept]), reach[kept] * np.sin(angles[kept])
    (a, b, c, d), *_ = np.linalg.lstsq(np.column_stack([x * x, z * z, x, z]), np.ones_like(x), rcond=None)
    if a <= 0 or b <= 0:
        return None
    scale = 1.0 + c * c / (4 * a) + d * d / (4 * b)
    middle = centre - c / (2 * a) * across - d / (2 * b) * upward
    return middle, 2.0 * float(np.sqrt(scale / a)), 2.0 * float(np.sqrt(scale / b))


def _section_axes(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left-right and up-down unit vectors across the pedicle, perpendicular to its ``axis``."""
    across = np.cross([0.0, 0.0, 1.0], axis)
    across /= np.linalg.norm(across)
    return across, np.cross(axis, across)
