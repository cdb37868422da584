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
from recon.plan.spine import Screw, SpinePlan

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                  "Schema/markups-schema-v1.0.3.json#")
SCREW_COLOUR = (0.85, 0.2, 0.85)
CYLINDER_SECTIONS = 24


def write_spine_plan(plan: SpinePlan, out: str | Path) -> list[Path]:
    """Write plan.json (its spine part), plan.csv, plan.mrk.json and screws.stl into ``out``."""
    out = Path(out)
    written = [update_plan_json(out / "plan.json", plan.to_json())]
    written.append(_write_text(out / "plan.csv", _screw_table(plan.screws)))
    markups = [_line(screw.title, screw.entry_lps_mm, screw.tip_lps_mm) for screw in plan.planned]
    written.append(_write_text(out / "plan.mrk.json", json.dumps({"@schema": MARKUPS_SCHEMA, "markups": markups},
                                                                  indent=2)))
    if plan.planned:
        vertices, faces = screw_mesh(plan.planned)
        write_mesh(vertices, faces, out / "screws.stl", name="pedicle screws")
        written.append(out / "screws.stl")
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


def _line(name: str, start, end) -> dict:
    return {
        "type": "Line", "coordinateSystem": "LPS", "coordinateUnits": "mm", "name": name, "locked": True,
        "controlPoints": [{"id": str(n + 1), "label": label, "position": [float(v) for v in point],
                           "positionStatus": "defined"}
                          for n, (label, point) in enumerate((("entry", start), ("tip", end)))],
        "display": {"color": list(SCREW_COLOUR), "selectedColor": list(SCREW_COLOUR), "visibility": True},
    }


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path
