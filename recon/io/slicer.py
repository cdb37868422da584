"""3D Slicer's segmentation file (``.seg.nrrd``), written with slicerio: the label map with each segment's name,
colour and label value, so Slicer opens it with names intact."""

from __future__ import annotations

from pathlib import Path

import slicerio

from recon.anatomy import colour_of
from recon.io.atomic import atomic_path
from recon.volume import LabelMap, compact_label_dtype, label_bounding_boxes

SEGMENTATION_SUFFIX = ".seg.nrrd"


def write_segmentation(labels: LabelMap, path: str | Path) -> Path:
    """Write every present label as a segment of one layer, named after the label, atomically."""
    path = Path(path)
    boxes = label_bounding_boxes(labels.labels)
    segments = [
        {"id": name, "name": name, "labelValue": index, "layer": 0, "color": list(colour_of(name)),
         "extent": [bound for s in boxes[index] for bound in (s.start, s.stop - 1)]}
        for index, name in sorted(labels.names.items()) if index in boxes
    ]
    segmentation = {"voxels": labels.labels.astype(compact_label_dtype(labels.labels), copy=False), "ijkToLPS": labels.grid.affine_lps,
                    "segments": segments, "containedRepresentationNames": ["Binary labelmap"],
                    "masterRepresentation": "Binary labelmap"}
    with atomic_path(path) as temporary:
        slicerio.write_segmentation(str(temporary), segmentation)
    return path
