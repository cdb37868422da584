"""Segmentations users already have, brought to what ``recon.segment`` returns: recon's bones with recon's ids,
on the CT's grid. Sources: a label image with names (``--label-map``, ``labels.json`` or a vocabulary word,
e.g. TotalSegmentator's ``--ml`` file with ``totalsegmentator``), or a folder of per-structure masks
(TotalSegmentator's default output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.anatomy import LABEL_IDS, recon_bone
from recon.errors import InputError
from recon.geometry import Grid
from recon.io.labels import read_label_map
from recon.resample import resample_labels
from recon.volume import LabelMap, compact_label_dtype


def existing_labels(path: str | Path, grid: Grid, label_map: str | Path | None = None) -> LabelMap:
    """The bones of an existing segmentation as recon labels on ``grid`` (nearest neighbour when its grid
    differs)."""
    source = read_label_map(path, label_map)
    bones = {index: recon_bone(name) for index, name in source.names.items() if recon_bone(name)}
    if not bones:
        raise InputError(f"{path}: none of its labels ({', '.join(sorted(source.names.values())[:6])} ...) is a "
                         "bone recon plans on; name them with --label-map (a JSON file, or totalsegmentator, verse)")
    mapped = np.zeros(source.labels.shape, compact_label_dtype(np.array(list(LABEL_IDS.values()))))
    for index, name in bones.items():
        mapped[source.labels == index] = LABEL_IDS[name]
    labels = LabelMap(source.grid, mapped, {LABEL_IDS[name]: name for name in bones.values()})
    if not labels.grid.same_as(grid, tolerance_mm=0.01 * min(grid.spacing_mm)):
        labels = resample_labels(labels, grid)
    present = set(np.unique(labels.labels).tolist())
    return LabelMap(grid, labels.labels, {i: n for i, n in labels.names.items() if i in present})
