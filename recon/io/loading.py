"""``load_ct``: any supported CT input in, one ``Volume`` in LPS millimetres out."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recon.errors import InputError
from recon.io.dicom import load_dicom
from recon.io.dicom_files import is_valid_uid
from recon.io.images import image_format, read_image, write_image
from recon.volume import Volume, hounsfield_array

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LoadedCT:
    """A loaded CT with what the loader saw: every DICOM series and its fate, tilt and warnings."""

    volume: Volume
    series: tuple[dict, ...]
    gantry_tilt_deg: float
    warnings: tuple[str, ...]


def read_ct(path: str | Path, *, series_uid: str | None = None) -> LoadedCT:
    """Load a CT study and report what was found; see ``load_ct`` for the inputs accepted."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; pass a DICOM folder, zip, DICOMDIR or NIfTI/NRRD/MHA file")
    if series_uid is not None and not is_valid_uid(series_uid):
        raise InputError(f"series_uid {series_uid[:80]!r} is not a DICOM UID (digits and dots, at most 64 "
                         "characters); copy it from 'recon info'")
    if path.is_file() and image_format(path) is not None and not zipfile.is_zipfile(path):
        if series_uid is not None:
            raise InputError(f"{path}: series_uid applies to DICOM input only; this is an image file")
        image = read_image(path)
        for warning in image.warnings:
            log.warning("%s: %s", path, warning)
        return LoadedCT(Volume(image.grid, hounsfield_array(image.array)), (), 0.0, image.warnings)
    loaded = load_dicom(path, series_uid=series_uid)
    stack = loaded.stack
    return LoadedCT(
        Volume(stack.grid, stack.hu),
        tuple(series.summary() for series in loaded.series),
        stack.gantry_tilt_deg,
        stack.warnings,
    )


def load_ct(path: str | Path, *, series_uid: str | None = None) -> Volume:
    """Load a CT volume in Hounsfield units on its physical grid (LPS, mm).

    ``path`` is a folder of DICOM files (searched recursively), a zip of one, a DICOMDIR, a single DICOM
    file (classic or enhanced multi-frame), or a NIfTI (``.nii``, ``.nii.gz``), NRRD or MHA/MHD image.
    Among several CT series the rule in ``recon.io.dicom`` chooses one; ``series_uid`` overrides it.
    Raises a ``recon.errors.ReconError`` subclass, naming the file and the fix, for input it cannot use.
    """
    return read_ct(path, series_uid=series_uid).volume


def describe_ct(path: str | Path, *, series_uid: str | None = None) -> dict:
    """What the loader sees, as the JSON object ``recon info --json`` prints."""
    return description_of(read_ct(path, series_uid=series_uid))


def description_of(loaded: LoadedCT) -> dict:
    """The ``recon info --json`` object for a CT already loaded."""
    volume = loaded.volume
    grid = volume.grid
    return {
        "series": list(loaded.series),
        "volume": {
            "shape_ijk": list(grid.shape),
            "spacing_mm": _rounded(grid.spacing_mm),
            "origin_lps_mm": _rounded(grid.origin_lps_mm),
            "direction": _rounded(grid.direction),
            "hu_min": float(volume.hu.min()),
            "hu_max": float(volume.hu.max()),
            "gantry_tilt_deg": loaded.gantry_tilt_deg,
            "warnings": list(loaded.warnings),
        },
    }


def convert_ct(source: str | Path, target: str | Path, *, series_uid: str | None = None) -> Path:
    """Load ``source`` and write it as NIfTI, NRRD or MHA, chosen by the extension of ``target``."""
    target = Path(target)
    if image_format(target) is None:
        raise InputError(f"{target}: unknown output format; use .nii.gz, .nii, .nrrd or .mha")
    volume = load_ct(source, series_uid=series_uid)
    write_image(volume.hu, volume.grid, target)
    return target


def _rounded(values, digits: int = 6) -> list[float]:
    return [round(float(v), digits) + 0.0 for v in values]
