"""``plan_hip``: the acetabular cup for total hip arthroplasty, sized and oriented in the pelvis's own frame.

Per side: femoral head and acetabulum spheres (``recon.plan.pelvis``; the head refitted to its edge on the CT
when the CT is given and shows the joint space), the anterior pelvic plane frame, a
cup from the catalogue (the smallest at least as wide as the acetabulum), centred at the native centre of
rotation (optionally moved medially), its axis at the target radiographic inclination and anteversion
(Murray) relative to the APP; the operative and anatomical equivalents; bone coverage of the cup; and, with
both femurs in view, the differences between sides in leg length (lesser trochanter height in the APP frame)
and femoral offset (head centre to shaft axis).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from recon.plan import cup_angles
from recon.plan.implants import CupCatalogue, load_cup_catalogue
from recon.plan.pelvis import PelvisError, PelvisFrame, head_on_ct, joint_spheres, pelvis_frame, surface_points
from recon.volume import LabelMap, Volume

SIDES = {"left": 1.0, "right": -1.0}
REQUIRED_LABELS = ("hip_left", "hip_right", "femur_left", "femur_right")
MIN_BONE_ML = 5.0  # smaller labels are stray voxels, not a bone in view
LEWINNEK_ZONE = {"inclination_deg": (30.0, 50.0), "anteversion_deg": (5.0, 25.0)}
LEWINNEK_REFERENCE = ("Lewinnek GE et al., Dislocations after total hip-replacement arthroplasties, "
                      "J Bone Joint Surg Am 1978;60(2):217-220")
COVERAGE_DIRECTIONS = 2000
COVERAGE_GAP_MM = 2.0  # bone within this distance outside the cup's shell counts as covering it
SHAFT_BELOW_HEAD_MM = 60.0
SHAFT_IN_VIEW_MM = 40.0
LESSER_TROCHANTER_BAND_MM = (20.0, 80.0)


@dataclass(frozen=True)
class CupPlan:
    side: str
    status: str  # "planned" or "not_plannable"
    reason: str | None = None
    femoral_head_center_lps_mm: list[float] | None = None
    femoral_head_radius_mm: float | None = None
    femoral_head_fit_residual_mm: float | None = None
    femoral_head_fitted_to: str | None = None  # "ct_edge" or "label_surface"
    acetabulum_center_lps_mm: list[float] | None = None
    acetabulum_radius_mm: float | None = None
    acetabulum_fit_residual_mm: float | None = None
    cup_center_lps_mm: list[float] | None = None
    cup_axis_lps: list[float] | None = None
    cup_diameter_mm: float | None = None
    inclination_deg: float | None = None
    anteversion_deg: float | None = None
    operative_inclination_deg: float | None = None
    operative_anteversion_deg: float | None = None
    anatomical_inclination_deg: float | None = None
    anatomical_anteversion_deg: float | None = None
    coverage_pct: float | None = None
    center_shift_mm: float | None = None
    app_landmarks_lps_mm: dict[str, list[float]] | None = None


@dataclass(frozen=True)
class HipPlan:
    sides: list[CupPlan]
    comparison: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"hip": [asdict(side) for side in self.sides], "hip_comparison": dict(self.comparison),
                "hip_warnings": list(self.warnings), "hip_options": dict(self.options)}

    @classmethod
    def from_json(cls, data: dict) -> HipPlan:
        return cls([CupPlan(**side) for side in data["hip"]], dict(data.get("hip_comparison", {})),
                   list(data.get("hip_warnings", [])), dict(data.get("hip_options", {})))

    @property
    def planned(self) -> list[CupPlan]:
        return [side for side in self.sides if side.status == "planned"]


def plan_hip(labels: LabelMap, *, ct: Volume | None = None, side: str = "both", catalogue: CupCatalogue | None = None,
             inclination_deg: float = 40.0, anteversion_deg: float = 15.0, medialise_mm: float = 0.0) -> HipPlan:
    """Plan the acetabular cup on ``side`` ("left", "right" or "both") from hip and femur labels.

    The target inclination and anteversion are radiographic (Murray) relative to the anterior pelvic plane;
    a target outside Lewinnek's safe zone gets a warning, not a refusal. With ``ct`` (on any grid) the femoral
    head is refitted to its edge on the CT where the joint space shows there.
    """
    if side not in ("left", "right", "both"):
        raise ValueError(f"side must be left, right or both, got {side!r}")
    catalogue = catalogue or load_cup_catalogue()
    options = {"side": side, "catalogue": catalogue.source, "target_inclination_deg": inclination_deg,
               "target_anteversion_deg": anteversion_deg, "medialise_mm": medialise_mm, "ct_given": ct is not None}
    warnings = _zone_warnings(inclination_deg, anteversion_deg)
    ids = {name: index for index, name in labels.names.items()}
    voxel_ml = float(np.prod(labels.grid.spacing_mm)) / 1000
    counts = np.bincount(labels.labels.ravel().astype(np.int64))
    volume_ml = {name: counts[index] * voxel_ml if index < len(counts) else 0.0 for name, index in ids.items()}
    wanted = list(SIDES) if side == "both" else [side]
    missing = [name for name in REQUIRED_LABELS if volume_ml.get(name, 0.0) < MIN_BONE_ML]
    if missing:
        reason = (f"the hip planner needs both hip bones and both femurs; missing or under {MIN_BONE_ML:g} ml: "
                  f"{', '.join(missing)}")
        return HipPlan([CupPlan(s, "not_plannable", reason) for s in wanted], {}, warnings, options)
    hips = {s: surface_points(labels, ids[f"hip_{s}"]) for s in SIDES}
    femurs = {s: surface_points(labels, ids[f"femur_{s}"]) for s in SIDES}
    try:
        joints, fitted_to = {}, {}
        for s in SIDES:
            head, socket = joint_spheres(femurs[s], hips[s])
            on_ct = head_on_ct(socket, hips[s], ct) if ct is not None else None
            joints[s], fitted_to[s] = (on_ct or head, socket), "ct_edge" if on_ct else "label_surface"
        frame = pelvis_frame(hips, {s: joints[s][1].center_lps_mm for s in SIDES})
    except PelvisError as err:
        return HipPlan([CupPlan(s, "not_plannable", str(err)) for s in wanted], {}, warnings, options)
    sides = [_plan_side(labels, ids[f"hip_{s}"], s, joints[s], fitted_to[s], frame, catalogue, inclination_deg,
                        anteversion_deg, medialise_mm) for s in wanted]
    comparison = _comparison(labels, ids, joints, frame)
    return HipPlan(sides, comparison, warnings, options)


def _zone_warnings(inclination: float, anteversion: float) -> list[str]:
    low_i, high_i = LEWINNEK_ZONE["inclination_deg"]
    low_a, high_a = LEWINNEK_ZONE["anteversion_deg"]
    if low_i <= inclination <= high_i and low_a <= anteversion <= high_a:
        return []
    return [f"target cup orientation {inclination:g} deg inclination, {anteversion:g} deg anteversion lies outside "
            f"the Lewinnek safe zone (40 +/- 10, 15 +/- 10 degrees radiographic; {LEWINNEK_REFERENCE})"]


def _plan_side(labels: LabelMap, hip_index: int, side: str, joint, head_fitted_to: str, frame: PelvisFrame,
               catalogue: CupCatalogue, inclination: float, anteversion: float, medialise_mm: float) -> CupPlan:
    head, socket = joint
    diameter = catalogue.smallest_covering(2 * socket.radius_mm)
    if diameter is None:
        return CupPlan(side, "not_plannable", f"acetabulum {2 * socket.radius_mm:.0f} mm across: larger than the "
                                               f"largest cup ({catalogue.diameters_mm[-1]:g} mm)")
    lateral = SIDES[side] * frame.left
    axis = cup_angles.axis_from_radiographic(inclination, anteversion, lateral, frame.anterior, frame.superior)
    center = socket.center_lps_mm - medialise_mm * lateral
    basis = (lateral, frame.anterior, frame.superior)
    radiographic = cup_angles.radiographic(axis, *basis)
    operative, anatomical = cup_angles.operative(axis, *basis), cup_angles.anatomical(axis, *basis)
    return CupPlan(
        side, "planned", None, _list(head.center_lps_mm), round(head.radius_mm, 2), round(head.residual_mm, 2),
        head_fitted_to,
        _list(socket.center_lps_mm), round(socket.radius_mm, 2), round(socket.residual_mm, 2), _list(center),
        [round(float(v), 5) for v in axis], diameter, round(radiographic.inclination_deg, 2),
        round(radiographic.anteversion_deg, 2), round(operative.inclination_deg, 2),
        round(operative.anteversion_deg, 2), round(anatomical.inclination_deg, 2),
        round(anatomical.anteversion_deg, 2), round(_coverage(labels, hip_index, center, axis, diameter / 2), 1),
        round(float(np.linalg.norm(center - socket.center_lps_mm)), 2),
        {name: _list(point) for name, point in frame.landmarks_lps_mm.items()})


def _coverage(labels: LabelMap, hip_index: int, center: np.ndarray, axis: np.ndarray, radius: float) -> float:
    """Percent of the cup's outer hemisphere with hip bone within COVERAGE_GAP_MM outside it."""
    n = np.arange(COVERAGE_DIRECTIONS) + 0.5
    polar, azimuth = np.arccos(1 - n / COVERAGE_DIRECTIONS), np.pi * (1 + 5**0.5) * n  # even over a hemisphere
    u = np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    dome = (-np.cos(polar)[:, None] * axis + np.sin(polar)[:, None] * (np.cos(azimuth)[:, None] * u
                                                                       + np.sin(azimuth)[:, None] * v))
    probes = [center + (radius + gap) * dome for gap in np.linspace(0.0, COVERAGE_GAP_MM, 5)]
    bone = labels.labels == hip_index
    covered = np.zeros(len(dome), dtype=bool)
    for points in probes:
        index = labels.grid.lps_to_index(points).T
        covered |= ndimage.map_coordinates(bone.astype(np.float32), index, order=1, cval=0.0) >= 0.5
    return 100.0 * covered.mean()


def _comparison(labels: LabelMap, ids: dict[str, int], joints: dict, frame: PelvisFrame) -> dict:
    """Leg length and femoral offset, left minus right, when both femurs show enough shaft."""
    figures = {}
    for side, (head, _) in joints.items():
        cells = np.argwhere(labels.labels == ids[f"femur_{side}"])
        points = labels.grid.index_to_lps(cells)
        below = (head.center_lps_mm - points) @ frame.superior
        if below.max() < SHAFT_BELOW_HEAD_MM + SHAFT_IN_VIEW_MM:
            return {"reason": f"the {side} femur is not in view {SHAFT_BELOW_HEAD_MM + SHAFT_IN_VIEW_MM:g} mm below "
                              "its head: no shaft axis for leg length and offset"}
        shaft = points[below > SHAFT_BELOW_HEAD_MM]
        centre = shaft.mean(axis=0)
        direction = np.linalg.svd(shaft - centre, full_matrices=False)[2][0]
        offset = np.cross(head.center_lps_mm - centre, direction)
        band = points[(below > LESSER_TROCHANTER_BAND_MM[0]) & (below < LESSER_TROCHANTER_BAND_MM[1])]
        if not len(band):  # the label has a gap there (a network's label of a femur may)
            low, high = LESSER_TROCHANTER_BAND_MM
            return {"reason": f"the {side} femur's label has no bone {low:g}-{high:g} mm below its head, where the "
                              "lesser trochanter lies: no leg length and offset"}
        from_axis = band - centre - np.outer((band - centre) @ direction, direction)
        medial = -SIDES[side] * frame.left
        trochanter = band[np.argmax(from_axis @ medial)]
        figures[side] = {"offset_mm": float(np.linalg.norm(offset)),
                         "lesser_trochanter_height_mm": float((trochanter - head.center_lps_mm) @ frame.superior
                                                              + head.center_lps_mm @ frame.superior)}
    return {
        "leg_length_difference_mm": round(figures["left"]["lesser_trochanter_height_mm"]
                                          - figures["right"]["lesser_trochanter_height_mm"], 1) * -1,
        "femoral_offset_difference_mm": round(figures["left"]["offset_mm"] - figures["right"]["offset_mm"], 1),
        "definition": "left minus right; leg length from the lesser trochanter's most medial point (higher "
                      "trochanter = shorter leg), offset from the head centre to the femoral shaft axis",
    }


def _list(point: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in point]
