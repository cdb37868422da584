"""Safety figures of a screw against the bone it sits in: cortex margin, breach depth, its Gertzbein-Robbins
grade and direction, and whether two screws touch.

The screw is a cylinder from its entry point to its tip. Its surface is sampled every 0.5 mm along the axis
and every 15 degrees around it, plus its tip disc; the bone's signed distance at each sample (positive
outside the bone) gives the margin (the smallest distance inside) and the breach (the largest outside).
Grading starts where the pedicle starts (Gertzbein and Robbins grade the pedicle and body): the stretch
between the entry point and the back of the pedicle crosses the processes and lamina where the screw's
head seats, and is not graded; at least its first ``radius + 1 mm`` is always skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DistanceField = Callable[[np.ndarray], np.ndarray]  # signed distance to the bone (mm, negative inside)

AXIAL_STEP_MM = 0.5
AROUND = 24
SEAT_EXTRA_MM = 1.0
BREACH_RESOLUTION_MM = 0.25  # below this the measured breach is within the bone surface's uncertainty
GRADE_LIMITS_MM = ((2.0, "B"), (4.0, "C"), (6.0, "D"))


@dataclass(frozen=True)
class Safety:
    min_cortex_distance_mm: float
    breach_mm: float
    grade: str
    breach_direction: str | None


def gertzbein_robbins_grade(breach_mm: float) -> str:
    """A: no breach; B: under 2 mm; C: 2 to under 4; D: 4 to under 6; E: 6 mm or more."""
    if breach_mm <= 0.0:
        return "A"
    for limit, grade in GRADE_LIMITS_MM:
        if breach_mm < limit:
            return grade
    return "E"


def screw_safety(distance: DistanceField, entry_local: np.ndarray, axis_local: np.ndarray, length_mm: float,
                 diameter_mm: float, side: float, *, graded_from_mm: float = 0.0) -> Safety:
    """Margin and breach of a screw given in the vertebra's local frame, against ``distance`` (the bone's
    signed distance over the screw's surroundings); ``side`` +1 left, -1 right;
    the screw is graded from ``graded_from_mm`` along it from the entry (the back of the pedicle) to its tip."""
    points, radial, along = screw_surface(entry_local, axis_local, length_mm, diameter_mm / 2)
    graded = along >= max(graded_from_mm, diameter_mm / 2 + SEAT_EXTRA_MM)
    depths = distance(points[graded])
    worst = int(np.argmax(depths))
    breach = float(depths[worst])
    if breach < BREACH_RESOLUTION_MM:
        return Safety(round(max(0.0, -breach), 2), 0.0, "A", None)
    direction = _direction(radial[graded][worst], along[graded][worst] >= length_mm, side)
    return Safety(0.0, round(breach, 2), gertzbein_robbins_grade(round(breach, 2)), direction)


def tip_inside(distance: DistanceField, entry_local: np.ndarray, axis_local: np.ndarray, length_mm: float,
               diameter_mm: float) -> bool:
    """Whether the whole tip disc of this screw lies inside the bone (no breach through the far cortex)."""
    points, _, along = screw_surface(entry_local, axis_local, length_mm, diameter_mm / 2)
    return bool(distance(points[along >= length_mm]).max() < BREACH_RESOLUTION_MM)


def screw_surface(entry: np.ndarray, axis: np.ndarray, length_mm: float, radius_mm: float):
    """Samples of a cylinder's side and tip disc: points, their outward radial unit vectors (zero on the
    disc) and their distance along the axis from the entry."""
    u = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    angles = np.linspace(0, 2 * np.pi, AROUND, endpoint=False)
    ring = np.outer(np.cos(angles), u) + np.outer(np.sin(angles), v)
    along = np.arange(0.0, length_mm + 1e-9, AXIAL_STEP_MM)
    side_points = entry + along[:, None, None] * axis + radius_mm * ring[None, :, :]
    disc_radii = np.linspace(0.0, radius_mm, 4)[:, None, None] * ring[None, :, :]
    disc_points = entry + length_mm * axis + disc_radii
    points = np.concatenate([side_points.reshape(-1, 3), disc_points.reshape(-1, 3)])
    radial = np.concatenate([np.broadcast_to(ring, side_points.shape).reshape(-1, 3), np.zeros((disc_points.size // 3, 3))])
    distance_along = np.concatenate([np.repeat(along, AROUND), np.full(disc_points.size // 3, length_mm)])
    return points, radial, distance_along


def _direction(radial_local: np.ndarray, at_tip: bool, side: float) -> str:
    """Where the breach points in the vertebra's frame: medial (into the canal), lateral, superior,
    inferior, or anterior (through the front of the body at the tip)."""
    if at_tip or not np.any(radial_local):
        return "anterior"
    x, _, z = radial_local
    if abs(x) >= abs(z):
        return "medial" if x * side < 0 else "lateral"
    return "superior" if z > 0 else "inferior"


def segment_distance(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray) -> float:
    """The shortest distance between segments p0-p1 and q0-q1 (any points, same frame)."""
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a, e, f = d1 @ d1, d2 @ d2, d2 @ r
    c, b = d1 @ r, d1 @ d2
    denominator = a * e - b * b
    s = np.clip((b * f - c * e) / denominator, 0.0, 1.0) if denominator > 1e-12 else 0.0
    t = (b * s + f) / e
    if t < 0.0 or t > 1.0:
        t = float(np.clip(t, 0.0, 1.0))
        s = float(np.clip((b * t - c) / a, 0.0, 1.0))
    return float(np.linalg.norm((p0 + s * d1) - (q0 + t * d2)))
