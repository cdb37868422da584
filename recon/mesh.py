"""Bone surfaces: every label of a ``LabelMap`` as a closed, outward-facing triangle mesh in LPS millimetres.

Per label: crop to its bounding box padded by one voxel, extract the 0.5 iso-surface of the binary mask with
scikit-image's marching cubes (Lewiner: a closed, manifold surface, once the zero-volume triangle pairs it
emits where voxels meet only along an edge are dropped), map the vertices through the grid's full
affine, smooth with Taubin's lambda|mu filter (trimesh; removes the voxel staircase without shrinking),
optionally decimate by quadric edge collapse to a face budget (fast-simplification through trimesh, with libigl's
manifold-preserving qslim where the first pinches the surface), and finally offset the surface along its normals
by one small common distance so it encloses the label's voxel volume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import igl
import numpy as np
import trimesh
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes
from trimesh.smoothing import filter_taubin

from recon.errors import InputError
from recon.geometry import Grid
from recon.volume import LabelMap, label_bounding_boxes, largest_piece, union_box

DEFAULT_SMOOTHING_ITERATIONS = 30
TAUBIN_LAMBDA, TAUBIN_MU = 0.6307, 0.6732  # Taubin (1995): pass-band 0.1, no shrinkage
VOLUME_RESTORING_STEPS = 1
MAX_OFFSET_VOXELS = 0.5
VOLUME_WARNING_PCT = 5.0


@dataclass(frozen=True)
class MeshQuality:
    """What a reviewer checks before trusting a surface (volumes in ml, areas in mm^2, distances in mm)."""

    watertight: bool
    winding_consistent: bool
    outward: bool
    components: int
    faces: int
    degenerate_faces: int
    duplicate_faces: int
    volume_ml: float
    label_volume_ml: float
    volume_error_pct: float
    marching_cubes_volume_error_pct: float
    smoothing_volume_change_pct: float
    volume_offset_mm: float
    area_mm2: float
    distance_to_label_max_mm: float
    distance_to_label_mean_mm: float
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Mesh:
    """A closed triangle mesh in LPS mm; faces wind counter-clockwise seen from outside."""

    name: str
    vertices_lps_mm: np.ndarray
    faces: np.ndarray
    quality: MeshQuality

    def to_trimesh(self) -> trimesh.Trimesh:
        return trimesh.Trimesh(self.vertices_lps_mm, self.faces, process=False)


def mesh_labels(labels: LabelMap, *, smoothing: int = DEFAULT_SMOOTHING_ITERATIONS, target_faces: int | None = None,
                names: list[str] | None = None, largest_only: bool = False) -> dict[str, Mesh]:
    """One mesh per named label present (or per name in ``names``), keyed by name.

    ``smoothing``: Taubin passes (alternating lambda and mu steps; 0: the raw marching-cubes surface). ``target_faces``: decimate each mesh
    to at most this many faces. ``largest_only``: keep only the largest face-connected piece of each label
    (otherwise every piece is kept and counted: a fractured bone is real)."""
    if smoothing < 0 or (target_faces is not None and target_faces < 4):
        raise InputError(f"smoothing must be >= 0 and target faces >= 4, got {smoothing} and {target_faces}")
    wanted = list(labels.names.values()) if names is None else list(names)
    unknown = sorted(set(wanted) - set(labels.names.values()))
    if unknown:
        raise InputError(f"no label named {', '.join(unknown)}; the label map has {sorted(labels.names.values())}")
    boxes = label_bounding_boxes(labels.labels)
    meshes = {}
    for name in dict.fromkeys(wanted):
        ids = [index for index, label in labels.names.items() if label == name and index in boxes]
        if ids:
            crop = _padded_mask(labels.labels, ids, union_box(*(boxes[index] for index in ids)))
            meshes[name] = mesh_mask(name, crop.array, crop.grid_of(labels.grid), smoothing=smoothing,
                                     target_faces=target_faces, largest_only=largest_only)
    return meshes


@dataclass(frozen=True)
class _Crop:
    array: np.ndarray
    first_index: np.ndarray  # index, in the full grid, of the crop's voxel (0, 0, 0)

    def grid_of(self, grid: Grid) -> Grid:
        return Grid(self.array.shape, grid.spacing_mm, grid.index_to_lps(self.first_index), grid.direction)


def _padded_mask(array: np.ndarray, ids: list[int], box: tuple[slice, ...]) -> _Crop:
    """The label's mask on its bounding box plus one background voxel on every side (also past the array
    border, so a label touching the border still closes)."""
    return _Crop(np.pad(np.isin(array[box], ids), 1), np.array([s.start - 1 for s in box]))


def mesh_mask(name: str, mask: np.ndarray, grid: Grid, *, smoothing: int = DEFAULT_SMOOTHING_ITERATIONS,
              target_faces: int | None = None, largest_only: bool = False) -> Mesh:
    """The surface of a boolean ``mask`` on ``grid``; the mask must have a background border."""
    if largest_only:
        mask = largest_piece(mask)
    label_volume = float(np.count_nonzero(mask)) * float(np.prod(grid.spacing_mm))
    vertices, faces, _, _ = marching_cubes(mask.astype(np.uint8), 0.5, method="lewiner", allow_degenerate=False)
    faces = _without_twin_faces(faces)
    surface = trimesh.Trimesh(grid.index_to_lps(vertices), faces, process=False)
    volumes = {"marching_cubes": signed_volume(surface)}
    if volumes["marching_cubes"] < 0:  # marching cubes winds by the gradient; a mirrored grid flips it again
        surface.invert()
        volumes["marching_cubes"] *= -1
    if smoothing:
        filter_taubin(surface, lamb=TAUBIN_LAMBDA, nu=TAUBIN_MU, iterations=smoothing)
    volumes["smoothed"] = signed_volume(surface)
    warnings = []
    if target_faces is not None and len(surface.faces) > target_faces:
        surface, warning = _decimated(surface, target_faces)
        warnings += [warning] if warning else []
    offset = _restore_volume(surface, label_volume, limit_mm=MAX_OFFSET_VOXELS * min(grid.spacing_mm))
    error_pct = 100.0 * (signed_volume(surface) / label_volume - 1.0)
    if abs(error_pct) > VOLUME_WARNING_PCT:
        warnings.append(f"the mesh encloses {error_pct:+.1f}% of the label's volume: the label is too thin or "
                        "small for smoothing; mesh it with smoothing 0 to keep every voxel")
    quality = _quality(surface, mask, grid, volumes, offset, warnings)
    return Mesh(name, np.asarray(surface.vertices), np.asarray(surface.faces), quality)


def _without_twin_faces(faces: np.ndarray) -> np.ndarray:
    """``faces`` less every triangle that marching cubes emitted twice, once each way round, as it does where
    voxels meet only along an edge in some configurations: the pair encloses nothing but puts four faces on
    its edges, so the surface would not be closed."""
    rows = trimesh.grouping.hashable_rows(np.sort(faces, axis=1))  # one integer per triangle, where they fit
    _, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
    return faces[counts[inverse] == 1]


def _restore_volume(surface: trimesh.Trimesh, target_mm3: float, limit_mm: float) -> float:
    """Move every vertex along its normal by one common distance so the mesh encloses the label's voxel volume
    (marching cubes cuts every convex voxel corner, which thins small and slender labels). Returns the offset."""
    total = 0.0
    for _ in range(VOLUME_RESTORING_STEPS):
        step = (target_mm3 - signed_volume(surface)) / surface.area
        step = float(np.clip(step, -limit_mm - total, limit_mm - total))
        surface.vertices = surface.vertices + step * surface.vertex_normals
        total += step
    return total


def _decimated(surface: trimesh.Trimesh, target_faces: int) -> tuple[trimesh.Trimesh, str | None]:
    """Quadric decimation by fast-simplification; where it pinches the surface (it sometimes joins two sheets at
    one edge), libigl's qslim, whose collapses keep the surface manifold. If both fail, the undecimated surface
    is kept, with a warning."""
    decimated = surface.simplify_quadric_decimation(face_count=target_faces)
    if _closed(decimated):
        return decimated, None
    vertices, faces = np.asfortranarray(surface.vertices), np.asfortranarray(surface.faces, dtype=np.int32)
    vertices, faces, _, _ = igl.qslim(vertices, faces, target_faces)
    decimated = trimesh.Trimesh(vertices, faces, process=False)
    if _closed(decimated):
        return decimated, None
    return surface, f"decimation to {target_faces} faces broke the surface; kept {len(surface.faces)} faces"


def _closed(surface: trimesh.Trimesh) -> bool:
    return bool(surface.is_watertight and surface.is_winding_consistent and signed_volume(surface) > 0)


def signed_volume(surface: trimesh.Trimesh) -> float:
    """The enclosed volume in mm^3, positive when the faces wind counter-clockwise seen from outside."""
    a, b, c = (surface.vertices[surface.faces[:, n]] for n in range(3))
    return float(np.einsum("ij,ij->", a, np.cross(b, c))) / 6.0


def _quality(surface: trimesh.Trimesh, mask: np.ndarray, grid: Grid, volumes: dict[str, float], offset: float,
             warnings: list[str]) -> MeshQuality:
    label_volume = float(np.count_nonzero(mask)) * float(np.prod(grid.spacing_mm))
    volume = signed_volume(surface)
    distances = _distances_to_boundary(surface.vertices, mask, grid)
    unique_faces = len(np.unique(np.sort(surface.faces, axis=1), axis=0))
    return MeshQuality(
        watertight=bool(surface.is_watertight), winding_consistent=bool(surface.is_winding_consistent),
        outward=volume > 0, components=int(surface.body_count), faces=len(surface.faces),
        degenerate_faces=int(np.count_nonzero(surface.area_faces <= 1e-12)),
        duplicate_faces=len(surface.faces) - unique_faces,
        volume_ml=volume / 1000.0, label_volume_ml=label_volume / 1000.0,
        volume_error_pct=100.0 * (volume / label_volume - 1.0),
        marching_cubes_volume_error_pct=100.0 * (volumes["marching_cubes"] / label_volume - 1.0),
        smoothing_volume_change_pct=100.0 * (volumes["smoothed"] / volumes["marching_cubes"] - 1.0),
        volume_offset_mm=offset, area_mm2=float(surface.area), distance_to_label_max_mm=float(distances.max()),
        distance_to_label_mean_mm=float(distances.mean()), warnings=warnings,
    )


def _distances_to_boundary(vertices: np.ndarray, mask: np.ndarray, grid: Grid) -> np.ndarray:
    """Distance from each vertex to the label's voxel boundary: the centres of the voxel faces between an
    inside voxel and an outside neighbour."""
    centres = []
    for axis in range(3):
        ahead = [slice(None)] * 3
        behind = [slice(None)] * 3
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        change = mask[tuple(ahead)] != mask[tuple(behind)]
        step = np.zeros(3)
        step[axis] = 0.5
        centres.append(np.argwhere(change) + step)
    boundary = grid.index_to_lps(np.concatenate(centres))
    distances, _ = cKDTree(boundary).query(vertices, workers=-1)
    return distances
