"""Sacrum, hip bones and proximal femurs, built in the pelvis frame, with the truth a hip planner needs.

The pelvis frame has its origin midway between the hip joint centres and columns (patient left, posterior,
superior). Landmarks follow Bell et al. (1990): each hip joint centre lies 30% of the inter-ASIS distance
below, 14% medial and 22% posterior of its ASIS. The pubic tubercles lie in the plane of the ASIS
(the anterior pelvic plane, coronal in this frame). Acetabulum and femoral head are concentric.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from recon.anatomy import LABEL_IDS
from recon.phantom.implants import hip_fixation, hip_replacement
from recon.phantom.morphometry import PELVIS_DETAIL_RANGES, PELVIS_RANGES, draw
from recon.phantom.render import Paint
from recon.phantom.shapes import (Capsule, Cylinder, Difference, Ellipsoid, HalfSpace, Intersection, Offset,
                                  Shape, Sphere, Union, rotation_about)

SIDES = {"left": 1.0, "right": -1.0}
SI_JOINT_GAP_MM = 2.5
SACRAL_SEGMENTS = 7
COCCYGEAL_SEGMENTS = 4
COCCYX_FORWARD_DEG = 25.0
SACRAL_CURVE_BACK_MM = 24.0  # how far behind S1's centre the sacral curve runs before it bends forward
MAX_SACRAL_BEND_SHARE = 0.6  # of the sacrum's length
ILIAC_FOSSA_UP_MM = 20.0  # the thinnest wing lies this far above the wing's centre, about 40 mm below the crest
ILIAC_FOSSA_RADII_MM = (20.0, 50.0, 40.0)  # the hollow's depth, and its extent along the wing and upwards
FAINT_APEX_FROM = 0.5  # a faint sacral apex: the segments from halfway down the sacral curve (about S3), and the coccyx


def draw_pelvis(rng: np.random.Generator, detail_rng: np.random.Generator,
                joint_space_mm: tuple[float, float] | None = None) -> dict[str, float]:
    """Pelvis parameters; the bone detail comes from ``detail_rng`` so that ``rng``'s later draws stay as
    they were without it. ``joint_space_mm`` replaces ``PELVIS_RANGES``' hip joint space range (same draws)."""
    ranges = PELVIS_RANGES | ({"joint_space_mm": joint_space_mm} if joint_space_mm is not None else {})
    return ({name: draw(rng, span) for name, span in ranges.items()}
            | {name: draw(detail_rng, span) for name, span in PELVIS_DETAIL_RANGES.items()})


def build_pelvis(params: dict, origin: np.ndarray, rotation: np.ndarray, tissue: dict[str, float],
                 rng: np.random.Generator, *, cortex_mm: float = 1.5,
                 replaced: dict[str, np.random.Generator] | None = None,
                 fixed: dict[str, np.random.Generator] | None = None):
    """Returns (S1 endplate centre, S1 frame, soft paints, bone paints, truth of hips and landmarks, the
    sacrum's bounding box in LPS);
    the sacrum and hip bones get a cortical shell ``cortex_mm`` thick. ``replaced`` maps the sides that carry a
    hip replacement to the generator that draws it, ``fixed`` those whose femur carries a fracture fixation."""

    def world(local):
        return origin + rotation @ np.asarray(local, float)

    width = params["inter_asis_mm"]
    hip_half = 0.36 * width
    tilt = np.radians(params["pelvic_tilt_deg"])
    sacral_slope = np.radians(params["pelvic_incidence_deg"] - params["pelvic_tilt_deg"])
    s1_local = params["hip_to_s1_mm"] * np.array([0.0, np.sin(tilt), np.cos(tilt)])
    s1_rotation = rotation @ rotation_about([1, 0, 0], sacral_slope)
    bend = _sacral_bend(params, s1_local[2], sacral_slope)
    upper, apex, canal = _sacral_parts(world(s1_local), s1_rotation, params | {"sacral_bend_mm": bend})
    sacrum = _sacral_solid(upper + apex, canal)
    head_radius = params["femoral_head_diameter_mm"] / 2
    acetabulum_radius = head_radius + params["joint_space_mm"]
    soft, hips, landmarks = [], {}, {}
    cancellous = tissue["cancellous"] * params["pelvic_cancellous_share"]
    bones = _sacrum_paints(sacrum, upper, apex, canal, params.get("sacral_apex_contrast"), tissue, cortex_mm,
                           cancellous)
    if "alar_void_hu" in params:
        voids = _alar_voids(sacrum, world(s1_local), s1_rotation, params, cortex_mm)
        bones.append(Paint(voids, params["alar_void_hu"]))
    if "sacral_canal_hu" in params:  # its contents, below S1's endplate (L5's arch lies above it)
        bones.append(Paint(Intersection((canal, HalfSpace(world(s1_local), s1_rotation[:, 2]))),
                           params["sacral_canal_hu"]))
    for side_name, side in SIDES.items():
        center_local = np.array([side * hip_half, 0.0, 0.0])
        asis_local = center_local + np.array([side * 0.14 * width, -0.22 * width, 0.30 * width])
        tubercle_local = np.array([side * rng.uniform(20, 28), asis_local[1] + rng.uniform(-4, 4),
                                   -rng.uniform(0.08, 0.13) * width])
        center = world(center_local)
        opening = _cup_opening(side, params, rotation)
        hip = _hip_bone(side, params, world, rotation, center_local, asis_local, tubercle_local, acetabulum_radius,
                        opening, s1_local)
        hip = Difference(Difference(hip, Sphere(center, acetabulum_radius)), Offset(sacrum, SI_JOINT_GAP_MM))
        femur, femur_cancellous, marrow, joint = _femur(side, params, world, rotation, center_local, head_radius)
        soft.append(Paint(Sphere(center, acetabulum_radius), tissue["cartilage"]))
        ids = {"hip": LABEL_IDS[f"hip_{side_name}"], "femur": LABEL_IDS[f"femur_{side_name}"]}
        bones += [Paint(hip, tissue["cortical"], ids["hip"], layers=((cortex_mm, cancellous),)),
                  Paint(femur, tissue["cortical"], ids["femur"]),
                  Paint(femur_cancellous, cancellous), Paint(marrow, tissue["marrow"])]
        replacement = fixation = None
        if side_name in (replaced or {}):
            joint |= {"cup_opening": opening, "acetabulum_radius": acetabulum_radius}
            replacement, implant = hip_replacement(joint, replaced[side_name], ids)
            bones += implant
        elif side_name in (fixed or {}):
            fixation, implant = hip_fixation(joint, fixed[side_name], ids["femur"])
            bones += implant
        hips[side_name] = {
            "femoral_head_center_lps_mm": center.tolist(),
            "femoral_head_radius_mm": head_radius,
            "acetabulum_center_lps_mm": center.tolist(),
            "acetabulum_radius_mm": acetabulum_radius,
            "acetabular_inclination_deg": params["acetabular_inclination_deg"],
            "acetabular_anteversion_deg": params["acetabular_anteversion_deg"],
            "neck_shaft_angle_deg": params["neck_shaft_angle_deg"],
            "femoral_anteversion_deg": params["femoral_anteversion_deg"],
            "replacement": replacement,
            "fixation": fixation,
        }
        landmarks[f"asis_{side_name}"] = world(asis_local).tolist()
        landmarks[f"pubic_tubercle_{side_name}"] = world(tubercle_local).tolist()
    return (world(s1_local), s1_rotation, soft, bones, {"hips": hips, "landmarks_lps_mm": landmarks},
            sacrum.bounds())


def _sacral_parts(s1: np.ndarray, frame: np.ndarray, params: dict) -> tuple[list[Shape], list[Shape], Shape]:
    """The sacrum's solids above ``FAINT_APEX_FROM`` of its curve and below it, and its canal (the sacrum is
    their union without the canal): S1's body and alae, then S2 to the apex: ``SACRAL_SEGMENTS`` ellipsoids
    along a curve ``sacrum_length_mm`` below the S1 endplate that bends forward by ``sacral_bend_mm`` at the apex
    (the sacral kyphosis), narrowing and thinning as they go down (for an auricular sacrum,
    ``_auricular_segment``); then the coccyx, ``coccyx_length_mm`` long, curving further forward."""
    length_mm = params["sacrum_length_mm"]
    posterior, up = frame[:, 1], frame[:, 2]
    body = Cylinder(s1 - up * 14, frame, 24.0, 17.0, 14.0)
    alae = Ellipsoid(s1 - up * 22 + posterior * 8, np.array([56.0, 22.0, 22.0]), frame)
    controls = np.array([[12.0, -24.0], [SACRAL_CURVE_BACK_MM, -0.6 * length_mm],
                         [SACRAL_CURVE_BACK_MM - params["sacral_bend_mm"], -length_mm]])
    upper, apex = [body, alae], []
    half_length = 0.8 * _arc_length(controls) / (SACRAL_SEGMENTS - 1)
    for t in np.linspace(0.0, 1.0, SACRAL_SEGMENTS):
        point = _bezier(controls, t)
        tangent = 2 * (1 - t) * (controls[1] - controls[0]) + 2 * t * (controls[2] - controls[1])
        if "auricular_height_mm" in params:
            segment = _auricular_segment(s1, frame, point, tangent, t, half_length, params)
        else:
            segment = [_segment(s1, frame, point, tangent,
                                np.array([46.0 - 36.0 * t, _sacral_half_depth(t, params), half_length]))]
        (apex if t >= FAINT_APEX_FROM else upper).extend(segment)
    apex += _coccyx(s1, frame, controls[2], 2 * (controls[2] - controls[1]), params["coccyx_length_mm"])
    if "sacral_canal_half_width_mm" not in params:
        return upper, apex, Capsule(s1 + posterior * 24 + up * 5, s1 + posterior * 30 - up * 85, 6.0)
    canal, roofs = _sacral_canal(s1, frame, controls, params)
    for t, roof in roofs:
        (apex if t >= FAINT_APEX_FROM else upper).append(roof)
    return upper, apex, canal


def _sacral_canal(s1: np.ndarray, frame: np.ndarray, controls: np.ndarray, params: dict):
    """``morphometry.py``'s sacral canal: pieces of elliptic tube behind the sacral bodies, from S1's endplate
    down the sacral curve to the apex, a quarter of its depth sunk into the bodies' backs, narrowing from
    ``sacral_canal_half_*_mm`` to ``sacral_hiatus_half_*_mm`` at the hiatus (``sacral_hiatus_at`` of the curve);
    above the hiatus each piece gets a roof ``sacral_lamina_mm`` thick round it. Returns the canal and the roofs
    with the curve parameter of each."""
    ends = np.linspace(0.0, 1.0, 2 * SACRAL_SEGMENTS)
    points = _bezier(controls, ends[:, None])
    points = np.vstack([[points[0, 0], -4.0], points])  # up to just below S1's endplate, clear of L5's arch
    hiatus, lamina = params["sacral_hiatus_at"], params["sacral_lamina_mm"]
    canal, roofs = [], []
    for (start, end), t in zip(pairwise(points), np.concatenate([[0.0], (ends[:-1] + ends[1:]) / 2])):
        share = min(t / hiatus, 1.0)
        width, depth = ((1 - share) * params[f"sacral_canal_half_{axis}_mm"]
                        + share * params[f"sacral_hiatus_half_{axis}_mm"] for axis in ("width", "depth"))
        tangent = end - start
        rotation = _segment_rotation(frame, tangent)
        middle = _on_curve(s1, frame, (start + end) / 2)
        center = middle + rotation[:, 1] * (_sacral_half_depth(t, params) + 0.5 * depth)
        half_length = np.linalg.norm(tangent) / 2 + 1.5
        canal.append(Cylinder(center, rotation, width, depth, half_length))
        if t < hiatus:
            roofs.append((t, Cylinder(center, rotation, width + lamina, depth + lamina, half_length)))
    return Union(tuple(canal)), roofs


def _sacral_half_depth(t: float, params: dict) -> float:
    """The sacral segment's half depth at ``t`` (0 at S1, 1 at the apex): 13 mm thinning to the apex's
    (``sacral_apex_half_depth_mm`` of an auricular sacrum, else 6 mm)."""
    return 13.0 - (13.0 - params.get("sacral_apex_half_depth_mm", 6.0)) * t


def _sacral_solid(parts: list[Shape], canal: Shape) -> Shape:
    """The union of ``parts`` without the sacral canal."""
    return Difference(Union(tuple(parts)), canal)


def _sacrum_paints(sacrum: Shape, upper: list[Shape], apex: list[Shape], canal: Shape, apex_contrast: float | None,
                   tissue: dict[str, float], cortex_mm: float, cancellous: float) -> list[Paint]:
    """The sacrum in one paint; or, with ``apex_contrast``, its upper part in one and its apex after it with only
    that share of the cortex's and marrow's contrast over muscle (``morphometry.py``'s faint sacral apex)."""
    sacrum_id = LABEL_IDS["sacrum"]
    if apex_contrast is None:
        return [Paint(sacrum, tissue["cortical"], sacrum_id, layers=((cortex_mm, cancellous),))]
    muscle = tissue["muscle"]
    faint_cortical, faint_cancellous = (muscle + (hu - muscle) * apex_contrast
                                        for hu in (tissue["cortical"], cancellous))
    return [Paint(_sacral_solid(upper, canal), tissue["cortical"], sacrum_id, layers=((cortex_mm, cancellous),)),
            Paint(_sacral_solid(apex, canal), faint_cortical, sacrum_id, layers=((cortex_mm, faint_cancellous),))]


def _alar_voids(sacrum: Shape, s1: np.ndarray, frame: np.ndarray, params: dict, cortex_mm: float) -> Shape:
    """Fatty marrow in both lateral masses beside the foramina, S1 to S3, inside the cortex (``morphometry.py``'s
    alar voids): an ellipsoid on either side ``alar_void_lateral_mm`` from the midline, its centre
    ``alar_void_down_mm`` below the S1 endplate and ``alar_void_back_mm`` behind it."""
    radii = np.array([params["alar_void_radius_mm"]] * 2 + [params["alar_void_half_height_mm"]])
    centres = (s1 + side * params["alar_void_lateral_mm"] * frame[:, 0] + params["alar_void_back_mm"] * frame[:, 1]
               - params["alar_void_down_mm"] * frame[:, 2] for side in SIDES.values())
    return Intersection((Union(tuple(Ellipsoid(c, radii, frame) for c in centres)), Offset(sacrum, -cortex_mm - 1.0)))


def _bezier(controls: np.ndarray, t):
    """Points of the quadratic Bezier curve through ``controls`` (rows) at ``t`` (scalar or column)."""
    return (1 - t) ** 2 * controls[0] + 2 * t * (1 - t) * controls[1] + t**2 * controls[2]


def _arc_length(controls: np.ndarray) -> float:
    points = _bezier(controls, np.linspace(0.0, 1.0, 65)[:, None])
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def _sacral_bend(params: dict, s1_height_mm: float, sacral_slope: float) -> float:
    """``_sacral_parts``'s forward bend at the apex that brings the apex to ``sacral_apex_height_mm`` above the hip
    joint centres (S1's centre lies ``s1_height_mm`` above them), at most ``MAX_SACRAL_BEND_SHARE`` of the
    sacrum's length and never backwards. The sacral frame's posterior axis rises ``sin(sacral_slope)`` per mm
    and its up axis ``cos(sacral_slope)``."""
    length_mm = params["sacrum_length_mm"]
    apex_back_mm = (params["sacral_apex_height_mm"] - s1_height_mm + np.cos(sacral_slope) * length_mm) / np.sin(
        sacral_slope)
    return float(np.clip(SACRAL_CURVE_BACK_MM - apex_back_mm, 0.0, MAX_SACRAL_BEND_SHARE * length_mm))


def _auricular_segment(s1, frame, point, tangent, t: float, half_length: float, params: dict) -> list[Shape]:
    """The sacral segment at ``t`` (0 at S1, 1 at the apex) of a sacrum whose lateral masses keep their full
    width (``interauricular_half_width_mm``) down the auricular surface (``auricular_height_mm`` below the S1
    endplate), then narrow to the apex: a body ellipsoid thinning to ``sacral_apex_half_depth_mm``, and on either
    side a thinner wing whose outer end is swept forward by ``sacral_sweep_deg``, the pelvic surface concave
    from side to side."""
    auricular_mm, length_mm = params["auricular_height_mm"], params["sacrum_length_mm"]
    below = float(np.clip((-point[1] - auricular_mm) / (length_mm - auricular_mm), 0.0, 1.0))
    half_width = params["interauricular_half_width_mm"] * (1 - below) + 10.0 * below
    half_depth = _sacral_half_depth(t, params)
    body = _segment(s1, frame, point, tangent, np.array([min(half_width, 15.0), half_depth, half_length]))
    if half_width <= 15.0:
        return [body]
    rotation = _segment_rotation(frame, tangent)
    center = _on_curve(s1, frame, point)
    sweep = np.radians(params["sacral_sweep_deg"])
    wings = []
    for side in (1.0, -1.0):
        outward = side * np.cos(sweep) * rotation[:, 0] - np.sin(sweep) * rotation[:, 1]  # column 1 points back
        wing_rotation = np.column_stack([outward, np.cross(rotation[:, 2], outward), rotation[:, 2]])
        wings.append(Ellipsoid(center + outward * half_width / 2, np.array([half_width / 2, 0.7 * half_depth,
                                                                            half_length]), wing_rotation))
    return [body, *wings]


def _coccyx(s1, frame, apex, tangent, length_mm: float) -> list[Shape]:
    """``COCCYGEAL_SEGMENTS`` small ellipsoids from the sacral apex along ``tangent`` (posterior, up) turned
    ``COCCYX_FORWARD_DEG`` forward, narrowing from the apex's width."""
    turn = np.radians(COCCYX_FORWARD_DEG)
    direction = np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]]) @ tangent
    direction /= np.linalg.norm(direction)
    step = length_mm / COCCYGEAL_SEGMENTS
    return [_segment(s1, frame, apex + direction * step * (n + 0.5), direction,
                     np.array([8.0 - 1.2 * n, 5.0 - 0.6 * n, 0.6 * step]))
            for n in range(COCCYGEAL_SEGMENTS)]


def _segment(s1, frame, point, tangent, radii) -> Shape:
    """An ellipsoid at ``point`` (posterior, up of the sacral frame from S1) whose long axis follows
    ``tangent``: ``radii`` are its half width, half depth and half length."""
    return Ellipsoid(_on_curve(s1, frame, point), radii, _segment_rotation(frame, tangent))


def _on_curve(s1, frame, point) -> np.ndarray:
    """``point`` (posterior, up of the sacral frame from S1) in LPS."""
    return s1 + point[0] * frame[:, 1] + point[1] * frame[:, 2]


def _segment_rotation(frame, tangent) -> np.ndarray:
    """Columns: the sacral frame's left, the depth across the curve (pointing back), and the curve's direction
    upwards (``tangent``, posterior and up in the sacral frame, follows it downwards)."""
    tangent = tangent / np.linalg.norm(tangent)
    axis = -(tangent[0] * frame[:, 1] + tangent[1] * frame[:, 2])
    return np.column_stack([frame[:, 0], np.cross(axis, frame[:, 0]), axis])


def _cup_opening(side, params, rotation) -> np.ndarray:
    """The unit vector out of the acetabulum (LPS), from its inclination and anteversion."""
    inclination = np.radians(params["acetabular_inclination_deg"])
    anteversion = np.radians(params["acetabular_anteversion_deg"])
    return rotation @ np.array([side * np.sin(inclination) * np.cos(anteversion), -np.sin(anteversion),
                                -np.cos(inclination) * np.cos(anteversion)])


def _hip_bone(side, params, world, rotation, center, asis, tubercle, acetabulum_radius, opening, s1) -> Shape:
    socket = Intersection((Sphere(world(center), acetabulum_radius + 6.0),
                           HalfSpace(world(center) + opening * 0.2 * acetabulum_radius, opening)))
    flare = np.radians(25)
    anterior_dir = np.array([side * np.sin(flare), -np.cos(flare), 0.0])
    wing_frame = rotation @ rotation_about([0, 0, 1], side * flare) @ rotation_about([0, 1, 0], side * np.radians(20))
    bump = asis + np.array([0.0, 6.0, 0.0])
    raise_mm = params.get("iliac_crest_raise_mm", 0.0)  # the wing grows upwards, its lower end about where it was
    wing_center = bump - anterior_dir * 66 + [0.0, 0.0, raise_mm / 2]
    wing_radii = np.array([params["wing_half_thickness_mm"], 72.0, 62.0 + raise_mm / 2])
    wing = Ellipsoid(world(wing_center), wing_radii, wing_frame)
    wing = Difference(wing, _iliac_fossa(world(wing_center), wing_radii, wing_frame, side, params["iliac_fossa_mm"]))
    tubercle_center = tubercle + np.array([0.0, 4.0, 0.0])
    pubic_body = tubercle + np.array([-side * 2.0, 14.0, -10.0])
    tuberosity = center + np.array([-side * 8.0, 22.0, -62.0])
    posterior_ilium = np.array([side * 50.0, s1[1] + 20.0, s1[2] - 30.0  # behind and beside the alae
                                + params.get("posterior_ilium_raise_mm", 0.0)])
    r = acetabulum_radius
    parts = [
        socket, wing,
        Sphere(world(bump), 6.0),
        Capsule(world(bump), world(center + [side * 4, -0.6 * r, 0.7 * r]), 8.0),
        Capsule(world(center + [-side * 0.4 * r, -0.6 * r, -0.5 * r]), world(pubic_body), 7.5),
        Ellipsoid(world(pubic_body), np.array([9.0, 11.0, 18.0]), rotation),
        Sphere(world(tubercle_center), 4.0),
        Capsule(world(center + [-side * 0.2 * r, 0.5 * r, -0.7 * r]), world(tuberosity), 9.0),
        Ellipsoid(world(tuberosity), np.array([12.0, 14.0, 16.0]), rotation),
        Capsule(world(tuberosity), world(pubic_body + [0, 0, -14]), 6.0),
        Capsule(world(center + [0, r, 0.5 * r]), world(wing_center + [0, 40, -35]), 9.0),
        Capsule(world(wing_center + [-side * 10, 48, -10]), world(wing_center + [-side * 26, 40, 5]), 9.0),
        Ellipsoid(world(posterior_ilium), np.array([14.0, 18.0, 28.0]), rotation),
        Capsule(world(posterior_ilium), world(wing_center + [-side * 10, 48, -10]), 10.0),
        Ellipsoid(world(center + [side * 4, 4, r + 10]), np.array([0.8, 1.2, 1.0]) * params["supra_acetabular_radius_mm"],
                  rotation),
        *_iliac_crest(world(wing_center), wing_radii, wing_frame, params["crest_radius_mm"]),
    ]
    return Union(tuple(parts))


def _iliac_fossa(center, radii, frame, side: float, thickness_mm: float) -> Shape:
    """The hollow of the wing's inner face that thins its middle, ``ILIAC_FOSSA_UP_MM`` above the wing's centre, to
    a plate ``thickness_mm`` thick against its outer face (the wing's first axis points out of the body on the
    left and into it on the right), thickening again towards the crest and the posterior ilium."""
    lateral = side * frame[:, 0]
    middle = center + frame[:, 2] * ILIAC_FOSSA_UP_MM
    half_thickness = radii[0] * np.sqrt(1.0 - (ILIAC_FOSSA_UP_MM / radii[2]) ** 2)
    depth, across, up = ILIAC_FOSSA_RADII_MM
    hollow_center = middle + lateral * (half_thickness - thickness_mm - depth)
    return Ellipsoid(hollow_center, np.array([depth, across, up]), frame)


def _iliac_crest(center, radii, frame, radius: float) -> list[Shape]:
    """The thick rim along the wing's upper edge (the wing's second axis points posterior), from the posterior
    superior spine round to short of the anterior superior spine, which stays the most anterior point."""
    angles = np.radians([20, 45, 70, 95, 120, 140, 160])
    rim = [center + frame @ (np.array([0.0, np.cos(a), np.sin(a)]) * (radii - [0.0, radius, radius])) for a in angles]
    return [Capsule(a, b, radius) for a, b in pairwise(rim)]


def _femur(side, params, world, rotation, center_local, head_radius):
    """The femur (head, neck, trochanters, shaft), its cancellous interior, its medullary canal, and the joint's
    geometry in LPS (what a hip replacement is fitted to)."""
    adduction = np.radians(7)
    shaft_up_local = np.array([side * np.sin(adduction), 0.0, np.cos(adduction)])
    medial = np.array([-side, 0.0, 0.0])
    medial -= (medial @ shaft_up_local) * shaft_up_local
    medial /= np.linalg.norm(medial)
    neck_angle = np.radians(180 - params["neck_shaft_angle_deg"])
    head_dir = np.cos(neck_angle) * shaft_up_local + np.sin(neck_angle) * medial
    head_dir = rotation_about(shaft_up_local, side * np.radians(params["femoral_anteversion_deg"])) @ head_dir
    base = center_local - head_dir * params["neck_length_mm"]
    lateral = -medial
    up = rotation @ shaft_up_local
    radius = params["femoral_shaft_radius_mm"]
    shaft_end = base - shaft_up_local * 320
    femur = Union((
        Sphere(world(center_local), head_radius),
        Capsule(world(center_local), world(base), 0.68 * head_radius),
        Ellipsoid(world(base + lateral * 10 + shaft_up_local * 20 + [0, 4, 0]), np.array([13.0, 16.0, 20.0]), rotation),
        Ellipsoid(world(base - shaft_up_local * 38 - lateral * 12 + [0, 9, 0]), np.array([7.0, 7.0, 11.0]), rotation),
        Capsule(world(base + shaft_up_local * 12), world(shaft_end), radius),
    ))
    canal_top = base - shaft_up_local * 45
    cancellous = Intersection((Offset(femur, -1.5), HalfSpace(world(canal_top), -up)))
    marrow = Capsule(world(canal_top), world(shaft_end), radius - params["femoral_cortex_mm"])
    joint = {"head_center": world(center_local), "head_radius": head_radius, "neck_direction": rotation @ head_dir,
             "neck_base": world(base), "shaft_up": up, "shaft_radius": radius,
             "canal_radius": radius - params["femoral_cortex_mm"]}
    return femur, cancellous, marrow, joint
