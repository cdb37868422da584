"""Images on a grid: ``Volume`` (CT in Hounsfield units) and ``LabelMap`` (named integer labels)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from recon.errors import GeometryError
from recon.geometry import Grid


@dataclass(frozen=True, eq=False)
class Volume:
    """A CT volume: ``hu`` has shape ``grid.shape`` in (i, j, k) order and holds Hounsfield units.

    ``hu`` is int16 when every value is an integer in int16's range (as CT nearly always is), else float32.
    """

    grid: Grid
    hu: np.ndarray

    def __post_init__(self) -> None:
        _check_shape(self.hu, self.grid)


@dataclass(frozen=True, eq=False)
class LabelMap:
    """Integer labels on a grid; ``names`` maps each label id to its anatomical name. 0 is background.
    ``confidence`` (0-1, by label id) is filled by a model that can judge its own labels, and ``level_anchor``
    by one that names vertebra levels: what it counted them from ("sacrum" or "none")."""

    grid: Grid
    labels: np.ndarray
    names: dict[int, str] = field(default_factory=dict)
    confidence: dict[int, float] = field(default_factory=dict)
    level_anchor: str | None = None

    def __post_init__(self) -> None:
        _check_shape(self.labels, self.grid)
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise GeometryError(f"label array must be integer, got {self.labels.dtype}")


def _check_shape(array: np.ndarray, grid: Grid) -> None:
    if tuple(array.shape) != grid.shape:
        raise GeometryError(f"array shape {array.shape} does not match grid shape {grid.shape}")


def hounsfield_array(array: np.ndarray) -> np.ndarray:
    """``array`` as Volume stores HU: int16 when its integers fit, otherwise float32."""
    array = np.asarray(array)
    if array.dtype == np.int16:
        return array
    if array.dtype.kind in "ui" and array.size:
        limits = np.iinfo(np.int16)
        if limits.min <= array.min() and array.max() <= limits.max:
            return array.astype(np.int16)
    return array.astype(np.float32, copy=False)


def label_bounding_boxes(array: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """The bounding box of every non-zero id, found from the labelled voxels only (a bone is a few % of a CT)."""
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    flat = np.ravel(array, order=order)
    where = np.flatnonzero(flat)
    if not len(where):
        return {}
    values = flat[where]
    by_value = np.argsort(values, kind="stable")
    values, where = values[by_value], where[by_value]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    coords = np.unravel_index(where, array.shape, order=order)
    lows = [np.minimum.reduceat(c, starts) for c in coords]
    highs = [np.maximum.reduceat(c, starts) for c in coords]
    return {
        int(values[start]): tuple(slice(int(low[n]), int(high[n]) + 1) for low, high in zip(lows, highs))
        for n, start in enumerate(starts)
    }


def union_box(*boxes: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    """The smallest box holding every given box (None entries ignored; None when there are none)."""
    given = [box for box in boxes if box is not None]
    if not given:
        return None
    return tuple(slice(min(b[a].start for b in given), max(b[a].stop for b in given)) for a in range(3))


def compact_label_dtype(array: np.ndarray) -> type:
    """The smallest unsigned type that holds every id of ``array``."""
    largest = int(array.max(initial=0))
    return np.uint8 if largest < 2**8 else np.uint16 if largest < 2**16 else np.uint32


def largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected piece of a boolean mask (the mask itself when it has at most one)."""
    pieces, count = ndimage.label(mask)
    if count <= 1:
        return mask
    return pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
