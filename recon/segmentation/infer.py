"""``recon.segment``: bones of a CT by the shipped network, on the input's own grid.

The CT is resampled (averaged, where it is finer) onto an axis-aligned LPS grid at the model's spacing, the
network runs in sliding windows on it and on its left-right mirror image (``window.py``), and on request on
the CT resampled a little finer and coarser (test-time zooms, its scores averaged in), levels are made
consistent (``levels.py``), pelvic bones found beside the lumbar spine are dropped (``placement.py``), bone the
network left out is given to its neighbouring label and the marrow a bone encloses to that bone
(``bone_fill.py``), and each label returns to the input grid by interpolating its class score linearly, one
label at a time on its own bounding box: smooth boundaries without ever holding full-resolution scores for every
class (only one running maximum and the uint8 labels).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from recon.anatomy import LABEL_IDS, is_vertebra
from recon.geometry import Grid
from recon.resample import (canonical_grid, require_usable_zooms, resample_array, resample_volume,
                            zoomed_grid)
from recon.segmentation.bone_fill import ALL_PLANES, PLANES_ALONG_THE_SPINE, SOLID_BONES, fill_bone, fill_enclosed
from recon.segmentation.levels import assign_levels, level_anchor
from recon.segmentation.model import Model, load_model
from recon.segmentation.placement import drop_pelvis_beside_spine
from recon.segmentation.totalseg import TOTALSEGMENTATOR, run_totalsegmentator
from recon.segmentation.window import normalise, predict_mirrored_scores
from recon.volume import LabelMap, Volume, compact_label_dtype, label_bounding_boxes


def segment(volume: Volume, *, model: Model | str | None = None, zooms: tuple[float, ...] = ()) -> LabelMap:
    """The bones of ``volume`` as a label map on its grid, named as recon names them, with a confidence for
    each vertebra level. ``model="totalsegmentator"`` runs TotalSegmentator instead, when it is installed with
    its weights (``recon.segmentation.totalseg``). ``zooms`` (test-time zooms, e.g. ``(1.1, 0.9)``): the network
    also runs on the CT resampled that many times finer (above 1) or coarser than the model's grid, and its
    scores are averaged (``_scores``)."""
    require_usable_zooms(zooms, network=model != TOTALSEGMENTATOR)
    if model == TOTALSEGMENTATOR:
        return run_totalsegmentator(volume)
    model = model if isinstance(model, Model) else load_model(model)
    grid = canonical_grid(volume.grid, model.spacing_mm)
    hu = resample_volume(volume, grid)
    scores = _scores(Volume(grid, hu), model, zooms)
    ids = {c: LABEL_IDS[name] for c, name in enumerate(model.labels) if name in LABEL_IDS}
    classes = scores.argmax(dim=0).numpy().astype(np.uint8)
    classes[~np.isin(classes, list(ids))] = 0  # classes a model learns but recon does not name (other bone)
    levels = assign_levels(classes, model.labels, model.spacing_mm, hu)
    placed = drop_pelvis_beside_spine(levels.classes, model.labels)
    named_bone = scores[sorted(ids)].sum(dim=0).numpy()  # other bone (ribs, upper vertebrae) is not ours to fill
    filled = fill_bone(placed, hu, named_bone, model.spacing_mm)
    filled = fill_enclosed(filled, [c for c, name in enumerate(model.labels) if name in SOLID_BONES], ALL_PLANES)
    filled = fill_enclosed(filled, [c for c, name in enumerate(model.labels) if is_vertebra(name)],
                           PLANES_ALONG_THE_SPINE)
    labels = _onto_grid(filled, filled != placed, scores, grid, volume.grid, model.labels, ids)
    present = set(np.unique(labels).tolist()) - {0}
    names = {ids[c]: model.labels[c] for c in ids if ids[c] in present}
    confidence = {ids[c]: value for c, value in levels.confidence.items() if ids[c] in present}
    anchor = level_anchor(placed, model.labels, model.spacing_mm)
    return LabelMap(volume.grid, labels, names, confidence, anchor)


def _scores(ct: Volume, model: Model, zooms: tuple[float, ...]) -> torch.Tensor:
    """The network's mirrored class scores on ``ct`` (on the model's grid), averaged with those on ``ct``
    resampled onto each zoomed grid (``zoomed_grid``) and moved back; a voxel that a zoomed grid does not reach
    averages those that do."""
    device = next(model.network.parameters()).device.type  # windows run where the network lives

    def scores_on(hu: np.ndarray) -> torch.Tensor:
        image = normalise(hu, model.card["intensity"])
        return predict_mirrored_scores(model.network, image, model.card["patch_voxels"], model.labels, device)

    total = scores_on(ct.hu)
    if not zooms:
        return total
    count = np.ones(ct.grid.shape, np.float32)
    for zoom in zooms:
        grid = zoomed_grid(ct.grid, zoom)
        for c, score in enumerate(scores_on(resample_volume(ct, grid)).numpy()):
            total[c] += torch.from_numpy(resample_array(score, grid, ct.grid, sitk.sitkLinear, 0.0))
        count += resample_array(np.ones(grid.shape, np.float32), grid, ct.grid, sitk.sitkLinear, 0.0)
    return total / torch.from_numpy(count)


def _onto_grid(classes: np.ndarray, filled: np.ndarray, scores: torch.Tensor, source: Grid, target: Grid,
               names: list[str], ids: dict[int, int]) -> np.ndarray:
    """Labels on ``target``; a voxel that ``fill_bone`` gave a label (``filled``) holds it with full score.

    A label claims where its score beats background's 0.5. A vertebra's score is the spine's (the network's
    level is not the name ``levels.py`` gave it); a sacrum, hip bone or femur scores recon's bones together
    inside its own voxels and the background beside them, since the network often splits a voxel between a
    femur and its hip bone, and its own score in a neighbouring bone's voxels, where the two meet."""
    spine = sum(scores[c] for c, name in enumerate(names) if is_vertebra(name)).numpy()
    bone = scores[sorted(ids)].sum(dim=0).numpy()
    best = np.full(target.shape, 0.5, np.float32)  # a label must beat background to claim a voxel
    labels = np.zeros(target.shape, compact_label_dtype(np.array(list(ids.values()) or [0])))
    for c, box in label_bounding_boxes(classes).items():
        region = ndimage.binary_dilation(classes == c, iterations=1)
        if is_vertebra(names[c]):
            score = np.where(region, spine, 0).astype(np.float32)
        else:
            own = (classes == c) | (region & (classes == 0))
            score = np.where(own, bone, np.where(region, scores[c].numpy(), 0)).astype(np.float32)
        score[filled & (classes == c)] = 1.0
        window = _target_window(source, box, target)
        if window is None:
            continue
        sub_grid = Grid(tuple(s.stop - s.start for s in window), target.spacing_mm,
                        target.index_to_lps([s.start for s in window]), target.direction)
        moved = resample_array(score, source, sub_grid, sitk.sitkLinear, 0.0)
        claimed = moved > best[window]
        best[window][claimed] = moved[claimed]
        labels[window][claimed] = ids[c]
    return labels


def _target_window(source: Grid, box: tuple[slice, ...], target: Grid) -> tuple[slice, ...] | None:
    """The part of ``target`` that the (one-voxel padded) ``box`` of ``source`` covers."""
    corners = np.array([[i, j, k] for i in (box[0].start - 2, box[0].stop + 1)
                        for j in (box[1].start - 2, box[1].stop + 1) for k in (box[2].start - 2, box[2].stop + 1)])
    index = target.lps_to_index(source.index_to_lps(corners))
    low = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, target.shape)
    if np.any(high <= low):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))
