"""Vertebrae T11-L5 stacked on the sacrum: shapes, discs, canal, ribs, and their ground truth; above them,
unlabelled thoracic vertebrae with their ribs, so that the spine runs on out of the field of view as in a
real CT.

Each vertebra is built in its own frame (columns: patient left, posterior, superior) at the centre of its
body. Pedicles are cylinders of elliptic cross-section (the isthmus width and height) around a straight
axis, so the truth axis runs inside the pedicle by construction. With facet joints, each vertebra's laminae
reach down to the disc below and its inferior articular processes down beside the superior articular processes
of the vertebra below, across a joint space (``morphometry.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.anatomy import LABEL_IDS
from recon.phantom.morphometry import (FACET_ANGLE_DEG, FACET_JOINT_SPACE_MM, LAMINA_EDGE_IN_DISC, LORDOSIS_SHARE,
                                       draw, draw_vertebra)
from recon.phantom.render import Paint
from recon.phantom.shapes import Capsule, Cylinder, Shape, Union, rotation_about, segment

LEVELS_CAUDAL_TO_CRANIAL = ("L5", "L4", "L3", "L2", "L1", "T12", "T11")
UNLABELLED_THORACIC = ("T10", "T9", "T8", "T7", "T6", "T5")
SIDES = {"left": 1.0, "right": -1.0}
PEDICLE_LEVEL_SHARE = 0.1  # the pedicles' axes lie this share of the body's height above its centre
LAMINA_HALF_HEIGHT_MM = 10.0
SPINOUS_BASE_BELOW_PEDICLES_MM = 2.0
SUPERIOR_PROCESS_RADIUS_MM = 4.0
INFERIOR_PROCESS_RADIUS_MM = 3.8
JOINT_LOW_END = 0.3  # an inferior process reaches down this share of the superior process's length from its base


@dataclass(frozen=True, eq=False)
class Vertebra:
    level: str
    center: np.ndarray
    rotation: np.ndarray  # columns: left, posterior, superior of this vertebra
    dims: dict[str, float]
    shape: Shape
    truth: dict
    superior_processes: dict[str, tuple[np.ndarray, np.ndarray]]  # per side: base and tip of its axis (LPS)


def build_spine(rng: np.random.Generator, s1_center: np.ndarray, s1_rotation: np.ndarray, lordosis_deg: float,
                tissue: dict[str, float], *, cortex_mm: float = 1.0, detail_rng: np.random.Generator | None = None,
                facet_rng: np.random.Generator | None = None) -> tuple[list[Paint], list[Paint], dict]:
    """Soft-tissue paints (discs, canal), bone paints (vertebrae with a cortical shell ``cortex_mm`` thick,
    ribs), and the truth per vertebra.

    With ``facet_rng``, the laminae of each vertebra reach down to the disc below and each vertebra above L5
    meets the one below in a pair of facet joints, drawn from that generator alone (so the other draws stay as
    they were).

    With ``detail_rng``, unlabelled thoracic vertebrae (T10 upwards, each with its pair of ribs) continue the
    spine above T11, drawn from that generator alone so that the labelled anatomy and its truth stay the
    same draw for draw.
    """
    size = float(rng.uniform(0, 1))
    scoliosis_deg = float(rng.uniform(-10, 10))
    origin, rotation = s1_center, s1_rotation
    soft, bone, truth = [], [], {}
    below = None
    for index, level in enumerate(LEVELS_CAUDAL_TO_CRANIAL):
        dims = draw_vertebra(rng, level, size)
        segment_deg = lordosis_deg * LORDOSIS_SHARE[level] if level in LORDOSIS_SHARE else float(rng.uniform(-5, 1))
        bend = np.radians(scoliosis_deg * np.sin(np.pi * index / 6) / 3)
        mid = rotation @ rotation_about([1, 0, 0], -np.radians(segment_deg) / 2) @ rotation_about([0, 1, 0], bend / 2)
        top = rotation @ rotation_about([1, 0, 0], -np.radians(segment_deg)) @ rotation_about([0, 1, 0], bend)
        disc = dims["disc_below_height"]
        soft.append(Paint(Cylinder(origin + mid[:, 2] * disc / 2, mid, dims["body_width"] / 2 - 1,
                                   dims["body_depth"] / 2 - 1, disc / 2 + 0.5), tissue["disc"]))
        inferior = origin + mid[:, 2] * disc
        center = inferior + top[:, 2] * dims["body_height"] / 2
        axial = rotation_about([0, 0, 1], np.radians(rng.uniform(-6, 6)))
        facets = None if facet_rng is None else _facets(facet_rng, level, dims, below)
        vertebra = _vertebra(level, center, top @ axial, dims, rng, facets)
        below = vertebra
        soft.append(Paint(_canal(vertebra), tissue["csf"]))
        bone.append(Paint(vertebra.shape, tissue["cortical"], LABEL_IDS[f"vertebrae_{level}"],
                          layers=((cortex_mm, tissue["cancellous"] + rng.normal(0, 15)),)))
        if level in ("T11", "T12"):
            bone.extend(_ribs(vertebra, tissue))
        truth[f"vertebrae_{level}"] = vertebra.truth
        origin, rotation = center + top[:, 2] * dims["body_height"] / 2, top
        if level == "T11":
            t11_dims = dims
    if detail_rng is not None:
        _continue_thoracic(detail_rng, origin, rotation, t11_dims, tissue, soft, bone)
    return soft, bone, truth


def _continue_thoracic(rng: np.random.Generator, origin: np.ndarray, rotation: np.ndarray, t11_dims: dict,
                       tissue: dict[str, float], soft: list[Paint], bone: list[Paint]) -> None:
    """Unlabelled T10, T9, ... stacked on T11 in a thoracic kyphosis, each with ribs reaching round to the
    front; bone that carries no label of ours, as in a real CT whose field of view runs on upwards."""
    cortical = tissue["cortical"] * rng.uniform(0.8, 1.0)
    rib_reach = float(rng.uniform(0.9, 1.15))
    for index, level in enumerate(UNLABELLED_THORACIC, start=1):
        shrink = 1 - 0.025 * index
        dims = {name: value * (shrink if name in ("body_width", "body_depth", "pedicle_width",
                                                  "canal_half_width") else 1.0) for name, value in t11_dims.items()}
        dims["body_height"] = t11_dims["body_height"] * (1 - 0.015 * index) * rng.uniform(0.95, 1.05)
        dims["disc_below_height"] = float(rng.uniform(4, 6.5))
        dims["pedicle_angle_deg"] = float(rng.uniform(0, 8))
        dims["transverse_process_length"] = float(rng.uniform(12, 18))
        segment_deg = float(rng.uniform(-6, -2))  # kyphosis: the opposite bend of the lordosis
        mid = rotation @ rotation_about([1, 0, 0], -np.radians(segment_deg) / 2)
        top = rotation @ rotation_about([1, 0, 0], -np.radians(segment_deg))
        disc = dims["disc_below_height"]
        soft.append(Paint(Cylinder(origin + mid[:, 2] * disc / 2, mid, dims["body_width"] / 2 - 1,
                                   dims["body_depth"] / 2 - 1, disc / 2 + 0.5), tissue["disc"]))
        center = origin + mid[:, 2] * disc + top[:, 2] * dims["body_height"] / 2
        axial = rotation_about([0, 0, 1], np.radians(rng.uniform(-4, 4)))
        vertebra = _vertebra(level, center, top @ axial, dims, rng)
        soft.append(Paint(_canal(vertebra), tissue["csf"]))
        bone.append(Paint(vertebra.shape, cortical, layers=((rng.uniform(0.8, 1.5),
                                                             tissue["cancellous"] + rng.normal(0, 15)),)))
        bone.extend(_ribs(vertebra, tissue, sweep_end=float(rng.uniform(2.5, 2.9)), reach=rib_reach,
                          drop_mm=float(rng.uniform(12, 30))))
        origin, rotation = center + top[:, 2] * dims["body_height"] / 2, top


def _facets(rng: np.random.Generator, level: str, dims: dict, below: Vertebra | None) -> dict:
    """How a vertebra meets the one below (``below``, None under L5): how far its laminae and spinous base drop
    so that the laminae's lower edge lies a share of the disc below its body (``LAMINA_EDGE_IN_DISC``), and,
    above L5, its facet joints' angle from the mid-sagittal plane and joint space."""
    edge_mm = dims["body_height"] / 2 + draw(rng, LAMINA_EDGE_IN_DISC) * dims["disc_below_height"]
    undropped_mm = LAMINA_HALF_HEIGHT_MM + SPINOUS_BASE_BELOW_PEDICLES_MM - PEDICLE_LEVEL_SHARE * dims["body_height"]
    facets = {"below": below, "lamina_drop_mm": max(0.0, edge_mm - undropped_mm)}
    if below is not None:
        facets |= {"angle_deg": draw(rng, FACET_ANGLE_DEG[level]), "space_mm": draw(rng, FACET_JOINT_SPACE_MM)}
    return facets


def _vertebra(level: str, center: np.ndarray, rotation: np.ndarray, dims: dict, rng, facets: dict | None = None,
              ) -> Vertebra:
    """One vertebra; with ``facets`` (``_facets``) its laminae reach down to the disc below and its inferior
    articular processes meet the superior ones of the vertebra below, else they stand apart."""
    def world(local):
        return center + rotation @ np.asarray(local, float)

    up = rotation[:, 2]
    width, depth, height = dims["body_width"], dims["body_depth"], dims["body_height"]
    parts: list[Shape] = [Cylinder(center, rotation, width / 2, depth / 2, height / 2)]
    pedicle_length = float(rng.uniform(14, 20))
    pedicle_z = PEDICLE_LEVEL_SHARE * height
    sagittal = np.radians(rng.uniform(-3, 5))
    drop = facets["lamina_drop_mm"] if facets else 0.0
    spinous_base = np.array([0.0, depth / 2 + pedicle_length + 10,
                             pedicle_z - SPINOUS_BASE_BELOW_PEDICLES_MM - drop / 2])
    superior_processes = {}
    truth = {
        "level": level,
        "body_center_lps_mm": center.tolist(),
        "superior_endplate": {"center_lps_mm": (center + up * height / 2).tolist(), "normal_lps": up.tolist()},
        "inferior_endplate": {"center_lps_mm": (center - up * height / 2).tolist(), "normal_lps": (-up).tolist()},
    }
    for side_name, side in SIDES.items():
        angle = np.radians(dims["pedicle_angle_deg"])
        axis_local = np.array([-side * np.sin(angle) * np.cos(sagittal), -np.cos(angle) * np.cos(sagittal),
                               np.sin(sagittal)])
        isthmus = np.array([side * (dims["canal_half_width"] + dims["pedicle_width"] / 2),
                            depth / 2 + pedicle_length / 2, pedicle_z])
        junction = isthmus - axis_local * pedicle_length / 2
        parts.append(segment(world(isthmus + axis_local * (pedicle_length / 2 + 0.3 * depth)), world(junction),
                             dims["pedicle_width"] / 2, dims["pedicle_height"] / 2, up))
        lamina_end = spinous_base + [side * 2, 0, 0]
        parts.append(segment(world(junction + [0, 2, -drop / 2]), world(lamina_end), 3.5,
                             LAMINA_HALF_HEIGHT_MM + drop / 2, up))  # the top edge stays where it was
        transverse_start = junction + [side * 1, 4, 0]
        parts.append(Capsule(world(transverse_start),
                             world(transverse_start + [side * dims["transverse_process_length"], 4, 2]), 4.0))
        superior_processes[side_name] = (world(junction + [side * 2, 5, 2]), world(junction + [side * 3, 8, 13]))
        parts.append(Capsule(*superior_processes[side_name], SUPERIOR_PROCESS_RADIUS_MM))
        lamina_mid = (junction + spinous_base) / 2
        root = world(lamina_mid + [side * 1, 3, -4])
        if facets and facets["below"] is not None:
            parts.extend(_inferior_process(root, side_name, facets))
        else:
            parts.append(Capsule(root, world(lamina_mid + [side * 1, 6, -17]), INFERIOR_PROCESS_RADIUS_MM))
        axis = rotation @ axis_local
        truth[f"pedicle_{side_name}"] = {
            "isthmus_center_lps_mm": world(isthmus).tolist(),
            "axis_lps": (axis / np.linalg.norm(axis)).tolist(),
            "width_mm": dims["pedicle_width"],
            "height_mm": dims["pedicle_height"],
            "transverse_angle_deg": dims["pedicle_angle_deg"],
            "sagittal_angle_deg": float(np.degrees(sagittal)),
        }
    spinous_length = float(rng.uniform(24, 32))
    tip = spinous_base + spinous_length * np.array([0, np.cos(0.45), -np.sin(0.45)])
    parts.append(segment(world(spinous_base), world(tip), 3.0, 9.0, up))
    return Vertebra(level, center, rotation, dims, Union(tuple(parts)), truth, superior_processes)


def _inferior_process(root: np.ndarray, side_name: str, facets: dict) -> list[Shape]:
    """An inferior articular process from ``root`` on the lamina down along the superior articular process of
    the vertebra below: behind and medial to it across the joint space, the joint at its angle from the
    mid-sagittal plane (0: the process straight medial of its partner, 90: straight behind it)."""
    below = facets["below"]
    base, tip = below.superior_processes[side_name]
    angle = np.radians(facets["angle_deg"])
    reach = SUPERIOR_PROCESS_RADIUS_MM + INFERIOR_PROCESS_RADIUS_MM + facets["space_mm"]
    across = reach * below.rotation @ np.array([-SIDES[side_name] * np.cos(angle), np.sin(angle), 0.0])
    upper, lower = tip + across, base + JOINT_LOW_END * (tip - base) + across
    return [Capsule(root, upper, INFERIOR_PROCESS_RADIUS_MM), Capsule(upper, lower, INFERIOR_PROCESS_RADIUS_MM)]


def _canal(vertebra: Vertebra) -> Shape:
    dims = vertebra.dims
    center = vertebra.center + vertebra.rotation @ np.array([0, dims["body_depth"] / 2 + 8, 0])
    return Cylinder(center, vertebra.rotation, dims["canal_half_width"] + 1, 9.0,
                    dims["body_height"] / 2 + dims["disc_below_height"])


def _ribs(vertebra: Vertebra, tissue: dict[str, float], *, sweep_end: float | None = None, reach: float = 1.0,
          drop_mm: float = 12.0) -> list[Paint]:
    """Ribs: from the transverse process tips along an arc laterally and forwards (floating ribs at T11-T12,
    longer ones reaching round to the front above); bone that carries no label of ours, as real ribs do."""
    dims = vertebra.dims
    if sweep_end is None:
        sweep_end = 2.3 if vertebra.level == "T11" else 1.9
    sweep = np.linspace(0.6, sweep_end, 6 if sweep_end < 2.4 else 8)
    paints = []
    for side in SIDES.values():
        arc = [np.array([side * 115 * reach * np.sin(t), -20 + 65 * reach * np.cos(t), -drop_mm * (t - sweep[0])])
               for t in sweep]
        tip = np.array([side * (dims["canal_half_width"] + dims["pedicle_width"] + dims["transverse_process_length"]),
                        dims["body_depth"] / 2 + 26, 2.0])
        for start, end in zip([tip] + arc[:-1], arc):
            rib = Capsule(vertebra.center + vertebra.rotation @ start, vertebra.center + vertebra.rotation @ end, 5.0)
            paints.append(Paint(rib, tissue["cortical"] * 0.8, layers=((1.5, tissue["cancellous"]),)))
    return paints
