"""``recon preview``: axial, coronal and sagittal slices through a volume, with label outlines.

Planes are sampled in LPS (not in index space), so any grid direction shows the patient the usual way:
axial with the patient's left on the image right and anterior up (radiological view), coronal and sagittal
with superior up; sagittal with anterior on the left.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from recon.io.atomic import atomic_path  # noqa: E402
from recon.volume import LabelMap, Volume  # noqa: E402

BONE_WINDOW = (-450.0, 1050.0)
PLANES = {  # name: (row direction, column direction) in LPS
    "axial": ((0, 1, 0), (1, 0, 0)),
    "coronal": ((0, 0, -1), (1, 0, 0)),
    "sagittal": ((0, 0, -1), (0, 1, 0)),
}


def render_preview(volume: Volume, path: str | Path, *, labels: LabelMap | None = None,
                   center_lps_mm: np.ndarray | None = None, title: str = "") -> Path:
    """Write a PNG of three orthogonal slices through ``center_lps_mm`` (default: the volume centre)."""
    grid = volume.grid
    corners = grid.corners_lps()
    center = np.asarray(center_lps_mm if center_lps_mm is not None else corners.mean(axis=0), float)
    pixel_mm = min(grid.spacing_mm[:2]) if max(grid.spacing_mm) < 4 else min(grid.spacing_mm)
    figure, axes = plt.subplots(1, 3, figsize=(15, 5.6), facecolor="black")
    for axis, (name, (row, column)) in zip(axes, PLANES.items()):
        points, extent = _plane(corners, center, np.asarray(row, float), np.asarray(column, float), pixel_mm)
        index = grid.lps_to_index(points).transpose(2, 0, 1)
        image = ndimage.map_coordinates(volume.hu.astype(np.float32), index, order=1, cval=-1024.0)
        axis.imshow(image, cmap="gray", vmin=BONE_WINDOW[0], vmax=BONE_WINDOW[1], extent=extent)
        if labels is not None:
            label_index = labels.grid.lps_to_index(points).transpose(2, 0, 1)
            label_image = ndimage.map_coordinates(labels.labels, label_index, order=0, cval=0)
            _outline(axis, label_image, extent)
        axis.set_title(name, color="white")
        axis.axis("off")
    figure.suptitle(title or "bone window, W 1500 L 300", color="white")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=90, facecolor="black", format="png")
    plt.close(figure)
    return path


def _plane(corners: np.ndarray, center: np.ndarray, row: np.ndarray, column: np.ndarray, pixel_mm: float):
    """LPS points of a plane through ``center`` spanning the volume, and its extent in mm."""
    row_span = (corners - center) @ row
    column_span = (corners - center) @ column
    rows = np.arange(row_span.min(), row_span.max() + pixel_mm, pixel_mm)
    columns = np.arange(column_span.min(), column_span.max() + pixel_mm, pixel_mm)
    points = center + rows[:, None, None] * row + columns[None, :, None] * column
    extent = (columns[0], columns[-1], rows[-1], rows[0])
    return points, extent


def _outline(axis, label_image: np.ndarray, extent) -> None:
    colours = plt.get_cmap("tab20")
    for value in np.unique(label_image):
        if value == 0:
            continue
        mask = (label_image == value).astype(float)
        axis.contour(mask, levels=[0.5], colors=[colours(int(value) % 20)], linewidths=0.8, extent=extent,
                     origin="upper")
