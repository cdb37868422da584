"""The built-in example that ``make demo`` runs on: a small phantom, written as DICOM and processed."""

from __future__ import annotations

import json
from pathlib import Path

from recon.io.atomic import atomic_path
from recon.io.labels import read_label_map
from recon.io.images import write_image
from recon.io.loading import description_of, read_ct
from recon.io.mesh_files import write_mesh_set
from recon.io.slicer import write_segmentation
from recon.mesh import mesh_labels
from recon.phantom.synth import synthesize
from recon.preview import render_preview

EXAMPLE_SEED = 7


def run_demo(out: str | Path) -> dict:
    """Synthesize the example phantom as DICOM under ``out``, load it back, describe it, convert it to
    NIfTI, render a preview with its labels and mesh its bones (``out/meshes``)."""
    out = Path(out)
    case = synthesize(out, count=1, seed=EXAMPLE_SEED, size="small", fmt="dicom")[0]
    loaded = read_ct(case / "ct")
    description = description_of(loaded)
    write_image(loaded.volume.hu, loaded.volume.grid, out / "example_ct.nii.gz")
    labels = read_label_map(case / "labels.nii.gz")
    render_preview(loaded.volume, out / "preview.png", labels=labels, title="recon example phantom, bone window")
    write_mesh_set(mesh_labels(labels), out / "meshes", formats=("stl", "glb"))
    write_segmentation(labels, out / "meshes" / "segmentation.seg.nrrd")
    with atomic_path(out / "info.json") as temporary:
        temporary.write_text(json.dumps(description, indent=2))
    return description
