"""Surface meshes on disk: STL, PLY and OBJ per bone (LPS millimetres), and one glTF binary scene.

STL carries ``SPACE=LPS`` in its 80-byte header, which 3D Slicer reads to place the model; PLY and OBJ carry
the same words as a comment. glTF (GLB) wants metres and +Y up: the scene maps patient left to +X, superior
to +Y and anterior to +Z (the front of a glTF asset faces +Z), a proper rotation, so windings stay outward.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import trimesh
from trimesh.visual.material import PBRMaterial

from recon import __version__
from recon.anatomy import colour_of
from recon.errors import InputError
from recon.io.atomic import atomic_path

MESH_FORMATS = ("stl", "ply", "obj", "glb")
SPACE_TAG = "SPACE=LPS"
STL_HEADER_BYTES = 80
GLTF_FRAME = "scene.glb in metres with +X patient left, +Y superior, +Z anterior (glTF: +Y up, front faces +Z)"
LPS_MM_TO_GLTF_M = 0.001 * np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def file_stem(name: str) -> str:
    """A label name as a file name: letters, digits, ``_``, ``-`` and ``.`` kept, anything else ``_``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")
    if not stem:
        raise InputError(f"label name {name!r} cannot be a file name; rename the label")
    return stem


def write_mesh(vertices_lps_mm: np.ndarray, faces: np.ndarray, path, *, name: str) -> None:
    """Write one mesh as STL, PLY or OBJ (by the file's suffix), atomically."""
    surface = trimesh.Trimesh(vertices_lps_mm, faces, process=False)
    kind = str(path).rsplit(".", 1)[-1].lower()
    if kind == "stl":
        header = f"{SPACE_TAG} recon {__version__} {name}".encode("ascii", "replace")[:STL_HEADER_BYTES]
        data = header.ljust(STL_HEADER_BYTES, b" ") + trimesh.exchange.stl.export_stl(surface)[STL_HEADER_BYTES:]
    elif kind == "ply":
        data = trimesh.exchange.ply.export_ply(surface, encoding="binary", include_attributes=False)
        data = data.replace(b"\nelement vertex", f"\ncomment {SPACE_TAG} units mm {name}\nelement vertex".encode(), 1)
    elif kind == "obj":
        body = trimesh.exchange.obj.export_obj(surface, include_normals=False, include_texture=False,
                                               header=None)
        data = f"# {SPACE_TAG}, millimetres, {name}, written by recon {__version__}\n{body}".encode()
    else:
        raise InputError(f"{path}: unknown mesh format; use one of .stl, .ply, .obj")
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_glb_scene(parts: dict[str, tuple[np.ndarray, np.ndarray]], path, *,
                    colours: dict[str, tuple[float, float, float]] | None = None) -> None:
    """One glTF binary holding every part as a named node with its colour (metres, +Y up)."""
    scene = trimesh.Scene()
    for name, (vertices_lps_mm, faces) in parts.items():
        rgb = (colours or {}).get(name) or colour_of(name)
        material = PBRMaterial(name=name, baseColorFactor=[*(int(255 * c) for c in rgb), 255],
                               metallicFactor=0.0, roughnessFactor=0.8)
        surface = trimesh.Trimesh(np.asarray(vertices_lps_mm) @ LPS_MM_TO_GLTF_M.T, faces, process=False,
                                  visual=trimesh.visual.TextureVisuals(material=material))
        scene.add_geometry(surface, node_name=name, geom_name=name)
    with atomic_path(path) as temporary:
        temporary.write_bytes(trimesh.exchange.gltf.export_glb(scene, include_normals=True))


def write_mesh_set(meshes: dict, out, *, formats=("stl",), settings: dict | None = None) -> Path:
    """Write each mesh as ``OUT/<name>.<format>`` (STL, PLY, OBJ), all of them as ``OUT/scene.glb`` when
    ``glb`` is asked for, and ``OUT/meshes.json`` with every mesh's files and quality figures."""
    unknown = sorted(set(formats) - set(MESH_FORMATS))
    if unknown or not formats:
        raise InputError(f"unknown mesh format {', '.join(unknown)}; choose from {', '.join(MESH_FORMATS)}")
    stems = [file_stem(name) for name in meshes]
    if len(set(stems)) != len(stems):
        raise InputError(f"two label names give the same file name ({', '.join(sorted(meshes))}); rename one")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; name an output folder")
    out.mkdir(parents=True, exist_ok=True)
    record = {"frame": "LPS millimetres (STL, PLY, OBJ); " + GLTF_FRAME, "settings": settings or {}, "meshes": {}}
    for name, mesh in meshes.items():
        files = []
        for kind in (f for f in formats if f != "glb"):
            target = out / f"{file_stem(name)}.{kind}"
            write_mesh(mesh.vertices_lps_mm, mesh.faces, target, name=name)
            files.append(target.name)
        record["meshes"][name] = {"files": files, **mesh.quality.as_dict()}
    if "glb" in formats:
        write_glb_scene({name: (m.vertices_lps_mm, m.faces) for name, m in meshes.items()}, out / "scene.glb")
        record["scene"] = "scene.glb"
    with atomic_path(out / "meshes.json") as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n")
    return out / "meshes.json"
