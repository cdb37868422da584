"""The built-in example that ``make demo`` runs on: a small phantom, written as DICOM and processed the way a
user's study is: loaded, segmented by the shipped model, checked against the phantom's truth, meshed."""

from __future__ import annotations

import json
from pathlib import Path

from recon.evaluation.cohort import evaluate_cohort
from recon.io.atomic import atomic_path
from recon.io.images import write_image
from recon.io.labels import write_label_map
from recon.io.loading import description_of, read_ct
from recon.io.mesh_files import write_mesh_set
from recon.io.slicer import write_segmentation
from recon.mesh import mesh_labels
from recon.phantom.synth import synthesize
from recon.preview import render_preview
from recon.segmentation.infer import segment

EXAMPLE_SEED = 7


def run_demo(out: str | Path) -> dict:
    """Synthesize the example phantom as DICOM under ``out``, load it back and describe it (``info.json``),
    convert it to NIfTI, segment it (``segmentation/``), evaluate the segmentation against the phantom's
    truth (``evaluation/``), mesh the bones (``meshes/``) and render a preview with the labels."""
    out = Path(out)
    case = synthesize(out, count=1, seed=EXAMPLE_SEED, size="small", fmt="dicom")[0]
    loaded = read_ct(case / "ct")
    description = description_of(loaded)
    write_image(loaded.volume.hu, loaded.volume.grid, out / "example_ct.nii.gz")
    labels = segment(loaded.volume)
    write_label_map(labels, out / "segmentation" / "labels.nii.gz")
    write_segmentation(labels, out / "segmentation" / "segmentation.seg.nrrd")
    evaluate_cohort(out / "segmentation" / "labels.nii.gz", case / "labels.nii.gz", out=out / "evaluation")
    write_mesh_set(mesh_labels(labels), out / "meshes", formats=("stl", "glb"))
    render_preview(loaded.volume, out / "preview.png", labels=labels,
                   title="recon example phantom: the shipped model's labels, bone window")
    with atomic_path(out / "info.json") as temporary:
        temporary.write_text(json.dumps(description, indent=2))
    return description
