"""Hip replacements and hip fracture fixations in phantoms, and the streaks their metal casts on CT.

Patients planned for surgery often carry an implant already, most often a hip replacement on the other side.
Its metal saturates the CT (3071 HU, the top of a 12-bit reconstruction) and streaks the slices it lies in;
a network that never saw one may call the whole joint background. The labels keep the implant in the bone that
holds it (the stem and head in the femur, the cup in the hip bone), as a surgeon outlining that bone would.

Sizes, typical of primary hip replacements in adults:
- cup: a hemispherical shell as wide as the reamed acetabulum, 3-5 mm of titanium or cobalt-chrome, opening
  as the native acetabulum did, lined with polyethylene (about -100 HU);
- head: a ball 28-36 mm across, concentric with the cup;
- stem: in the femoral canal, tapering from about 8 to 5 mm radius over 110-160 mm below the neck cut,
  its neck reaching into the head; the native head and neck above the cut are resected.

A share of them (``HEMIARTHROPLASTY_SHARE``) are hemiarthroplasties, the usual repair of a femoral neck
fracture in the elderly: no cup, a metal head as large as the native one in the native acetabulum, and the
same stem.

A hip fracture fixed rather than replaced keeps the native head and holds it with metal (``hip_fixation``),
one of ``FIXATIONS``, sized as the common implants are:
- cannulated screws: two or three parallel 6.5-7.3 mm screws up the neck from below the greater trochanter,
  their tips 5-12 mm short of the head's surface;
- a sliding hip screw: a 10-12.5 mm lag screw up the neck, a 13-14 mm barrel through the lateral cortex, and
  a side plate (19 mm wide, 5-6 mm thick) down the lateral shaft held by 4.5 mm cortical screws every 16 mm;
- a cephalomedullary nail: 15.5-17 mm at the top of the greater trochanter, 10-12 mm down the canal
  (170-240 mm long), a lag screw as above through it up the neck, and a 5 mm distal locking screw.
The metal is labelled as the femur, as the bone that holds it (and as TotalSegmentator's masks mark it).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from skimage.transform import iradon

from recon.geometry import Grid
from recon.phantom.render import Paint
from recon.phantom.shapes import Capsule, Cylinder, Difference, HalfSpace, Intersection, Sphere, Union

METAL_HU = (2500.0, 3071.0)
POLYETHYLENE_HU = (-110.0, -80.0)
SCAR_HU = (20.0, 60.0)
CUP_WALL_MM = (3.0, 5.0)
HEAD_DIAMETER_MM = (28.0, 36.0)
STEM_LENGTH_MM = (110.0, 160.0)
STEM_RADIUS_MM = ((7.0, 9.0), (4.5, 6.0))  # at the neck cut, at the tip
NECK_CUT_BEYOND_HEAD_MM = (0.0, 10.0)  # from the head's surface towards the trochanters
STREAK_HU = (100.0, 700.0)  # the 99th percentile of the streaks' size, drawn per phantom
METAL_THRESHOLD_HU = 2400.0  # above any bone, for finding the metal the streaks come from
PROJECTIONS = 90
HEMIARTHROPLASTY_SHARE = 0.4
FIXATIONS = ("cannulated screws", "sliding hip screw", "cephalomedullary nail")
TIP_SHORT_OF_HEAD_SURFACE_MM = (5.0, 12.0)
CANNULATED_SCREW_RADIUS_MM = (3.25, 3.65)
LAG_SCREW_RADIUS_MM = (5.0, 6.25)
BARREL_RADIUS_MM, BARREL_LENGTH_MM = (6.5, 7.0), (25.0, 38.0)
PLATE_HALF_WIDTH_MM, PLATE_THICKNESS_MM, PLATE_LENGTH_MM = 9.5, (5.0, 6.0), (50.0, 130.0)
CORTICAL_SCREW_RADIUS_MM, CORTICAL_SCREW_PITCH_MM = 2.25, 16.0
NAIL_RADIUS_MM, NAIL_LENGTH_MM = ((7.75, 8.5), (5.0, 6.0)), (170.0, 240.0)  # (proximal, distal) radius
LOCKING_SCREW_RADIUS_MM = 2.5


def hip_replacement(hip: dict, rng: np.random.Generator, labels: dict[str, int]) -> tuple[str, list[Paint]]:
    """The kind of replacement ("total" or "hemi") and the paints, drawn after the bones, that replace one hip
    joint. ``hip`` holds the joint's geometry in LPS
    millimetres: ``head_center``, ``head_radius``, ``neck_direction`` (from the neck's base to the head),
    ``neck_base``, ``shaft_up`` (unit, up the femoral shaft), ``canal_radius``, ``cup_opening`` (unit, out of
    the acetabulum) and ``acetabulum_radius``; ``labels`` the femur's and the hip bone's label ids."""
    center, neck = np.asarray(hip["head_center"]), np.asarray(hip["neck_direction"])
    metal = float(rng.uniform(*METAL_HU))
    cut = center - neck * (hip["head_radius"] + rng.uniform(*NECK_CUT_BEYOND_HEAD_MM))
    resected = Intersection((Union((Sphere(center, hip["head_radius"] + 1.0),
                                    Capsule(center, cut, 0.75 * hip["head_radius"] + 2.0))),
                             HalfSpace(cut, -neck)))
    cup_outer = hip["acetabulum_radius"] + 1.0
    cup_inner = cup_outer - rng.uniform(*CUP_WALL_MM)
    head_radius = rng.uniform(*HEAD_DIAMETER_MM) / 2
    opening = np.asarray(hip["cup_opening"])
    hemisphere = HalfSpace(center, opening)
    cup = Intersection((Difference(Sphere(center, cup_outer), Sphere(center, cup_inner)), hemisphere))
    liner = Intersection((Sphere(center, cup_inner), hemisphere))
    scar, polyethylene = rng.uniform(*SCAR_HU), rng.uniform(*POLYETHYLENE_HU)
    stem = Paint(_stem(hip, cut, rng), metal, labels["femur"])
    if rng.uniform() < HEMIARTHROPLASTY_SHARE:
        return "hemi", [Paint(resected, scar, 0), Paint(Sphere(center, hip["head_radius"]), metal, labels["femur"]),
                        stem]
    return "total", [Paint(resected, scar, 0), Paint(liner, polyethylene), Paint(cup, metal, labels["hip"]),
                     Paint(Sphere(center, head_radius), metal, labels["femur"]), stem]


def hip_fixation(hip: dict, rng: np.random.Generator, femur_label: int) -> tuple[str, list[Paint]]:
    """The kind of fixation (one of ``FIXATIONS``) and the metal paints, drawn after the bones, that fix a
    fracture of the femur's neck or trochanters. ``hip`` holds the joint's geometry as for ``hip_replacement``,
    with ``shaft_radius`` (the femoral shaft's outer radius) as well."""
    kind = FIXATIONS[int(rng.integers(len(FIXATIONS)))]
    metal = float(rng.uniform(*METAL_HU))
    neck = _NeckAxis(hip, rng)
    if kind == "cannulated screws":
        parts = neck.parallel_screws(int(rng.integers(2, 4)), rng.uniform(*CANNULATED_SCREW_RADIUS_MM))
    elif kind == "sliding hip screw":
        parts = [neck.lag_screw(rng), neck.barrel(rng), *neck.side_plate(rng)]
    else:
        parts = [neck.lag_screw(rng), *neck.nail(rng)]
    return kind, [Paint(part, metal, femur_label) for part in parts]


class _NeckAxis:
    """The femoral neck's axis from where it leaves the lateral cortex (``entry``) to the head, and the shaft's
    frame there (``up`` the shaft, ``lateral`` away from the head), for placing fixation metal."""

    def __init__(self, hip: dict, rng: np.random.Generator):
        self.center, self.axis = np.asarray(hip["head_center"]), np.asarray(hip["neck_direction"])
        self.up, self.base = np.asarray(hip["shaft_up"]), np.asarray(hip["neck_base"])
        self.head_radius, self.shaft_radius = hip["head_radius"], hip["shaft_radius"]
        medial = self.axis - (self.axis @ self.up) * self.up  # the neck base lies on the shaft's axis
        self.lateral = -medial / np.linalg.norm(medial)
        self.entry = self.base - self.axis * self.shaft_radius / np.linalg.norm(medial)
        self.tip_short_mm = rng.uniform(*TIP_SHORT_OF_HEAD_SURFACE_MM)

    def parallel_screws(self, count: int, radius: float) -> list[Capsule]:
        """``count`` screws parallel to the axis, a third of the head's radius from it: one above the other for
        two, an inverted triangle for three."""
        superior = self.up - (self.up @ self.axis) * self.axis
        superior /= np.linalg.norm(superior)
        across = np.cross(self.axis, superior)
        spread = 0.35 * self.head_radius
        angles = np.radians([180.0, 0.0] if count == 2 else [180.0, 60.0, -60.0])
        return [self._screw(spread * (np.cos(a) * superior + np.sin(a) * across), radius) for a in angles]

    def lag_screw(self, rng: np.random.Generator) -> Capsule:
        return self._screw(np.zeros(3), rng.uniform(*LAG_SCREW_RADIUS_MM))

    def _screw(self, offset: np.ndarray, radius: float) -> Capsule:
        """A screw parallel to the axis, ``offset`` from it, from just outside the lateral cortex to
        ``tip_short_mm`` short of the head's surface."""
        reach = np.sqrt(self.head_radius**2 - offset @ offset) - self.tip_short_mm
        return Capsule(self.entry + offset - self.axis * 3.0, self.center + offset + self.axis * reach, radius)

    def barrel(self, rng: np.random.Generator) -> Capsule:
        return Capsule(self.entry - self.axis * 4.0, self.entry + self.axis * rng.uniform(*BARREL_LENGTH_MM),
                       rng.uniform(*BARREL_RADIUS_MM))

    def side_plate(self, rng: np.random.Generator) -> list:
        """A plate on the lateral cortex from the barrel down, and a cortical screw through the shaft every
        ``CORTICAL_SCREW_PITCH_MM``."""
        length, thickness = rng.uniform(*PLATE_LENGTH_MM), rng.uniform(*PLATE_THICKNESS_MM)
        top = (self.entry - self.base) @ self.up
        outward = self.shaft_radius + thickness / 2
        frame = np.column_stack([np.cross(self.lateral, self.up), self.lateral, self.up])
        parts = [Cylinder(self.base + self.up * (top - length / 2) + self.lateral * outward, frame,
                          PLATE_HALF_WIDTH_MM, thickness / 2, length / 2)]
        for height in np.arange(top - 12.0, top - length, -CORTICAL_SCREW_PITCH_MM):
            on_axis = self.base + self.up * height
            parts.append(Capsule(on_axis + self.lateral * (outward + thickness / 2),
                                 on_axis - self.lateral * (self.shaft_radius + 2.0), CORTICAL_SCREW_RADIUS_MM))
        return parts

    def nail(self, rng: np.random.Generator) -> list[Capsule]:
        """From the greater trochanter's tip into the canal: the wide proximal part down past the lag screw,
        then the distal part along the shaft's axis, locked by a screw across the shaft near its tip."""
        top = self.base + self.up * 40.0 + self.lateral * 8.0
        waist = self.base - self.up * 30.0
        tip = self.base + self.up * 40.0 - self.up * rng.uniform(*NAIL_LENGTH_MM)
        proximal, distal = (rng.uniform(*span) for span in NAIL_RADIUS_MM)
        lock = tip + self.up * 25.0
        lock_screw = Capsule(lock + self.lateral * (self.shaft_radius + 3.0),
                             lock - self.lateral * (self.shaft_radius + 2.0), LOCKING_SCREW_RADIUS_MM)
        return [Capsule(top, waist, proximal), Capsule(waist, tip, distal), lock_screw]


def _stem(hip: dict, cut: np.ndarray, rng: np.random.Generator) -> Union:
    """A taper from the head's centre through the neck cut and down the canal: capsules of shrinking radius."""
    up = np.asarray(hip["shaft_up"])
    top_radius, tip_radius = (min(rng.uniform(*span), 0.8 * hip["canal_radius"] + 2.0) for span in STEM_RADIUS_MM)
    shoulder = np.asarray(hip["neck_base"]) - up * 15.0
    tip = shoulder - up * rng.uniform(*STEM_LENGTH_MM)
    parts = [Capsule(np.asarray(hip["head_center"]), cut, 0.45 * top_radius + 2.0),
             Capsule(cut, shoulder, top_radius)]
    for t0, t1 in pairwise(np.linspace(0, 1, 4)):
        radius = top_radius + (tip_radius - top_radius) * (t0 + t1) / 2
        parts.append(Capsule(shoulder + (tip - shoulder) * t0, shoulder + (tip - shoulder) * t1, radius))
    return Union(tuple(parts))


def metal_streaks(hu: np.ndarray, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """``hu`` with beam-hardening streaks added in each axial slice that holds metal.

    The error a polychromatic beam makes grows with the square of the metal path; filtered back-projection of
    that error (``skimage.transform.iradon``) gives dark bands between metal parts and along them, and bright
    rays fanning out, as on scanners without metal artefact reduction. Photon starvation adds noise to the
    projections through much metal. The strength is drawn once per phantom."""
    metal = hu > METAL_THRESHOLD_HU
    if not metal.any():
        return hu
    angles = np.linspace(0.0, 180.0, PROJECTIONS, endpoint=False)
    strength, starvation = rng.uniform(*STREAK_HU), rng.uniform(0.0, 0.5)
    pixel_mm = float(np.mean(grid.spacing_mm[:2]))
    side = max(hu.shape[:2])  # the Radon pair's square, this slice in its corner
    streaks = np.zeros(hu.shape, np.float32)
    for k in np.flatnonzero(metal.any(axis=(0, 1))):
        path = metal_sinogram(metal[:, :, k], side, angles) * pixel_mm / 20.0  # metal path, in units of 20 mm
        error = -path**2 + starvation * path * rng.standard_normal(path.shape)
        streaks[:, :, k] = iradon(error, angles, output_size=side, circle=False)[: hu.shape[0], : hu.shape[1]]
    typical = float(np.percentile(np.abs(streaks[~metal & (streaks != 0)]), 99))
    return np.where(metal, hu, hu + streaks * np.float32(strength / max(typical, 1e-6)))


def metal_sinogram(metal: np.ndarray, side: int, angles_deg: np.ndarray) -> np.ndarray:
    """The Radon transform (detector bins x ``angles_deg``) of the binary slice ``metal`` set in a ``side``-pixel
    square, in the geometry of ``skimage.transform.radon`` with ``circle=False``, which ``iradon`` inverts: the
    square padded to its diagonal, the rotation axis at bin ``bins // 2``.

    skimage's ``radon`` rotates every pixel of the padded square at every angle, about a second per phantom
    at 3 mm; a slice holds a few hundred metal pixels, so each pixel's unit path is split here between the two
    bins its centre projects between, a hundred times faster and within a few per cent of it (tests)."""
    bins = side + int(np.ceil(np.sqrt(2) * side - side))
    rows, cols = np.nonzero(metal)
    theta = np.deg2rad(angles_deg)
    position = bins // 2 + np.outer(cols - side // 2, np.cos(theta)) - np.outer(rows - side // 2, np.sin(theta))
    low = np.floor(position).astype(int) + 1  # one spare bin each side for positions at the very edge
    share = position + 1 - low
    which = np.arange(theta.size)
    sinogram = np.zeros((bins + 2, theta.size))
    np.add.at(sinogram, (low, which), 1.0 - share)
    np.add.at(sinogram, (low + 1, which), share)
    return sinogram[1:-1]
