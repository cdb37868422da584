"""What surrounds the bones and makes real CT hard: skin, fat, muscle, organs, vessels, gas, the table."""

from __future__ import annotations

import itertools

import numpy as np

from recon.phantom.render import Paint
from recon.phantom.shapes import Capsule, Cylinder, Ellipsoid, Intersection, Shape, Sphere, Union

BUTTOCKS_INTO_TABLE_MM = 15.0


def build_body(rng: np.random.Generator, origin: np.ndarray, rotation: np.ndarray, spine: dict, hips: dict,
               inter_asis_mm: float, tissue: dict[str, float], *, sacrum_bounds: tuple[np.ndarray, np.ndarray],
               detail_rng: np.random.Generator | None = None) -> tuple[list[Paint], list[Paint], dict]:
    """Paints under the bones, paints over nothing (the table is outside the body), and the parameters.

    The buttocks reach at least the skin and the subcutaneous fat behind the sacrum (``sacrum_bounds``, its box
    in LPS): the sacrum's dorsal surface lies under them, with no muscle over its midline. The table presses
    the buttocks ``BUTTOCKS_INTO_TABLE_MM`` flat.

    With ``detail_rng`` (a generator of its own, so the other draws stay the same), also the lower thorax
    (lung bases, liver, spleen) and mottled bowel content with gas bubbles.
    """

    def world(local):
        return origin + rotation @ np.asarray(local, float)

    def local(point):
        return rotation.T @ (np.asarray(point, float) - origin)

    l3 = local(spine["vertebrae_L3"]["body_center_lps_mm"])
    depth = float(rng.uniform(190, 290))
    half_width = float(rng.uniform(max(150, 0.5 * inter_asis_mm + 35), 200))
    skin, fat, wall = float(rng.uniform(2, 3)), float(rng.uniform(8, 40)), float(rng.uniform(8, 14))
    posterior_surface = l3[1] + float(rng.uniform(85, 110))
    center_y = posterior_surface - depth / 2
    sacrum_back = max(local(corner)[1] for corner in itertools.product(*zip(*sacrum_bounds)))
    buttocks = max(posterior_surface + BUTTOCKS_INTO_TABLE_MM, sacrum_back + skin + fat)
    hips_front = posterior_surface - depth + 5.0
    abdomen = Cylinder(world([0, center_y, 350]), rotation, half_width - 10, depth / 2, 500.0)
    hips_section = Cylinder(world([0, (hips_front + buttocks) / 2, -250]), rotation, half_width,
                            (buttocks - hips_front) / 2, 400.0)
    body = Union((abdomen, hips_section))
    layers = ((skin, tissue["fat"]), (skin + fat, tissue["muscle"]), (skin + fat + wall, tissue["visceral"]))
    paints = [Paint(body, tissue["skin"], layers=layers, smooth=True)]
    paints += _muscles(world, local, rotation, spine, hips, tissue, body)
    if detail_rng is not None:
        paints += _lower_thorax(detail_rng, world, local, rotation, spine, tissue)
    loops: list[tuple[np.ndarray, np.ndarray]] = []
    paints += _organs(rng, world, local, rotation, spine, hips, tissue, loops)
    if detail_rng is not None:
        paints += _bowel_content(detail_rng, world, rotation, loops, tissue)
    table = _table(world([0, buttocks - BUTTOCKS_INTO_TABLE_MM + float(rng.uniform(0, 4)), 0]), tissue)
    parameters = {"body_depth_mm": depth, "body_half_width_mm": half_width, "skin_mm": skin,
                  "subcutaneous_fat_mm": fat, "abdominal_wall_mm": wall}
    return paints, table, parameters


def _muscles(world, local, frame, spine, hips, tissue, body: Shape) -> list[Paint]:
    """Paraspinal muscles, psoas, and the gluteal muscles within the body's outline."""
    t12 = local(spine["vertebrae_T12"]["body_center_lps_mm"])
    l5 = local(spine["vertebrae_L5"]["body_center_lps_mm"])
    paints = []
    for side in (1.0, -1.0):
        paraspinal = Capsule(world([side * 38, t12[1] + 55, t12[2] + 40]), world([side * 38, l5[1] + 55, l5[2] - 20]),
                             28.0)
        psoas = Capsule(world([side * 28, t12[1], t12[2] - 20]), world([side * 60, l5[1] - 20, l5[2] - 60]), 17.0)
        head = local(hips["left" if side > 0 else "right"]["femoral_head_center_lps_mm"])
        gluteal = Ellipsoid(world(head + [side * 10, 65, 25]), np.array([60.0, 45.0, 90.0]), frame)
        paints += [Paint(paraspinal, tissue["muscle"]), Paint(psoas, tissue["muscle"] + 5),
                   Paint(Intersection((gluteal, body)), tissue["muscle"])]
    return paints


def _lower_thorax(rng, world, local, frame, spine, tissue) -> list[Paint]:
    """Liver and spleen under the diaphragm, and the lung bases above it reaching down behind them to about
    T12, as in every CT that shows the upper lumbar spine."""
    t11 = local(spine["vertebrae_T11"]["body_center_lps_mm"])
    contrast = tissue.get("contrast", 0.0) > 0.5
    liver_hu = float(rng.uniform(90, 130) if contrast else rng.uniform(45, 70))
    spleen_hu = float(rng.uniform(100, 140) if contrast else rng.uniform(40, 60))
    lung_hu = float(rng.uniform(-900, -780))
    paints = [
        Paint(Ellipsoid(world([-rng.uniform(55, 80), t11[1] - rng.uniform(60, 85), t11[2] - rng.uniform(0, 40)]),
                        rng.uniform([75, 65, 60], [95, 85, 85]), frame), liver_hu),
        Paint(Ellipsoid(world([rng.uniform(75, 95), t11[1] - rng.uniform(0, 20), t11[2] - rng.uniform(10, 45)]),
                        rng.uniform([22, 35, 40], [32, 50, 60]), frame), spleen_hu),
    ]
    top = t11[2] + rng.uniform(-25, 10)  # where the lungs' posterior recesses end below
    for side in (1.0, -1.0):
        radii = rng.uniform([48, 70, 150], [62, 90, 190])
        center = [side * rng.uniform(68, 85), t11[1] - rng.uniform(10, 30), top + radii[2]]
        paints.append(Paint(Ellipsoid(world(center), radii, frame), lung_hu + rng.normal(0, 15)))
    return paints


def _bowel_content(rng, world, frame, loops, tissue) -> list[Paint]:
    """Mottled faeces: small bubbles of gas and fat-to-soft-tissue lumps inside some bowel loops."""
    paints = []
    for center, radii in loops:
        if rng.uniform() < 0.5:
            continue
        for _ in range(int(rng.integers(4, 12))):
            offset = rng.uniform(-0.6, 0.6, 3) * radii
            hu = float(rng.uniform(-980, -700) if rng.uniform() < 0.5 else rng.uniform(-150, 80))
            paints.append(Paint(Sphere(world(np.asarray(center) + offset), float(rng.uniform(2.0, 6.0))), hu))
    return paints


def _organs(rng, world, local, frame, spine, hips, tissue, loops: list | None = None) -> list[Paint]:
    l1 = local(spine["vertebrae_L1"]["body_center_lps_mm"])
    l4 = local(spine["vertebrae_L4"]["body_center_lps_mm"])
    paints = []
    for _ in range(int(rng.integers(5, 12))):
        center = [rng.uniform(-90, 90), l4[1] - rng.uniform(60, 140), rng.uniform(l4[2] - 120, l1[2])]
        radii = rng.uniform(15, 32, 3)
        paints.append(Paint(Ellipsoid(world(center), radii, frame), tissue["bowel"]))
        if loops is not None:
            loops.append((np.asarray(center, float), radii))
        if rng.uniform() < 0.6:
            gas = np.array(center) + [0, -radii[1] * 0.4, 0]
            paints.append(Paint(Ellipsoid(world(gas), radii * rng.uniform(0.3, 0.6), frame), tissue["gas"]))
    for side in (1.0, -1.0):
        kidney_center = world([side * 68, l1[1] + 15, l1[2] - 15])
        kidney_frame = frame @ _tilt(side)
        paints.append(Paint(Ellipsoid(kidney_center, np.array([28.0, 22.0, 55.0]), kidney_frame),
                            tissue["kidney_cortex"]))
        paints.append(Paint(Ellipsoid(kidney_center, np.array([16.0, 12.0, 38.0]), kidney_frame),
                            tissue["kidney_medulla"]))
    aorta_top, bifurcation = world([14, l1[1] - 32, l1[2] + 150]), world([6, l4[1] - 30, l4[2]])
    aorta_radius = float(rng.uniform(9, 13))
    paints.append(Paint(Capsule(aorta_top, bifurcation, aorta_radius), tissue["vessel"]))
    paints.append(Paint(Capsule(world([-22, l1[1] - 28, l1[2] + 150]), world([-10, l4[1] - 26, l4[2]]), 12.0),
                        tissue["vessel"] * 0.6))
    for side_name in ("left", "right"):
        head = hips[side_name]["femoral_head_center_lps_mm"]
        target = world(local(head) + [0, -35, 10])
        paints.append(Paint(Capsule(bifurcation, target, aorta_radius * 0.55), tissue["vessel"]))
    for _ in range(int(rng.integers(0, 7))):
        t = rng.uniform(0, 1)
        axis_point = aorta_top + t * (bifurcation - aorta_top)
        angle = rng.uniform(0, 2 * np.pi)
        offset = aorta_radius * (np.cos(angle) * frame[:, 0] + np.sin(angle) * frame[:, 1])
        paints.append(Paint(Sphere(axis_point + offset, float(rng.uniform(1.0, 2.5))), tissue["plaque"]))
    return paints


def _tilt(side: float) -> np.ndarray:
    angle = np.radians(15) * side
    return np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])


def _table(top_point, tissue) -> list[Paint]:
    """A carbon-fibre table top (a shell around foam), level in the scanner, under the patient."""
    table = Cylinder(top_point + [0, 22, 0], np.eye(3), 240.0, 20.0, 2000.0)
    return [Paint(table, tissue["table_shell"], layers=((2.0, tissue["table_foam"]),), smooth=True)]
