"""``report.html``: one self-contained page that shows a run's plan the way a reviewer wants it.

Warnings first; an interactive 3D view (plotly, its JavaScript embedded, so the page opens offline) of the
bones with the planned screws and cups, each a legend entry that toggles it; axial slices through each
planned level with the label outlines and the screws' projections; the plan as tables; provenance; and the
statement that the plan is for research use and needs a clinician's review. No patient data is used: the
page is built from the labels, the CT's pixels, the plan and the provenance.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402

from recon.anatomy import colour_of  # noqa: E402
from recon.io.atomic import atomic_path  # noqa: E402
from recon.volume import LabelMap, Volume  # noqa: E402

STATEMENT = ("For research use only. This plan was made automatically and must be reviewed by a qualified "
             "clinician before any clinical use.")
REPORT_FACES = 4000  # per bone in the 3D view, to keep the page light
BONE_WINDOW_HU = (-400, 1200)
SLICE_HALF_MM = 60.0


def write_report(path, *, volume: Volume, labels: LabelMap, meshes: dict, implants: dict, plan: dict,
                 provenance: dict) -> None:
    """Write the report; ``implants`` maps a name ("pedicle screws", ...) to (vertices, faces) in LPS mm."""
    sections = [
        f"<h1>recon plan</h1><p class='statement'>{html.escape(STATEMENT)}</p>",
        _warnings(plan, provenance),
        "<h2>3D view</h2>" + _scene(meshes, implants),
        "<h2>Slices at the planned levels</h2>" + _slices(volume, labels, plan),
        "<h2>Pedicle screws</h2>" + _screw_table(plan.get("screws", [])),
        "<h2>Acetabular cups</h2>" + _cup_table(plan.get("hip", [])),
        "<h2>Provenance</h2>" + _provenance(provenance),
    ]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>recon plan</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")
    with atomic_path(path) as temporary:
        temporary.write_text(page, encoding="utf-8")


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}
.warnings{background:#fde2e1;border:3px solid #c0392b;padding:.5em 1em;font-weight:bold}
.ok{background:#e3f4e1;border:2px solid #2e7d32;padding:.5em 1em}.statement{font-weight:bold;color:#8a1c1c}
img{max-width:100%}"""


def _warnings(plan: dict, provenance: dict) -> str:
    warnings = list(dict.fromkeys(plan.get("warnings", []) + plan.get("hip_warnings", [])
                                  + provenance.get("warnings", [])))
    refused = [f"{s['vertebra']} {s['side']}: {s['reason']}" for s in plan.get("screws", [])
               if s["status"] != "planned"]
    refused += [f"hip {c['side']}: {c['reason']}" for c in plan.get("hip", []) if c["status"] != "planned"]
    if not warnings and not refused:
        return "<div class='ok'>No warnings.</div>"
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    items += "".join(f"<li>not plannable: {html.escape(r)}</li>" for r in refused)
    return f"<div class='warnings'><h2>Warnings</h2><ul>{items}</ul></div>"


def _scene(meshes: dict, implants: dict) -> str:
    figure = go.Figure()
    for name, mesh in meshes.items():
        vertices, faces = _lighter(mesh.vertices_lps_mm, mesh.faces)
        figure.add_trace(_mesh_trace(name, vertices, faces, colour_of(name), 1.0))
    for name, (vertices, faces) in implants.items():
        figure.add_trace(_mesh_trace(name, np.asarray(vertices), np.asarray(faces), (0.85, 0.2, 0.85)
                                     if "screw" in name else (0.2, 0.75, 0.9), 1.0))
    figure.update_layout(scene={"aspectmode": "data", "xaxis_title": "L (mm)", "yaxis_title": "P (mm)",
                                "zaxis_title": "S (mm)"}, height=700, margin={"l": 0, "r": 0, "t": 30, "b": 0},
                         legend={"title": "click to show or hide"})
    return figure.to_html(full_html=False, include_plotlyjs=True, config={"displaylogo": False})


def _mesh_trace(name: str, vertices: np.ndarray, faces: np.ndarray, rgb, opacity: float) -> go.Mesh3d:
    colour = "rgb({},{},{})".format(*(int(255 * c) for c in rgb))
    return go.Mesh3d(x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2], i=faces[:, 0], j=faces[:, 1],
                     k=faces[:, 2], name=name, color=colour, opacity=opacity, showlegend=True, flatshading=False)


def _lighter(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(faces) <= REPORT_FACES:
        return vertices, faces
    import fast_simplification

    return fast_simplification.simplify(vertices.astype(np.float32), faces.astype(np.int64),
                                        target_reduction=1 - REPORT_FACES / len(faces))


def _slices(volume: Volume, labels: LabelMap, plan: dict) -> str:
    """One axial slice (through the isthmus centres) per planned level, outlines and screw projections."""
    levels: dict[str, list[dict]] = {}
    for screw in plan.get("screws", []):
        if screw["status"] == "planned":
            levels.setdefault(screw["vertebra"], []).append(screw)
    images = [_level_image(volume, labels, name, screws) for name, screws in levels.items()]
    if not images:
        return "<p>No planned level.</p>"
    return "".join(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>" for name, data in images)


def _level_image(volume: Volume, labels: LabelMap, name: str, screws: list[dict]) -> tuple[str, str]:
    centre = np.mean([s["isthmus_center_lps_mm"] for s in screws], axis=0)
    axis = np.arange(-SLICE_HALF_MM, SLICE_HALF_MM, 0.5)
    x, y = np.meshgrid(centre[0] + axis, centre[1] + axis, indexing="xy")
    points = np.stack([x, y, np.full_like(x, centre[2])], axis=-1)
    index = np.rint(volume.grid.lps_to_index(points)).astype(int)
    inside = np.all((index >= 0) & (index < np.asarray(volume.grid.shape)), axis=-1)
    clipped = np.clip(index, 0, np.asarray(volume.grid.shape) - 1)
    hu = np.where(inside, volume.hu[clipped[..., 0], clipped[..., 1], clipped[..., 2]], -1000)
    label = np.where(inside, labels.labels[clipped[..., 0], clipped[..., 1], clipped[..., 2]], 0)
    figure, ax = plt.subplots(figsize=(4.2, 4.2), dpi=90)
    extent = (axis[0] + centre[0], axis[-1] + centre[0], axis[-1] + centre[1], axis[0] + centre[1])
    ax.imshow(hu, cmap="gray", vmin=BONE_WINDOW_HU[0], vmax=BONE_WINDOW_HU[1], extent=extent)
    for index_value in np.unique(label[label > 0]):
        ax.contour(np.flipud(label == index_value), levels=[0.5], extent=extent, linewidths=0.8,
                   colors=[colour_of(labels.names.get(int(index_value), ""))])
    for screw in screws:
        entry, tip = np.asarray(screw["entry_lps_mm"]), np.asarray(screw["tip_lps_mm"])
        ax.plot([entry[0], tip[0]], [entry[1], tip[1]], color="magenta", linewidth=2)
    ax.set_title(f"{name.removeprefix('vertebrae_')} axial (projected screws)", fontsize=9)
    ax.set_xlabel("L (mm)")
    ax.set_ylabel("P (mm)")
    # x grows towards the patient's left, drawn to the right: the radiological view
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return name, base64.b64encode(buffer.getvalue()).decode()


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ", ".join(f"{v:.1f}" for v in value)
    return str(value)


def _screw_table(screws: list[dict]) -> str:
    if not screws:
        return "<p>No spine plan.</p>"
    rows = [[s["vertebra"].removeprefix("vertebrae_"), s["side"], s["status"],
             f"{s['diameter_mm']:g} x {s['length_mm']:g}" if s["status"] == "planned" else s["reason"],
             s["transverse_angle_deg"], s["sagittal_angle_deg"], s["min_cortex_distance_mm"], s["breach_mm"],
             s["grade"], s["breach_direction"]] for s in screws]
    return _table(["level", "side", "status", "diameter x length (mm) / reason", "transverse (deg)",
                   "sagittal (deg)", "cortex margin (mm)", "breach (mm)", "grade", "breach direction"], rows)


def _cup_table(cups: list[dict]) -> str:
    if not cups:
        return "<p>No hip plan.</p>"
    rows = [[c["side"], c["status"], c["cup_diameter_mm"] if c["status"] == "planned" else c["reason"],
             c["cup_center_lps_mm"], c["inclination_deg"], c["anteversion_deg"], c["coverage_pct"],
             c["femoral_head_radius_mm"], (c.get("femoral_head_fitted_to") or "").replace("_", " ")] for c in cups]
    return _table(["side", "status", "cup (mm) / reason", "centre (LPS mm)", "inclination (deg)",
                   "anteversion (deg)", "coverage (%)", "head radius (mm)", "head fitted to"], rows)


def _provenance(provenance: dict) -> str:
    stages = [[name, stage["seconds"], stage["peak_memory_gb"]] for name, stage in provenance.get("stages", {}).items()]
    versions = ", ".join(f"{name} {version}" for name, version in provenance.get("dependencies", {}).items()
                         if version)
    model = provenance.get("model", {})
    return (f"<p>recon {html.escape(str(provenance.get('recon_version')))}; model: "
            f"{html.escape(str(model.get('name') or model.get('source')))} "
            f"{html.escape(str(model.get('sha256') or ''))[:16]}; {html.escape(versions)}</p>"
            + _table(["stage", "seconds", "peak memory (GB)"], stages)
            + f"<p class='statement'>{html.escape(STATEMENT)}</p>")
