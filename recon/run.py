"""``recon run``: one CT study in, a reviewable plan out (``recon.run_study``).

Stages: load the CT, segment it (or bring an existing segmentation), write the labels (and, for DICOM input,
a DICOM SEG in the source study without the patient's identity), mesh the bones,
plan screws and cups, write the plan files, a scene with bones and implants, a preview, report.html, and
``provenance.json`` (versions, model, input checksum, options, the series chosen and why, per-stage wall
time and peak memory, warnings). Every file is written to a temporary name and renamed, so a run that
fails or is killed leaves no half-written file under a final name. Nothing in the outputs comes from DICOM
text: no names, identifiers, dates or paths of the input.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import resource
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from recon import __version__
from recon.anatomy import VOCABULARIES
from recon.errors import InputError
from recon.io.atomic import atomic_path
from recon.io.dicom_files import read_dicom_files
from recon.io.dicom_seg import write_dicom_seg
from recon.io.labels import write_label_map
from recon.io.loading import read_ct
from recon.io.lock import output_lock
from recon.io.mesh_files import write_glb_scene, write_mesh_set
from recon.io.plan_files import cup_mesh, screw_mesh, write_plan
from recon.io.slicer import write_segmentation
from recon.memory import RUN_BYTES_PER_VOXEL, require_memory
from recon.mesh import mesh_labels
from recon.plan.hip import plan_hip
from recon.plan.spine import plan_spine
from recon.preview import render_preview
from recon.segmentation.levels import UNANCHORED
from recon.segmentation.model import sha256_of
from recon.segmentation.totalseg import TOTALSEGMENTATOR
from recon.report import write_report
from recon.resample import require_usable_zooms

log = logging.getLogger(__name__)

PROCEDURES = ("spine", "hip", "all")
DEPENDENCIES = ("numpy", "scipy", "pydicom", "SimpleITK", "nibabel", "scikit-image", "trimesh", "torch", "monai",
                "highdicom", "safetensors")
IMPLANT_COLOURS = {"pedicle screws": (0.85, 0.2, 0.85), "acetabular cups": (0.2, 0.75, 0.9)}


def run_study(input_path: str | Path, out: str | Path, *, procedure: str = "all", model: str | Path | None = None,
              seg: str | Path | None = None, label_map: str | Path | None = None,
              series_uid: str | None = None, device: str = "cpu", seg_with_identity: bool = False,
              zooms: tuple[float, ...] = ()) -> dict:
    """Run the whole pipeline on one study and write its outputs into ``out``; returns the provenance.

    ``seg_with_identity``: the DICOM SEG keeps the patient's and the visit's identifying attributes (otherwise
    empty). ``zooms``: ``recon.segment``'s test-time zooms. Another run into the same ``out`` at the same time is
    refused (``OutputBusyError``)."""
    if procedure not in PROCEDURES:
        raise InputError(f"procedure must be one of {', '.join(PROCEDURES)}, got {procedure!r}")
    require_usable_zooms(zooms, network=seg is None and model != TOTALSEGMENTATOR)
    with output_lock(Path(out)):
        return _run_study(Path(input_path), Path(out), procedure, model, seg, label_map, series_uid, device,
                          seg_with_identity, zooms)


def _run_study(input_path: Path, out: Path, procedure, model, seg, label_map, series_uid, device,
               seg_with_identity, zooms) -> dict:
    stages: dict[str, dict] = {}
    warnings: list[str] = []
    with _stage("load", stages):
        loaded = read_ct(input_path, series_uid=series_uid)
        warnings += list(loaded.warnings)
        require_memory(loaded.volume.hu.size, RUN_BYTES_PER_VOXEL, "recon run", str(input_path))
    with _stage("segment", stages):
        labels, model_record = _labels(loaded.volume, model, seg, label_map, device, zooms)
        warnings += [UNANCHORED] if labels.level_anchor == "none" else []
    with _stage("write labels", stages):
        write_label_map(labels, out / "labels.nii.gz")
        write_segmentation(labels, out / "segmentation.seg.nrrd")
    if loaded.series:
        with _stage("dicom seg", stages):
            warnings += _write_dicom_seg(labels, input_path, loaded.series, out / "segmentation.dcm",
                                         seg_with_identity)
    with _stage("mesh", stages):
        meshes = mesh_labels(labels)
        write_mesh_set(meshes, out / "meshes", formats=("stl",))
    plans = {}
    if procedure in ("spine", "all"):
        with _stage("plan spine", stages):
            plans["spine"] = plan_spine(labels, ct=loaded.volume)
            warnings += plans["spine"].warnings
    if procedure in ("hip", "all"):
        with _stage("plan hip", stages):
            plans["hip"] = plan_hip(labels, ct=loaded.volume)
            warnings += plans["hip"].warnings
    with _stage("write plan", stages):
        write_plan(out, **plans)
        _write_scene(meshes, plans, out / "scene.glb")
    with _stage("preview", stages):
        render_preview(loaded.volume, out / "preview.png", labels=labels,
                       title="recon: bone labels (research use; needs a clinician's review)")
    provenance = {
        "recon_version": __version__,
        "python": platform.python_version(),
        "dependencies": {name: _version(name) for name in DEPENDENCIES},
        "model": model_record,
        "input": {"sha256": input_checksum(input_path), "kind": "folder" if input_path.is_dir() else "file"},
        "options": {"procedure": procedure, "model": str(model) if model else None, "seg": bool(seg),
                    "label_map": label_map if label_map in VOCABULARIES else ("file" if label_map else None),
                    "series_uid": series_uid, "device": device, "seg_with_identity": seg_with_identity,
                    "zooms": list(zooms)},
        "series": [_series_record(series) for series in loaded.series],
        "stages": stages,
        "warnings": warnings,
        "statement": "Research use only: every plan needs a clinician's review before any clinical use.",
    }
    with _stage("report", stages):
        implants = _implant_meshes(plans)
        write_report(out / "report.html", volume=loaded.volume, labels=labels, meshes=meshes, implants=implants,
                     plan=json.loads((out / "plan.json").read_text()), provenance=provenance)
    with atomic_path(out / "provenance.json") as temporary:
        temporary.write_text(json.dumps(provenance, indent=2))
    return provenance


@contextmanager
def _stage(name: str, stages: dict):
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports kilobytes
    stages[name] = {"seconds": round(seconds, 3), "peak_memory_gb": round(peak_gb, 3)}
    if seconds > 1:
        log.info("%s: %.1f s", name, seconds)


def _labels(volume, model, seg, label_map, device, zooms):
    if seg is not None:
        from recon.segmentation.sources import existing_labels

        return existing_labels(seg, volume.grid, label_map), {"name": None, "source": "existing segmentation"}
    from recon.segmentation.infer import segment
    from recon.segmentation.model import WEIGHTS_FILE, model_dir
    from recon.segmentation.totalseg import installed_version, run_totalsegmentator

    if model == TOTALSEGMENTATOR:
        return run_totalsegmentator(volume, device=device), {"name": TOTALSEGMENTATOR, "version": installed_version()}
    folder = model_dir(model)
    loaded = _loaded_model(str(folder), (folder / WEIGHTS_FILE).stat().st_mtime_ns, device)
    record = {"name": loaded.card.get("name"), "sha256": loaded.card.get("sha256"),
              "training_command": loaded.card.get("training", {}).get("command")}
    return segment(volume, model=loaded, zooms=zooms), record


@functools.lru_cache(maxsize=2)
def _loaded_model(folder: str, weights_mtime_ns: int, device: str):
    """A model loaded once per process (a batch worker runs many studies), again when its weights change."""
    from recon.segmentation.model import load_model

    loaded = load_model(folder)
    loaded.network.to(device)
    return loaded


def _write_dicom_seg(labels, input_path: Path, series: tuple[dict, ...], path: Path, with_identity: bool) -> list[str]:
    """The DICOM SEG of the labels in the source series' study; a warning instead when it cannot be made."""
    chosen = next(s for s in series if s["selected"])
    if not chosen["series_uid"]:
        return ["no segmentation.dcm: the source series has no SeriesInstanceUID to reference"]
    files, _ = read_dicom_files(input_path)
    sources = [f.dataset for f in files if str(f.dataset.get("SeriesInstanceUID", "")) == chosen["series_uid"]]
    try:
        write_dicom_seg(labels, sources, path, include_patient=with_identity)
    except (ValueError, AttributeError, KeyError, TypeError) as err:
        return [f"no segmentation.dcm: highdicom could not build it from the source series ({type(err).__name__}: "
                f"{str(err)[:200]})"]
    return []


def _implant_meshes(plans: dict) -> dict:
    parts = {}
    if "spine" in plans and plans["spine"].planned:
        parts["pedicle screws"] = screw_mesh(plans["spine"].planned)
    if "hip" in plans and plans["hip"].planned:
        parts["acetabular cups"] = cup_mesh(plans["hip"].planned)
    return parts


def _write_scene(meshes: dict, plans: dict, path: Path) -> None:
    parts = {name: (mesh.vertices_lps_mm, mesh.faces) for name, mesh in meshes.items()}
    implants = _implant_meshes(plans)
    write_glb_scene({**parts, **implants}, path, colours={name: IMPLANT_COLOURS[name] for name in implants})


def _series_record(series: dict) -> dict:
    """What the provenance keeps of a series: its fate and shape, not its free-text description."""
    keep = ("series_uid", "n_files", "modality", "selected", "skipped_reason")
    return {key: series.get(key) for key in keep}


def input_checksum(path: Path) -> str:
    """sha256 over the input's files in a stable order (each file's sha256 and its relative position)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(bytes.fromhex(sha256_of(file)))
    return digest.hexdigest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
