"""Image files with a geometry header: NIfTI (nibabel), NRRD and MetaImage (SimpleITK).

NIfTI stores RAS; recon works in LPS. ``flip_ras_lps`` is the one place where the two meet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from recon.errors import InputError, TooLargeError
from recon.geometry import MAX_VOXELS, Grid, angle_between_deg, is_orthonormal, nearest_orthonormal
from recon.io.atomic import atomic_path
from recon.memory import LOAD_BYTES_PER_VOXEL, require_memory

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
FLIP_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_SHEAR_DEG = 1.0


@dataclass(frozen=True, eq=False)
class GriddedArray:
    """An array in (i, j, k) order on its grid, with what reading it revealed."""

    grid: Grid
    array: np.ndarray
    warnings: tuple[str, ...] = ()


def image_format(path: Path) -> str | None:
    """``"nifti"``, ``"itk"`` or None, from the file name."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    return None


def flip_ras_lps(affine: np.ndarray) -> np.ndarray:
    """Convert a 4 x 4 voxel-to-world affine between RAS and LPS (the flip is its own inverse)."""
    return FLIP_RAS_LPS @ affine


def read_image(path: Path) -> GriddedArray:
    """Read a NIfTI, NRRD or MetaImage file into LPS."""
    kind = image_format(path)
    if kind == "nifti":
        return _read_nifti(path)
    if kind == "itk":
        return _read_itk(path)
    raise InputError(f"{path}: unknown image format; expected one of {', '.join(NIFTI_SUFFIXES + ITK_SUFFIXES)}")


def write_image(array: np.ndarray, grid: Grid, path: Path) -> None:
    """Write an (i, j, k) array on ``grid`` as NIfTI, NRRD or MetaImage (by extension), atomically."""
    kind = image_format(path)
    if kind is None:
        raise InputError(f"{path}: unknown output format; use .nii.gz, .nii, .nrrd or .mha")
    array = _compact(array)
    with atomic_path(path) as temporary:
        if kind == "nifti":
            _write_nifti(array, grid, temporary)
        else:
            _write_itk(array, grid, temporary)


def grid_from_affine(affine_lps: np.ndarray, shape: tuple[int, ...], source: Path) -> tuple[Grid, list[str]]:
    """Split a 4 x 4 LPS affine into spacing, direction and origin; repair a slightly sheared one."""
    linear = affine_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if not np.all(np.isfinite(affine_lps)) or np.any(spacing <= 0):
        raise InputError(f"{source}: the image affine is degenerate ({affine_lps.tolist()}); fix the header")
    direction = linear / spacing
    warnings = []
    if not is_orthonormal(direction):
        repaired = nearest_orthonormal(direction)
        angle = max(angle_between_deg(a, b) for a, b in zip(direction.T, repaired.T))
        if angle > MAX_SHEAR_DEG:
            raise InputError(
                f"{source}: the image affine is sheared by {angle:.2f} degrees; recon needs an orthogonal grid: "
                "resample the image onto one (e.g. with SimpleITK or 3D Slicer) and try again"
            )
        warnings.append(f"the affine is sheared; replaced by the nearest orthogonal one ({angle:.3f} degrees off)")
        direction = repaired
    grid = Grid(shape=shape, spacing_mm=spacing, origin_lps_mm=affine_lps[:3, 3], direction=direction.ravel())
    return grid, warnings


def _read_nifti(path: Path) -> GriddedArray:
    unreadable = (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, OSError, EOFError,
                  ValueError, TypeError)
    try:
        image = nib.load(path)
    except unreadable as err:
        raise InputError(f"{path}: unreadable NIfTI ({type(err).__name__}: {err}); check the file is complete") from err
    try:
        dtype = image.header.get_data_dtype()
    except unreadable as err:
        raise InputError(f"{path}: NIfTI header has an invalid data type ({err}); the file is damaged") from err
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise InputError(f"{path}: NIfTI voxels are {dtype}, not scalar numbers; recon needs a scalar CT volume")
    shape = _three_d_shape(tuple(int(n) for n in image.header.get_data_shape()), path)
    affine_ras, warnings = _nifti_affine(image.header)
    try:
        array = np.asanyarray(image.dataobj)
    except unreadable as err:
        raise InputError(f"{path}: NIfTI data cannot be read ({type(err).__name__}: {err}); the file is truncated") from err
    grid, affine_warnings = grid_from_affine(flip_ras_lps(affine_ras), shape, path)
    return GriddedArray(grid, array.reshape(shape, order="F"), tuple(warnings + affine_warnings))


def _nifti_affine(header) -> tuple[np.ndarray, list[str]]:
    """The sform when its code is set, else the qform, else the pixdim fallback (with a warning)."""
    if int(header["sform_code"]) > 0:
        return header.get_sform(), []
    if int(header["qform_code"]) > 0:
        return header.get_qform(), []
    return header.get_base_affine(), ["NIfTI header has neither sform nor qform; orientation assumed from pixdim"]


def _three_d_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    if len(shape) > 3 and all(n == 1 for n in shape[3:]):
        shape = shape[:3]
    if len(shape) > 3:
        raise InputError(f"{path}: a {len(shape)}-D image of shape {shape}; recon needs one 3-D CT volume")
    shape = tuple(shape) + (1,) * (3 - len(shape))
    if min(shape) < 1:
        raise InputError(f"{path}: image shape {shape} has an empty axis")
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise TooLargeError(f"{path}: header claims {shape} voxels, more than the {MAX_VOXELS} recon allocates")
    require_memory(int(np.prod(shape, dtype=np.int64)), LOAD_BYTES_PER_VOXEL, "loading the image", str(path))
    return shape


def _read_itk(path: Path) -> GriddedArray:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        if reader.GetNumberOfComponents() != 1:
            raise InputError(f"{path}: {reader.GetNumberOfComponents()} components per voxel; expected a scalar CT")
        size = tuple(int(n) for n in reader.GetSize())
        dimension = reader.GetDimension()
        shape = _three_d_shape(size, path)
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"{path}: unreadable image ({str(err).strip().splitlines()[-1]}); check the file") from err
    if dimension > 3:
        image = sitk.Extract(image, list(size[:3]) + [0] * (dimension - 3), [0] * dimension)
        dimension = 3
    array = sitk.GetArrayViewFromImage(image).T if dimension >= 3 else sitk.GetArrayFromImage(image).T[..., None]
    direction = np.eye(3)
    direction[:dimension, :dimension] = np.asarray(image.GetDirection()).reshape(dimension, dimension)[:3, :3]
    affine = np.eye(4)
    spacing = (tuple(image.GetSpacing()) + (1.0,) * 3)[:3]
    affine[:3, :3] = direction * np.asarray(spacing)
    affine[:3, 3] = (tuple(image.GetOrigin()) + (0.0,) * 3)[:3]
    grid, warnings = grid_from_affine(affine, shape, path)
    return GriddedArray(grid, np.array(array.reshape(shape)), tuple(warnings))


def _compact(array: np.ndarray) -> np.ndarray:
    """Integer-valued float data small enough for int16 is stored as int16; everything else as is."""
    if array.dtype.kind == "f" and array.size:
        low, high = float(array.min()), float(array.max())
        if -32768 <= low and high <= 32767 and np.array_equal(array, np.round(array)):
            return array.astype(np.int16)
    return array


def _write_nifti(array: np.ndarray, grid: Grid, path: Path) -> None:
    affine_ras = flip_ras_lps(grid.affine_lps)
    image = nib.Nifti1Image(array, affine_ras)
    image.header.set_qform(affine_ras, code=1)
    image.header.set_sform(affine_ras, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.to_filename(path)


def _write_itk(array: np.ndarray, grid: Grid, path: Path) -> None:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(grid.spacing_mm)
    image.SetOrigin(grid.origin_lps_mm)
    image.SetDirection(grid.direction)
    sitk.WriteImage(image, str(path), useCompression=True)
