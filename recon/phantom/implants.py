"""Hip replacements in phantoms, total and hemi, and the streaks their metal casts on CT.

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
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from skimage.transform import iradon, radon

from recon.geometry import Grid
from recon.phantom.render import Paint
from recon.phantom.shapes import Capsule, Difference, HalfSpace, Intersection, Sphere, Union

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
    that error (``skimage.transform``'s Radon pair) gives dark bands between metal parts and along them, and
    bright rays fanning out, as on scanners without metal artefact reduction. Photon starvation adds noise to
    the projections through much metal. The strength is drawn once per phantom."""
    metal = hu > METAL_THRESHOLD_HU
    if not metal.any():
        return hu
    angles = np.linspace(0.0, 180.0, PROJECTIONS, endpoint=False)
    strength, starvation = rng.uniform(*STREAK_HU), rng.uniform(0.0, 0.5)
    pixel_mm = float(np.mean(grid.spacing_mm[:2]))
    side = max(hu.shape[:2])  # square slices, so that the Radon pair keeps the slice's centre
    square = np.zeros((side, side), np.float32)
    streaks = np.zeros(hu.shape, np.float32)
    for k in np.flatnonzero(metal.any(axis=(0, 1))):
        square[: hu.shape[0], : hu.shape[1]] = metal[:, :, k]
        path = radon(square, angles, circle=False) * pixel_mm / 20.0  # metal path, in units of 20 mm
        error = -path**2 + starvation * path * rng.standard_normal(path.shape)
        streaks[:, :, k] = iradon(error, angles, output_size=side, circle=False)[: hu.shape[0], : hu.shape[1]]
    typical = float(np.percentile(np.abs(streaks[~metal & (streaks != 0)]), 99))
    return np.where(metal, hu, hu + streaks * np.float32(strength / max(typical, 1e-6)))
