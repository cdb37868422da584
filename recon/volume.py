"""Images on a grid: ``Volume`` (CT in Hounsfield units) and ``LabelMap`` (named integer labels)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
    """Integer labels on a grid; ``names`` maps each label id to its anatomical name. 0 is background."""

    grid: Grid
    labels: np.ndarray
    names: dict[int, str] = field(default_factory=dict)

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
