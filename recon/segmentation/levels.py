"""Post-processing that makes the network's labels trustworthy, on the model's grid.

- Pelvis and femur labels keep their connected pieces of at least ``MIN_PIECE_SHARE`` of the largest piece
  (a fractured bone keeps its fragments; specks go).
- Vertebrae become instances: the pieces of all vertebra voxels together, split by the network's level where a
  piece holds several levels, and pieces whose centres lie closer than ``SAME_LEVEL_MM`` along the body axis
  merged. Instances are ordered from inferior to superior and named with consecutive levels (no two L3s, no
  gap between L2 and L4). Where the lowest instance sits on the sacrum (within ``ON_SACRUM_MM``), it is L5
  and the others count up from it, as surgeons count lumbar levels; otherwise the first level is the one
  that agrees with most of the network's voxel votes, which also names the levels right when the field of
  view cuts off the bottom.
- Each level's confidence is the share of its voxels that the network itself gave that level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MIN_PIECE_SHARE = 0.1
MIN_VERTEBRA_ML = 1.0
SAME_LEVEL_MM = 12.0
ON_SACRUM_MM = 15.0  # the L5-S1 disc is about 10-12 mm; L4 lies a whole vertebra (25 mm or more) higher
CONNECTED = ndimage.generate_binary_structure(3, 3)


@dataclass(frozen=True)
class Levels:
    classes: np.ndarray  # class per voxel after post-processing (uint8)
    confidence: dict[int, float]  # class -> confidence of a vertebra level


def assign_levels(classes: np.ndarray, labels: list[str], spacing_mm: float) -> Levels:
    """``classes`` (argmax, uint8) cleaned and with vertebra levels made consistent; ``labels`` names the
    classes in order (index 0 background); the grid is axis-aligned LPS, so index axis 2 points superior."""
    vertebra_classes = [c for c, name in enumerate(labels) if name.startswith("vertebrae_")]
    cleaned = np.zeros_like(classes)
    for c, name in enumerate(labels):
        if c and c not in vertebra_classes:
            cleaned[_kept_pieces(classes == c)] = c
    voxel_ml = spacing_mm**3 / 1000.0
    instances = _vertebra_instances(classes, vertebra_classes, int(MIN_VERTEBRA_ML / voxel_ml), spacing_mm)
    confidence = {}
    if instances:
        sacrum = cleaned == labels.index("sacrum") if "sacrum" in labels else None
        on_sacrum = "vertebrae_L5" in labels and _on_sacrum(instances[0], sacrum, spacing_mm)
        lowest = labels.index("vertebrae_L5") if on_sacrum else None
        order = _best_levels(instances, classes, vertebra_classes, lowest)
        for mask, level in zip(instances, order):
            if level:  # more instances than levels: the extras stay background
                cleaned[mask] = level
                confidence[level] = float(np.mean(classes[mask] == level))
    return Levels(cleaned, confidence)


def _kept_pieces(mask: np.ndarray) -> np.ndarray:
    pieces, count = ndimage.label(mask, structure=CONNECTED)
    if count <= 1:
        return mask
    sizes = np.bincount(pieces.ravel())[1:]
    keep = np.flatnonzero(sizes >= MIN_PIECE_SHARE * sizes.max()) + 1
    return np.isin(pieces, keep)


def _vertebra_instances(classes, vertebra_classes, min_voxels: int, spacing_mm: float) -> list[np.ndarray]:
    """Masks of vertebra instances, ordered from inferior to superior."""
    spine = np.isin(classes, vertebra_classes)
    pieces, count = ndimage.label(spine, structure=CONNECTED)
    parts = []
    for piece in range(1, count + 1):
        inside = pieces == piece
        for c in vertebra_classes:
            part = inside & (classes == c)
            if np.count_nonzero(part) >= min_voxels // 4:
                parts.append(part)
    parts.sort(key=_height)
    merged: list[np.ndarray] = []
    for part in parts:
        if merged and (_height(part) - _height(merged[-1])) * spacing_mm < SAME_LEVEL_MM:
            merged[-1] = merged[-1] | part
        else:
            merged.append(part)
    return [mask for mask in merged if np.count_nonzero(mask) >= min_voxels]


def _height(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[2].mean())


def _on_sacrum(lowest: np.ndarray, sacrum: np.ndarray | None, spacing_mm: float) -> bool:
    """Whether the lowest vertebra instance lies within ON_SACRUM_MM of the sacrum."""
    if sacrum is None or not sacrum.any():
        return False
    distance = ndimage.distance_transform_edt(~sacrum, sampling=spacing_mm)
    return float(distance[lowest].min()) <= ON_SACRUM_MM


def _best_levels(instances, classes, vertebra_classes, lowest: int | None) -> list[int]:
    """Consecutive levels for the instances (inferior to superior): up from class ``lowest`` when it is
    given, else those that agree with most voxel votes.

    ``vertebra_classes`` run from superior (T11) to inferior (L5), as recon's vocabulary lists them."""
    inferior_first = list(reversed(vertebra_classes))
    votes = np.array([[np.count_nonzero(classes[mask] == c) for c in inferior_first] for mask in instances])
    count = min(len(instances), len(inferior_first))
    best, best_score = 0, -1
    firsts = [inferior_first.index(lowest)] if lowest is not None else range(len(inferior_first) - count + 1)
    for first in firsts:
        score = sum(votes[k, first + k] for k in range(count))
        if score > best_score:
            best, best_score = first, score
    levels = [inferior_first[best + k] for k in range(count)]
    return levels + [0] * (len(instances) - count)  # more instances than levels: the extras stay unnamed
