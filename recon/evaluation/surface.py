"""Surface elements of a binary mask and distances between two surfaces.

Convention (the same elements and areas as DeepMind's surface-distance, Nikolov et al. 2021):
- The mask is cut into 2 x 2 x 2 cubes of neighbouring voxel centres. A cube whose eight corners are neither
  all inside nor all outside holds one surface element, located at the cube's centre.
- Its area is that of the Lorensen & Cline marching-cubes triangles at level 0.5 for the cube's configuration,
  in millimetres (so anisotropic spacing is exact), taken from whichever of the configuration and its
  complement has fewer corners inside: the surface between inside and outside has one area from either side.
- Distances are Euclidean in millimetres between element centres. The grid direction is orthonormal, so
  distances in index space scaled by spacing equal distances in patient space (LPS).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

CORNERS = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]


@dataclass(frozen=True, eq=False)
class Surface:
    """Surface elements: centres in mm (in the frame of the array they came from) and areas in mm^2."""

    points_mm: np.ndarray
    areas_mm2: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.areas_mm2) == 0


def surface_of(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> Surface:
    """The surface elements of a boolean mask; cubes straddling the array border are included."""
    padded = np.pad(mask.astype(np.uint8), 1)
    cubes = tuple(n - 1 for n in padded.shape)
    code = np.zeros(cubes, np.uint8)
    for bit, (a, b, c) in enumerate(CORNERS):
        code |= padded[a:a + cubes[0], b:b + cubes[1], c:c + cubes[2]] << bit
    border = (code != 0) & (code != 255)
    spacing = np.asarray(spacing_mm, dtype=float)
    points = (np.argwhere(border) - 0.5) * spacing  # cube c spans voxels c - 1 and c of ``mask``
    return Surface(points, area_table(tuple(spacing))[code[border]])


def directed_distances(source: Surface, target: Surface) -> np.ndarray:
    """For every element of ``source``, the distance in mm to the nearest element of ``target`` (inf when
    ``target`` is empty)."""
    if target.empty:
        return np.full(len(source.areas_mm2), np.inf)
    distances, _ = cKDTree(target.points_mm).query(source.points_mm, workers=-1)
    return distances


@cache
def area_table(spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Surface area in mm^2 for each of the 256 cube configurations (bit i set: corner ``CORNERS[i]`` inside)."""
    table = np.zeros(256)
    for code in range(1, 255):
        fewer_inside = code if code.bit_count() <= 4 else 255 - code
        cube = np.array([(fewer_inside >> bit) & 1 for bit in range(8)], float).reshape(2, 2, 2)
        vertices, faces, _, _ = marching_cubes(cube, 0.5, method="lorensen")
        triangles = vertices[faces].astype(float) * np.asarray(spacing_mm)
        edges = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        table[code] = 0.5 * np.linalg.norm(edges, axis=1).sum()
    return table
