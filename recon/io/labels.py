"""Label maps on disk: an integer NIfTI/NRRD/MHA image plus ``labels.json`` ({id: name}) beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.io.atomic import atomic_path
from recon.io.images import read_image, write_image
from recon.volume import LabelMap

NAMES_FILE = "labels.json"


def write_label_map(labels: LabelMap, path: str | Path) -> Path:
    """Write the label image (uint8 or uint16 by range) and ``labels.json`` in the same folder."""
    path = Path(path)
    dtype = np.uint8 if labels.labels.max(initial=0) < 256 else np.uint16
    write_image(labels.labels.astype(dtype), labels.grid, path)
    names = {str(index): name for index, name in sorted(labels.names.items())}
    with atomic_path(path.parent / NAMES_FILE) as temporary:
        temporary.write_text(json.dumps(names, indent=2))
    return path


def read_label_map(path: str | Path) -> LabelMap:
    """Read a label image; names come from ``labels.json`` beside it when present, else ``label_<id>``."""
    path = Path(path)
    image = read_image(path)
    values = np.asarray(image.array)
    if values.dtype.kind == "f":
        if not np.array_equal(values, np.round(values)):
            raise InputError(f"{path}: label image holds non-integer values; expected integer labels")
    labels = values.astype(np.int32 if values.max(initial=0) > 65535 else np.uint16)
    names_path = path.parent / NAMES_FILE
    present = [int(v) for v in np.unique(labels) if v != 0]
    if names_path.is_file():
        names = {int(k): str(v) for k, v in json.loads(names_path.read_text()).items()}
    else:
        names = {}
    return LabelMap(image.grid, labels, {v: names.get(v, f"label_{v}") for v in present})
