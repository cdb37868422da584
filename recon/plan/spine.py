"""``plan_spine``: pedicle-screw trajectories for every thoracic and lumbar vertebra in a label map.

Per vertebra and side: the vertebra's own frame (``recon.plan.vertebra``), the pedicle's isthmus and axis
(``recon.plan.pedicle``), a trajectory along that axis through the isthmus centre, entering where the
axis leaves the posterior cortex; the catalogue's largest diameter within ``diameter_fraction`` of the
isthmus width (or, where that screw would breach the cortex, the largest thinner one that stays in bone) and
its longest length that keeps the tip ``tip_margin_mm`` behind the far cortex; then the safety figures
(``recon.plan.safety``). Two screws of one level that would touch are shortened together.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from recon.anatomy import VERTEBRA_PREFIX
from recon.geometry import Grid
from recon.plan.implants import ScrewCatalogue, load_screw_catalogue
from recon.plan.pedicle import Pedicle, find_pedicle, surface_crossing
from recon.plan.safety import DistanceField, screw_safety, segment_distance, tip_inside
from recon.plan.vertebra import VertebraBone, VertebraError, vertebra_bone
from recon.volume import LabelMap, Volume, label_bounding_boxes, largest_piece

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0"
PLANNED_LEVELS = tuple(f"T{n}" for n in range(1, 13)) + tuple(f"L{n}" for n in range(1, 6))
SIDES = {"left": 1.0, "right": -1.0}
REACH_MM = 120.0
CROP_MARGIN_VOXELS = 3
MIN_VOLUME_ML = 3.0
USUAL_TRANSVERSE_DEG = (-5.0, 40.0)  # pedicles converge (about 30 degrees at L5); 5 of divergence is slack
USUAL_SAGITTAL_DEG = 25.0
FIELD_MARGIN_MM = 12.0  # the signed distance around a trajectory reaches this far (screw radius + breach)


@dataclass(frozen=True)
class Screw:
    """One planned (or refused) screw; positions in LPS mm, angles in the vertebra's own frame."""

    vertebra: str
    side: str
    status: str  # "planned" or "not_plannable"
    reason: str | None = None
    entry_lps_mm: list[float] | None = None
    tip_lps_mm: list[float] | None = None
    diameter_mm: float | None = None
    length_mm: float | None = None
    isthmus_width_mm: float | None = None
    isthmus_center_lps_mm: list[float] | None = None
    min_cortex_distance_mm: float | None = None
    breach_mm: float | None = None
    grade: str | None = None
    breach_direction: str | None = None
    transverse_angle_deg: float | None = None
    sagittal_angle_deg: float | None = None

    @property
    def level(self) -> str:
        return self.vertebra.removeprefix(VERTEBRA_PREFIX)

    @property
    def title(self) -> str:
        """``L4 left 6.5x45``: how a surgeon names the screw."""
        size = f" {self.diameter_mm:g}x{self.length_mm:g}" if self.status == "planned" else " not plannable"
        return f"{self.level} {self.side}{size}"


@dataclass(frozen=True)
class SpinePlan:
    screws: list[Screw]
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "coordinate_system": "LPS", "units": "mm",
                "screws": [asdict(screw) for screw in self.screws], "warnings": list(self.warnings),
                "options": dict(self.options)}

    @classmethod
    def from_json(cls, data: dict) -> SpinePlan:
        return cls([Screw(**screw) for screw in data["screws"]], list(data.get("warnings", [])),
                   dict(data.get("options", {})))

    @property
    def planned(self) -> list[Screw]:
        return [screw for screw in self.screws if screw.status == "planned"]


def plan_spine(labels: LabelMap, *, ct: Volume | None = None, catalogue: ScrewCatalogue | None = None,
               diameter_fraction: float = 0.8, tip_margin_mm: float = 3.0) -> SpinePlan:
    """Plan left and right pedicle screws for every vertebra T1-L5 named in ``labels``.

    ``catalogue`` gives the sizes (default: recon's generic catalogue); the diameter is the largest not
    exceeding ``diameter_fraction`` of the isthmus width; the length the longest that keeps the tip
    ``tip_margin_mm`` behind the far cortex. ``ct`` is accepted for provenance only: the plan is computed
    from the labels. Vertebrae that cannot be planned get a screw entry with status ``not_plannable`` and
    the reason.
    """
    if not 0 < diameter_fraction <= 1:
        raise ValueError(f"diameter_fraction must be in (0, 1], got {diameter_fraction}")
    if tip_margin_mm < 0:
        raise ValueError(f"tip_margin_mm must not be negative, got {tip_margin_mm}")
    catalogue = catalogue or load_screw_catalogue()
    boxes = label_bounding_boxes(labels.labels)
    levels = _levels(labels, boxes)
    centroids = {level: _centroid(labels, index, boxes[index]) for level, index in levels.items()}
    screws, warnings = [], []
    for level, index in levels.items():
        level_screws = _plan_level(labels, index, boxes[index], level, _up_hint(level, centroids), catalogue,
                                   diameter_fraction, tip_margin_mm)
        screws += level_screws
    warnings += _collisions(screws)
    for screw in screws:
        rule = catalogue.largest_diameter(diameter_fraction * (screw.isthmus_width_mm or 0.0))
        if screw.status == "planned" and screw.diameter_mm < rule:
            warnings.append(f"{screw.title}: {screw.diameter_mm:g} mm rather than the {rule:g} mm that the isthmus "
                            "width allows, to stay in bone along the trajectory")
        if screw.status == "planned" and screw.grade != "A":
            warnings.insert(0, f"{screw.title}: grade {screw.grade} breach of {screw.breach_mm:.1f} mm "
                               f"({screw.breach_direction}); review before use")
        if screw.status == "planned" and _unusual_angles(screw):
            warnings.append(f"{screw.title}: unusual angles ({screw.transverse_angle_deg:.0f} deg transverse, "
                            f"{screw.sagittal_angle_deg:.0f} deg sagittal); check the trajectory and the label")
    options = {"catalogue": catalogue.source, "diameter_fraction": diameter_fraction, "tip_margin_mm": tip_margin_mm,
               "ct_given": ct is not None}
    return SpinePlan(screws, warnings, options)


def _unusual_angles(screw: Screw) -> bool:
    """Angles no lumbar pedicle has: a transverse angle outside ``USUAL_TRANSVERSE_DEG`` (pedicles converge)
    or a sagittal tilt beyond ``USUAL_SAGITTAL_DEG``; on a planned screw they point at a wrong label."""
    low, high = USUAL_TRANSVERSE_DEG
    return not low <= screw.transverse_angle_deg <= high or abs(screw.sagittal_angle_deg) > USUAL_SAGITTAL_DEG


def _levels(labels: LabelMap, boxes: dict) -> dict[str, int]:
    """Plannable vertebra names present in the label map (``boxes`` holds its ids), cranial to caudal, with
    their label ids."""
    by_name = {name: index for index, name in labels.names.items() if index in boxes}
    return {f"{VERTEBRA_PREFIX}{level}": by_name[f"{VERTEBRA_PREFIX}{level}"] for level in PLANNED_LEVELS
            if f"{VERTEBRA_PREFIX}{level}" in by_name}


def _centroid(labels: LabelMap, index: int, box) -> np.ndarray:
    cells = np.argwhere(labels.labels[box] == index) + [axis.start for axis in box]
    return labels.grid.index_to_lps(cells.mean(axis=0))


def _up_hint(level: str, centroids: dict[str, np.ndarray]) -> np.ndarray:
    """The spine's superior direction at ``level``: from the next vertebra below to the next above."""
    names = list(centroids)
    at = names.index(level)
    above, below = centroids[names[max(at - 1, 0)]], centroids[names[min(at + 1, len(names) - 1)]]
    direction = above - below
    if np.linalg.norm(direction) < 1.0 or direction[2] <= 0:
        return np.array([0.0, 0.0, 1.0])
    return direction / np.linalg.norm(direction)


def _plan_level(labels: LabelMap, index: int, box, level: str, up_hint: np.ndarray, catalogue: ScrewCatalogue,
                fraction: float, margin: float) -> list[Screw]:
    reason = _cut_off(labels, index, box)
    bone = None
    if reason is None:
        mask, grid = _crop(labels, index, box)
        volume_ml = mask.sum() * float(np.prod(grid.spacing_mm)) / 1000
        if volume_ml < MIN_VOLUME_ML:
            reason = f"label too small to trust ({volume_ml:.1f} ml)"
        else:
            try:
                bone = vertebra_bone(mask, grid, up_hint_lps=up_hint)
            except VertebraError as err:
                reason = f"label too damaged to trust: {err}"
    if bone is None:
        return [Screw(level, side, "not_plannable", reason) for side in SIDES]
    planned = {side: _plan_side(bone, level, side, catalogue, fraction, margin) for side in SIDES}
    return _separate(bone, planned, catalogue)


def _cut_off(labels: LabelMap, index: int, box) -> str | None:
    """Why the level is cut off by the field of view (its label meets the image's top or bottom), or None."""
    shape = labels.grid.shape
    touching = []
    for axis in range(3):
        for edge in (0, shape[axis] - 1):
            if box[axis].start <= edge < box[axis].stop:
                face = [slice(None)] * 3
                face[axis] = edge
                if np.any(labels.labels[tuple(face)] == index):
                    touching.append(labels.grid.direction_matrix[:, axis] * (1 if edge else -1))
    for outward in touching:
        if abs(outward[2]) >= 0.7:
            return "cut off by the field of view (the label meets the image's " + \
                ("top)" if outward[2] > 0 else "bottom)")
    return None


def _crop(labels: LabelMap, index: int, box):
    start = [max(0, axis.start - CROP_MARGIN_VOXELS) for axis in box]
    stop = [min(n, axis.stop + CROP_MARGIN_VOXELS) for n, axis in zip(labels.grid.shape, box)]
    mask = largest_piece(labels.labels[tuple(slice(a, b) for a, b in zip(start, stop))] == index)
    grid = labels.grid
    origin = grid.index_to_lps(np.asarray(start, float))
    return mask, Grid(mask.shape, grid.spacing_mm, tuple(origin), grid.direction)


@dataclass(frozen=True)
class _Trajectory:
    """What a screw's size can change without moving it: the pedicle, entry point and graded stretch."""

    pedicle: Pedicle
    entry_local: np.ndarray
    graded_from_mm: float
    distance: DistanceField  # the bone's signed distance around the whole trajectory


def _plan_side(bone: VertebraBone, level: str, side: str, catalogue: ScrewCatalogue, fraction: float,
               margin: float) -> tuple[Screw, _Trajectory | None]:
    sign = SIDES[side]
    try:
        pedicle = find_pedicle(bone, sign)
    except VertebraError as err:
        return Screw(level, side, "not_plannable", f"label too damaged to trust: {err} on the {side} side"), None
    width = round(pedicle.width_mm, 2)
    diameter = catalogue.largest_diameter(fraction * pedicle.width_mm)
    if diameter is None:
        smallest = catalogue.diameters_mm[0]
        return Screw(level, side, "not_plannable",
                     f"pedicle isthmus {width:.1f} mm wide: narrower than the smallest screw allows "
                     f"({smallest:g} mm at {fraction:.0%} of the width)", isthmus_width_mm=width,
                     isthmus_center_lps_mm=_lps(bone, pedicle.isthmus_local_mm)), None
    behind = surface_crossing(bone, pedicle.isthmus_local_mm, -pedicle.axis_local, REACH_MM)
    ahead = surface_crossing(bone, pedicle.isthmus_local_mm, pedicle.axis_local, REACH_MM)
    if behind is None or ahead is None:
        return Screw(level, side, "not_plannable",
                     "the trajectory does not leave the bone; label too damaged to trust"), None
    entry = pedicle.isthmus_local_mm - behind * pedicle.axis_local
    far = entry + (behind + ahead) * pedicle.axis_local
    distance = bone.distance_field(np.minimum(entry, far) - FIELD_MARGIN_MM, np.maximum(entry, far) + FIELD_MARGIN_MM)
    trajectory = _Trajectory(pedicle, entry, max(0.0, behind - pedicle.behind_isthmus_mm), distance)
    screw = _fitting_screw(bone, level, side, trajectory, catalogue, diameter, behind + ahead - margin)
    if screw is None:
        return Screw(level, side, "not_plannable",
                     f"no catalogue length fits: {behind + ahead:.0f} mm of bone along the trajectory, a "
                     f"{margin:g} mm tip margin, and the whole tip inside the bone",
                     isthmus_width_mm=width), None
    return screw, trajectory


def _fitting_screw(bone: VertebraBone, level: str, side: str, trajectory: _Trajectory, catalogue: ScrewCatalogue,
                   diameter: float, limit_mm: float) -> Screw | None:
    """The screw of the rule's ``diameter``; where it would breach the cortex, the largest thinner catalogue
    screw that stays in bone (a surgeon downsizes rather than breach), or failing that the one that breaches
    least. None when no length fits."""
    candidates = []
    for size in sorted((d for d in catalogue.diameters_mm if d <= diameter), reverse=True):
        length = _longest_inside(trajectory.distance, catalogue, trajectory.entry_local,
                                 trajectory.pedicle.axis_local, limit_mm, size)
        if length is None:
            continue
        screw = _screw(bone, level, side, trajectory, size, length)
        if screw.grade == "A":
            return screw
        candidates.append(screw)
    return min(candidates, key=lambda screw: screw.breach_mm, default=None)


def _longest_inside(distance: DistanceField, catalogue: ScrewCatalogue, entry: np.ndarray, axis: np.ndarray,
                    limit_mm: float, diameter: float) -> float | None:
    """The longest catalogue length within ``limit_mm`` whose whole tip stays inside the bone."""
    for length in reversed(catalogue.lengths_mm):
        if length <= limit_mm + 1e-9 and tip_inside(distance, entry, axis, length, diameter):
            return length
    return None


def _screw(bone: VertebraBone, level: str, side: str, trajectory: _Trajectory, diameter: float,
           length: float) -> Screw:
    pedicle, entry = trajectory.pedicle, trajectory.entry_local
    axis = pedicle.axis_local
    safety = screw_safety(trajectory.distance, entry, axis, length, diameter, SIDES[side],
                          graded_from_mm=trajectory.graded_from_mm)
    medial, anterior = -SIDES[side] * axis[0], -axis[1]
    return Screw(
        level, side, "planned", None, _lps(bone, entry), _lps(bone, entry + length * axis), diameter, length,
        round(pedicle.width_mm, 2), _lps(bone, pedicle.isthmus_local_mm), safety.min_cortex_distance_mm,
        safety.breach_mm, safety.grade, safety.breach_direction,
        round(float(np.degrees(np.arctan2(medial, anterior))), 2),
        round(float(np.degrees(np.arcsin(np.clip(axis[2], -1, 1)))), 2))


def _separate(bone: VertebraBone, planned: dict[str, tuple[Screw, _Trajectory | None]],
              catalogue: ScrewCatalogue) -> list[Screw]:
    """Shorten both screws of a level, one catalogue step at a time, while they would touch and both would
    still reach past the back of their pedicles (else they stay as they are, and the plan warns that they
    touch)."""
    (left, left_path), (right, right_path) = planned["left"], planned["right"]
    while left.status == right.status == "planned" and _gap(left, right) <= 0:
        shorter = [catalogue.shorter_than(s.length_mm) for s in (left, right)]
        if None in shorter or shorter[0] <= left_path.graded_from_mm or shorter[1] <= right_path.graded_from_mm:
            break
        left = _screw(bone, left.vertebra, "left", left_path, left.diameter_mm, shorter[0])
        right = _screw(bone, right.vertebra, "right", right_path, right.diameter_mm, shorter[1])
    return [left, right]


def _gap(a: Screw, b: Screw) -> float:
    """Clearance between two planned screws' surfaces in mm (negative when they overlap)."""
    distance = segment_distance(*(np.asarray(p) for p in (a.entry_lps_mm, a.tip_lps_mm, b.entry_lps_mm, b.tip_lps_mm)))
    return distance - (a.diameter_mm + b.diameter_mm) / 2


def _collisions(screws: list[Screw]) -> list[str]:
    planned = [s for s in screws if s.status == "planned"]
    warnings = []
    for i, a in enumerate(planned):
        for b in planned[i + 1:]:
            gap = _gap(a, b)
            if gap <= 0:
                warnings.append(f"{a.title} and {b.title} touch ({-gap:.1f} mm overlap)")
    return warnings


def _lps(bone: VertebraBone, local: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in bone.to_lps(local)]

