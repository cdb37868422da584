"""Plans on disk: plan.json (one section per procedure), plan.csv, 3D Slicer markups and implant meshes.

Markups follow 3D Slicer's markups JSON schema 1.0.3 in LPS millimetres: Slicer places them without any
conversion. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import trimesh

from recon.io.atomic import atomic_path
from recon.io.mesh_files import write_mesh
from recon.plan.hip import CupPlan, HipPlan
from recon.plan.spine import Screw, SpinePlan

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                  "Schema/markups-schema-v1.0.3.json#")
SCREW_COLOUR = (0.85, 0.2, 0.85)
CUP_COLOUR = (0.2, 0.75, 0.9)
CUP_SHELL_MM = 3.0
CUP_AXIS_LINE_MM = 50.0
CYLINDER_SECTIONS = 24


def write_plan(out: str | Path, *, spine: SpinePlan | None = None, hip: HipPlan | None = None) -> list[Path]:
    """Write the given sections into ``out``/plan.json (keeping a section already there that is not given),
    then plan.mrk.json from everything plan.json holds, and plan.csv, screws.stl and cups.stl for the
    sections given."""
    out = Path(out)
    sections = {**(spine.to_json() if spine else {}), **(hip.to_json() if hip else {})}
    plan_json = update_plan_json(out / "plan.json", sections)
    merged = json.loads(plan_json.read_text())
    markups = _screw_lines(merged) + _hip_markups(merged)
    written = [plan_json, _write_text(out / "plan.mrk.json",
                                      json.dumps({"@schema": MARKUPS_SCHEMA, "markups": markups}, indent=2))]
    if spine is not None:
        written.append(_write_text(out / "plan.csv", _screw_table(spine.screws)))
        if spine.planned:
            write_mesh(*screw_mesh(spine.planned), out / "screws.stl", name="pedicle screws")
            written.append(out / "screws.stl")
    if hip is not None and hip.planned:
        write_mesh(*cup_mesh(hip.planned), out / "cups.stl", name="acetabular cups")
        written.append(out / "cups.stl")
    return written


def update_plan_json(path: Path, section: dict) -> Path:
    """Write ``section``'s keys into plan.json, keeping the other procedures' keys already there."""
    plan = {}
    if path.exists():
        try:
            plan = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            plan = {}
    plan.update(section)
    return _write_text(path, json.dumps(plan, indent=2))


def cup_mesh(cups: list[CupPlan]) -> tuple[np.ndarray, np.ndarray]:
    """Closed hemispherical shells (CUP_SHELL_MM thick) of the cups' outer diameters, opening along their
    axes, as one mesh in LPS mm."""
    parts = [_hemispherical_shell(np.asarray(cup.cup_center_lps_mm), np.asarray(cup.cup_axis_lps),
                                  cup.cup_diameter_mm / 2) for cup in cups]
    combined = trimesh.util.concatenate(parts)
    return np.asarray(combined.vertices), np.asarray(combined.faces)


def _hemispherical_shell(center: np.ndarray, axis: np.ndarray, radius: float) -> trimesh.Trimesh:
    rings, segments = 16, 64
    polar = np.linspace(0.0, np.pi / 2, rings + 1)
    azimuth = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    dome = np.stack([np.outer(np.sin(polar), np.cos(azimuth)), np.outer(np.sin(polar), np.sin(azimuth)),
                     -np.outer(np.cos(polar), np.ones(segments))], axis=-1)  # apex at -z, rim at z = 0
    vertices = np.concatenate([radius * dome.reshape(-1, 3), (radius - CUP_SHELL_MM) * dome.reshape(-1, 3)])
    inner_start = dome.shape[0] * segments
    faces = []
    for ring in range(rings):
        for k in range(segments):
            a, b = ring * segments + k, ring * segments + (k + 1) % segments
            c, d = a + segments, b + segments
            if ring:  # the first ring meets at the apex: one triangle per segment there
                faces += [[a, d, b], [inner_start + a, inner_start + b, inner_start + d]]
            faces += [[a, c, d], [inner_start + a, inner_start + d, inner_start + c]]
    rim = rings * segments
    for k in range(segments):
        a, b = rim + k, rim + (k + 1) % segments
        faces += [[a, inner_start + b, b], [a, inner_start + a, inner_start + b]]
    shell = trimesh.Trimesh(vertices, np.array(faces), process=True)
    rotation = trimesh.geometry.align_vectors([0.0, 0.0, 1.0], axis)
    shell.apply_transform(rotation)
    shell.apply_translation(center)
    if shell.volume < 0:
        shell.invert()
    return shell


def screw_mesh(screws: list[Screw]) -> tuple[np.ndarray, np.ndarray]:
    """Closed cylinders of the screws' diameters from entry to tip, as one mesh in LPS mm."""
    parts = [trimesh.creation.cylinder(radius=screw.diameter_mm / 2, sections=CYLINDER_SECTIONS,
                                       segment=[screw.entry_lps_mm, screw.tip_lps_mm]) for screw in screws]
    combined = trimesh.util.concatenate(parts)
    return np.asarray(combined.vertices), np.asarray(combined.faces)


def _screw_table(screws: list[Screw]) -> str:
    names = [f.name for f in fields(Screw)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for screw in screws:
        row = asdict(screw)
        writer.writerow([_cell(row[name]) for name in names])
    return buffer.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(f"{v:.3f}" for v in value)
    return str(value)


def _screw_lines(plan: dict) -> list[dict]:
    return [_line(Screw(**screw).title, screw["entry_lps_mm"], screw["tip_lps_mm"], SCREW_COLOUR)
            for screw in plan.get("screws", []) if screw["status"] == "planned"]


def _hip_markups(plan: dict) -> list[dict]:
    markups = []
    for cup in plan.get("hip", []):
        if cup["status"] != "planned":
            continue
        tip = np.asarray(cup["cup_center_lps_mm"]) + CUP_AXIS_LINE_MM * np.asarray(cup["cup_axis_lps"])
        markups.append(_line(f"cup {cup['side']} {cup['cup_diameter_mm']:g} mm axis", cup["cup_center_lps_mm"],
                             tip, CUP_COLOUR))
    landmarks = next((cup["app_landmarks_lps_mm"] for cup in plan.get("hip", []) if cup.get("app_landmarks_lps_mm")),
                     None)
    if landmarks:
        markups.append({"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm",
                        "name": "anterior pelvic plane landmarks", "locked": True,
                        "controlPoints": [{"id": str(n + 1), "label": name, "position": [float(v) for v in point],
                                           "positionStatus": "defined"}
                                          for n, (name, point) in enumerate(landmarks.items())],
                        "display": {"color": list(CUP_COLOUR), "selectedColor": list(CUP_COLOUR)}})
    return markups


def _line(name: str, start, end, colour) -> dict:
    return {
        "type": "Line", "coordinateSystem": "LPS", "coordinateUnits": "mm", "name": name, "locked": True,
        "controlPoints": [{"id": str(n + 1), "label": label, "position": [float(v) for v in point],
                           "positionStatus": "defined"}
                          for n, (label, point) in enumerate((("entry", start), ("tip", end)))],
        "display": {"color": list(colour), "selectedColor": list(colour), "visibility": True},
    }


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path
