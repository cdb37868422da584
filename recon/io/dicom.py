"""DICOM CT: sort files into series, skip what is not a CT volume, choose one series, and load it.

Selection rule (documented in the README): among the CT series that remain, prefer original over derived
images, then axial over other orientations, then the most slices, then the thinnest slice spacing.
Candidates that tie on all four are refused with an ``AmbiguousSeriesError`` that lists them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from pydicom import config as pydicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from recon.errors import (
    AmbiguousSeriesError,
    CorruptFileError,
    InputError,
    MissingDecoderError,
    NoCTSeriesError,
    TooLargeError,
)
from recon.geometry import MAX_VOXELS
from recon.memory import LOAD_BYTES_PER_VOXEL, require_memory
from recon.io.dicom_files import PIXEL_DATA_TAG, UNDEFINED_LENGTH, DicomFile, describe_error, read_dicom_files
from recon.io.jpeg_frames import check_jpeg_frames
from recon.io.slices import Frame, StackedSlices, stack_frames

log = logging.getLogger(__name__)

NATIVE_LITTLE_ENDIAN = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image",
}
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "DICOM SEG (segmentation), not an image",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set, not an image",
    "1.2.840.10008.5.1.4.1.1.66": "raw data, not an image",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF, not an image",
}
NON_IMAGE_SOP_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report (SR), not an image",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state, not an image",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy object, not an image",
}
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "python-gdcm",
    "1.2.840.10008.1.2.4.51": "python-gdcm",
    "1.2.840.10008.1.2.4.57": "python-gdcm",
    "1.2.840.10008.1.2.4.70": "python-gdcm",
    "1.2.840.10008.1.2.4.80": "python-gdcm",
    "1.2.840.10008.1.2.4.81": "python-gdcm",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
}
ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE_MM = 1e-3


@dataclass
class Series:
    """A group of frames sharing a SeriesInstanceUID, orientation, matrix size and pixel spacing."""

    uid: str
    modality: str
    description: str
    n_files: int
    frames: list[Frame] = field(default_factory=list)
    derived: bool = False
    skipped_reason: str | None = None
    selected: bool = False

    @property
    def is_axial(self) -> bool:
        normal = self.frames[0].normal if self.frames else np.zeros(3)
        return bool(abs(normal[2]) >= max(abs(normal[0]), abs(normal[1])))

    @cached_property
    def slice_spacing_mm(self) -> float:
        heights = sorted(float(frame.position @ frame.normal) for frame in self.frames)
        if len(heights) < 2:
            return self.frames[0].thickness_mm or 0.0
        return float(np.median(np.diff(heights)))

    def rank(self) -> tuple[bool, bool, int, float]:
        return (not self.derived, self.is_axial, len(self.frames), -round(self.slice_spacing_mm, 3))

    def summary(self) -> dict:
        return {
            "series_uid": self.uid,
            "n_files": self.n_files,
            "modality": self.modality,
            "description": self.description,
            "selected": self.selected,
            "skipped_reason": self.skipped_reason,
        }


@dataclass(frozen=True)
class DicomLoad:
    """What loading a DICOM input produced: the stacked CT and every series seen, with its fate."""

    stack: StackedSlices
    series: list[Series]


def load_dicom(path: Path, *, series_uid: str | None = None) -> DicomLoad:
    """Read the DICOM under ``path``, choose one CT series and stack it onto a regular grid."""
    with quiet_pydicom():
        return _load_dicom(path, series_uid)


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Turn off pydicom's value validation and warnings while recon reads hospital files.

    Their messages quote raw element values, which may be patient names; recon checks the values it uses
    and reports problems in its own words.
    """
    previous = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_config.settings.reading_validation_mode = previous


def _load_dicom(path: Path, series_uid: str | None) -> DicomLoad:
    files, unreadable = read_dicom_files(path)
    if not files:
        problems = "; ".join(f"{u.label}: {u.reason}" for u in unreadable[:5])
        detail = f" ({len(unreadable)} unreadable: {problems})" if unreadable else ""
        raise InputError(
            f"{path}: no DICOM files found{detail}; pass a folder, zip or DICOMDIR of a CT study, "
            "or a NIfTI/NRRD/MHA image"
        )
    for bad in unreadable:
        log.warning("%s: skipped, %s", bad.label, bad.reason)
    all_series = group_series(files)
    chosen = choose_series(all_series, series_uid=series_uid, source=path)
    chosen.selected = True
    _check_size(chosen)
    _check_decoders(chosen)
    stack = stack_frames(chosen.frames, source=str(path))
    return DicomLoad(stack=stack, series=all_series)


def group_series(files: list[DicomFile]) -> list[Series]:
    """Sort files into series; split each by geometry; mark what is skipped and why."""
    by_uid: dict[str, list[DicomFile]] = {}
    for file in _unique_instances(files):
        by_uid.setdefault(str(file.dataset.get("SeriesInstanceUID", "") or ""), []).append(file)
    result: list[Series] = []
    for uid, members in by_uid.items():
        result.extend(_split_series(uid, members))
    return result


def choose_series(all_series: list[Series], *, series_uid: str | None, source: Path) -> Series:
    """Apply the selection rule, or the caller's ``series_uid``."""
    candidates = [s for s in all_series if s.skipped_reason is None]
    if series_uid is not None:
        return _requested(all_series, candidates, series_uid, source)
    if not candidates:
        reasons = "; ".join(f"{_short(s.uid)}: {s.skipped_reason}" for s in all_series[:8])
        raise NoCTSeriesError(f"{source}: no CT image series found ({reasons}); pass a CT study")
    if any(not s.derived for s in candidates):
        for s in candidates:
            if s.derived:
                s.skipped_reason = "derived images (ImageType DERIVED) while an original CT series is present"
        candidates = [s for s in candidates if not s.derived]
    candidates.sort(key=Series.rank, reverse=True)
    best = candidates[0]
    ties = [s for s in candidates if s.rank() == best.rank()]
    if len(ties) > 1:
        listing = ", ".join(f"{s.uid or '(no SeriesInstanceUID)'} ({len(s.frames)} slices)" for s in ties)
        raise AmbiguousSeriesError(
            f"{source}: {len(ties)} CT series are equally good candidates: {listing}; "
            "choose one with series_uid= (CLI: --series UID)"
        )
    for s in candidates[1:]:
        s.skipped_reason = _lost_because(s, best)
    return best


def _requested(all_series: list[Series], candidates: list[Series], uid: str, source: Path) -> Series:
    matching = [s for s in candidates if s.uid == uid]
    if matching:
        for s in all_series:
            if s is not matching[0] and s.skipped_reason is None:
                s.skipped_reason = "another series was requested with series_uid"
        return matching[0]
    known = [s for s in all_series if s.uid == uid]
    if known:
        raise NoCTSeriesError(f"{source}: series {uid} is not a usable CT volume: {known[0].skipped_reason}")
    listing = ", ".join(sorted({s.uid for s in candidates})) or "none"
    raise InputError(f"{source}: no series with SeriesInstanceUID {uid}; CT series present: {listing}")


def _lost_because(loser: Series, best: Series) -> str:
    if loser.is_axial != best.is_axial:
        return "not axial; an axial CT series was chosen"
    if len(loser.frames) != len(best.frames):
        return f"fewer slices ({len(loser.frames)}) than the chosen series ({len(best.frames)})"
    return f"thicker slice spacing ({loser.slice_spacing_mm:.3g} mm) than the chosen series"


def _unique_instances(files: list[DicomFile]) -> list[DicomFile]:
    """Drop exact copies of one instance (same non-empty SOPInstanceUID), keeping the first."""
    seen: set[str] = set()
    unique = []
    for file in files:
        uid = str(file.dataset.get("SOPInstanceUID", "") or "")
        if uid and uid in seen:
            log.info("%s: duplicate of an instance already read, ignored", file.label)
            continue
        seen.add(uid)
        unique.append(file)
    return unique


def _split_series(uid: str, members: list[DicomFile]) -> list[Series]:
    first = members[0].dataset
    modality = str(first.get("Modality", "") or "")
    description = str(first.get("SeriesDescription", "") or "")
    skipped: dict[str, int] = {}
    frames: list[Frame] = []
    derived = False
    for file in members:
        try:
            reason = non_ct_reason(file.dataset)
            if reason is None:
                frames.extend(frames_of(file))
        except InputError as err:
            reason = str(err)
        except Exception as err:  # pydicom converts values lazily and raises many types on corrupt ones
            reason = f"corrupt header ({describe_error(err)})"
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        derived = derived or _is_derived(file.dataset)
    groups = _geometry_groups(frames)
    result = [
        Series(uid, modality, description, count, skipped_reason=reason)
        for reason, count in skipped.items()
    ]
    groups.sort(key=len, reverse=True)
    for index, group in enumerate(groups):
        series = Series(uid, modality, description, len({f.file_label for f in group}), group, derived)
        if index > 0:
            series.skipped_reason = _minority_reason(group, groups[0])
        result.append(series)
    return result


def non_ct_reason(dataset: Dataset) -> str | None:
    """Why a dataset is not a slice of a CT volume, or None when it is one."""
    sop_class = _sop_class(dataset)
    if sop_class in NON_IMAGE_SOP_CLASSES:
        return NON_IMAGE_SOP_CLASSES[sop_class]
    for prefix, reason in NON_IMAGE_SOP_PREFIXES.items():
        if sop_class.startswith(prefix):
            return reason
    if sop_class == SECONDARY_CAPTURE_PREFIX or sop_class.startswith(SECONDARY_CAPTURE_PREFIX + "."):
        return "secondary capture (a derived picture, not a CT slice)"
    modality = str(dataset.get("Modality", "") or "")
    if sop_class not in CT_SOP_CLASSES and modality != "CT":
        return f"modality {modality or 'unknown'}, not CT"
    if "PixelData" not in dataset:
        return "no pixel data"
    if "LOCALIZER" in _image_type(dataset):
        return "localizer/scout (ImageType LOCALIZER)"
    if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        return "colour image, not CT"
    return None


def frames_of(file: DicomFile) -> list[Frame]:
    """The frames of a classic (one per file) or enhanced (multi-frame) CT image."""
    ds = file.dataset
    rows, cols = _positive_int(ds, "Rows", file.label), _positive_int(ds, "Columns", file.label)
    n_frames = _positive_int(ds, "NumberOfFrames", file.label) if "NumberOfFrames" in ds else 1
    if rows * cols * n_frames > MAX_VOXELS:
        raise TooLargeError(
            f"{file.label}: header claims {rows}x{cols}x{n_frames} voxels, more than the {MAX_VOXELS} recon "
            "allocates; the header is damaged or the image is not a CT volume"
        )
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(file, rows, cols, n_frames)
    pixels = PixelSource(file)
    return [
        Frame(
            label=file.label,
            file_label=file.label,
            position=_vector(ds, "ImagePositionPatient", 3, file.label),
            orientation=_vector(ds, "ImageOrientationPatient", 6, file.label),
            pixel_spacing_mm=_vector(ds, "PixelSpacing", 2, file.label),
            rows=rows,
            cols=cols,
            slope=_number(ds, "RescaleSlope", 1.0, file.label),
            intercept=_number(ds, "RescaleIntercept", 0.0, file.label),
            thickness_mm=_number(ds, "SliceThickness", 0.0, file.label),
            pixels=lambda: pixels.frame(0),
            transfer_syntax=_transfer_syntax(ds),
        )
    ]


class PixelSource:
    """Decodes a file's pixel data on first use and keeps it for the file's other frames."""

    def __init__(self, file: DicomFile) -> None:
        self.file = file
        self._array: np.ndarray | None = None

    def frame(self, index: int) -> np.ndarray:
        if self._array is None:
            self._array = self._decode()
        array = self._array
        return array[index] if array.ndim == 3 else array

    def _decode(self) -> np.ndarray:
        _check_pixel_length(self.file)
        check_jpeg_frames(self.file.dataset, _transfer_syntax(self.file.dataset), self.file.label)
        try:
            native = read_native_pixels(self.file)
            return native if native is not None else self.file.dataset.pixel_array
        except (KeyboardInterrupt, SystemExit, CorruptFileError):
            raise
        except BaseException as err:  # decoders raise many types on damaged data; Rust ones panic
            raise CorruptFileError(
                f"{self.file.label}: pixel data cannot be decoded ({describe_error(err)}); "
                "the file is damaged or truncated: export the series again"
            ) from err


def _check_pixel_length(file: DicomFile) -> None:
    """Pixel data not yet read must fit in its file: a truncated transfer or an absurd length claim is refused
    before anything is allocated for it."""
    element = file.dataset.get_item(PIXEL_DATA_TAG, keep_deferred=True) if PIXEL_DATA_TAG in file.dataset else None
    path = file.dataset.filename if isinstance(file.dataset.filename, str) else None
    if not isinstance(element, RawDataElement) or element.value is not None or path is None:
        return
    available = os.path.getsize(path) - element.value_tell
    if element.length != UNDEFINED_LENGTH and element.length > available:
        raise CorruptFileError(f"{file.label}: pixel data claims {element.length} bytes and the file holds "
                               f"{available} after its start; the file is truncated: export the series again")


def read_native_pixels(file: DicomFile) -> np.ndarray | None:
    """Uncompressed little-endian 16-bit single-frame pixels, read straight from the file; None otherwise.

    The hot path of loading: it skips pydicom's generic decoder machinery, keeping its semantics (bits
    above BitsStored are masked, or sign-extended for signed data).
    """
    ds = file.dataset
    if _transfer_syntax(ds) not in NATIVE_LITTLE_ENDIAN or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        return None
    if ds.get("BitsAllocated") != 16 or ds.get("PixelRepresentation") not in (0, 1):
        return None
    expected = int(ds.Rows) * int(ds.Columns) * 2
    data = _pixel_bytes(ds, expected)
    if len(data) < expected:
        raise CorruptFileError(
            f"{file.label}: pixel data holds {len(data)} bytes, {expected} expected; the file is truncated: "
            "export the series again"
        )
    signed = ds.PixelRepresentation == 1
    pixels = np.frombuffer(data, "<i2" if signed else "<u2", count=expected // 2).reshape(ds.Rows, ds.Columns)
    unused = 16 - int(ds.get("BitsStored", 16) or 16)
    if 0 < unused < 16:
        pixels = (pixels << unused) >> unused if signed else pixels & np.uint16((1 << (16 - unused)) - 1)
    return pixels


def _pixel_bytes(ds: Dataset, expected: int) -> bytes:
    element = ds.get_item(PIXEL_DATA_TAG)
    path = ds.filename if isinstance(ds.filename, str) else None
    if isinstance(element, RawDataElement) and element.value is None and path is not None:
        with open(path, "rb") as handle:
            handle.seek(element.value_tell)
            return handle.read(min(element.length, expected))
    return ds.PixelData or b""


def _enhanced_frames(file: DicomFile, rows: int, cols: int, n_frames: int) -> list[Frame]:
    ds = file.dataset
    per_frame = ds.PerFrameFunctionalGroupsSequence
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    if len(per_frame) != n_frames:
        raise CorruptFileError(f"{file.label}: {len(per_frame)} per-frame groups for {n_frames} frames")
    pixels = PixelSource(file)
    frames = []
    for index, group in enumerate(per_frame):
        frame_type = _functional(group, shared, "CTImageFrameTypeSequence")
        if frame_type is not None and "LOCALIZER" in list(frame_type.get("FrameType", [])):
            continue
        plane = _functional(group, shared, "PlanePositionSequence")
        orientation = _functional(group, shared, "PlaneOrientationSequence")
        measures = _functional(group, shared, "PixelMeasuresSequence")
        rescale = _functional(group, shared, "PixelValueTransformationSequence") or Dataset()
        if plane is None or orientation is None or measures is None:
            raise InputError(f"{file.label}: frame {index + 1} has no plane position, orientation or spacing")
        label = f"{file.label} frame {index + 1}"
        frames.append(
            Frame(
                label=label,
                file_label=file.label,
                position=_vector(plane, "ImagePositionPatient", 3, label),
                orientation=_vector(orientation, "ImageOrientationPatient", 6, label),
                pixel_spacing_mm=_vector(measures, "PixelSpacing", 2, label),
                rows=rows,
                cols=cols,
                slope=_number(rescale, "RescaleSlope", 1.0, label),
                intercept=_number(rescale, "RescaleIntercept", 0.0, label),
                thickness_mm=_number(measures, "SliceThickness", 0.0, label),
                pixels=lambda index=index: pixels.frame(index),
                transfer_syntax=_transfer_syntax(ds),
            )
        )
    return frames


def _functional(group: Dataset, shared: Dataset, keyword: str) -> Dataset | None:
    for source in (group, shared):
        sequence = source.get(keyword)
        if sequence:
            return sequence[0]
    return None


def _geometry_groups(frames: list[Frame]) -> list[list[Frame]]:
    groups: list[list[Frame]] = []
    for frame in frames:
        for group in groups:
            if frame.same_geometry(group[0], ORIENTATION_TOLERANCE, SPACING_TOLERANCE_MM):
                group.append(frame)
                break
        else:
            groups.append([frame])
    return groups


def _minority_reason(group: list[Frame], majority: list[Frame]) -> str:
    if not np.allclose(group[0].orientation, majority[0].orientation, atol=ORIENTATION_TOLERANCE):
        return "orientation unlike the rest of the series (likely a localizer)"
    if (group[0].rows, group[0].cols) != (majority[0].rows, majority[0].cols):
        return f"matrix size {group[0].rows}x{group[0].cols} unlike the rest of the series"
    return "pixel spacing unlike the rest of the series"


def _check_size(series: Series) -> None:
    frame = series.frames[0]
    voxels = frame.rows * frame.cols * len(series.frames)
    if voxels > MAX_VOXELS:
        raise TooLargeError(
            f"{frame.label}: series {series.uid} claims {frame.rows}x{frame.cols}x{len(series.frames)} voxels, "
            f"more than the {MAX_VOXELS} recon allocates; check the headers or crop the study"
        )
    require_memory(voxels, LOAD_BYTES_PER_VOXEL, "loading the CT", f"series {series.uid}")


def _check_decoders(series: Series) -> None:
    checked: set[str] = set()
    for frame in series.frames:
        syntax = frame.transfer_syntax
        if syntax in checked or not syntax:
            continue
        checked.add(syntax)
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as err:
            raise MissingDecoderError(
                f"{frame.label}: transfer syntax {syntax} has no pixel data decoder in pydicom; "
                "convert the study to an uncompressed or JPEG 2000 syntax (e.g. with dcmtk's dcmdjpeg)"
            ) from err
        if not decoder.is_available:
            package = DECODER_PACKAGES.get(syntax, "pylibjpeg with its plugins")
            raise MissingDecoderError(
                f"{frame.label}: pixel data is compressed as {decoder.UID.name} and no decoder is installed; "
                f"install it with: pip install {package}"
            )


def _sop_class(dataset: Dataset) -> str:
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    if not sop_class and hasattr(dataset, "file_meta"):
        sop_class = str(dataset.file_meta.get("MediaStorageSOPClassUID", "") or "")
    return sop_class


def _transfer_syntax(dataset: Dataset) -> str:
    return str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or "")


def _image_type(dataset: Dataset) -> list[str]:
    value = dataset.get("ImageType", [])
    values = [value] if isinstance(value, str) else list(value or [])
    return [str(v).strip().upper() for v in values]


def _is_derived(dataset: Dataset) -> bool:
    image_type = _image_type(dataset)
    return bool(image_type) and image_type[0] == "DERIVED"


def _positive_int(dataset: Dataset, keyword: str, label: str) -> int:
    try:
        value = int(dataset.get(keyword))
    except (TypeError, ValueError) as err:
        raise CorruptFileError(f"{label}: {keyword} is missing or not a number") from err
    if value < 1:
        raise CorruptFileError(f"{label}: {keyword} is {value}, expected a positive number")
    return value


def _decimals(dataset: Dataset, keyword: str) -> list[float] | None:
    """The numbers of a decimal-string (DS) element, or None when it is absent or empty.

    Reads the raw bytes when pydicom has not converted the element yet: converting to pydicom's DS
    objects is the slowest part of scanning a large series.
    """
    element = dataset.get_item(keyword) if keyword in dataset else None
    if element is None:
        return None
    value = element.value
    if isinstance(value, bytes):
        text = value.decode("ascii", errors="replace").strip(" \0")
        return [float(part) for part in text.split("\\")] if text else None
    if value is None or value == "":
        return None
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        value = [value]
    return [float(v) for v in value]


def _vector(dataset: Dataset, keyword: str, length: int, label: str) -> np.ndarray:
    try:
        values = _decimals(dataset, keyword)
    except (TypeError, ValueError) as err:
        raise InputError(f"{label}: {keyword} is not numeric; cannot place the image in space") from err
    vector = np.array(values if values is not None else [], dtype=float)
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise InputError(f"{label}: {keyword} must be {length} finite numbers, got {values}; "
                         "cannot place the image in space")
    return vector


def _number(dataset: Dataset, keyword: str, default: float, label: str) -> float:
    try:
        values = _decimals(dataset, keyword)
    except (TypeError, ValueError) as err:
        raise InputError(f"{label}: {keyword} is not a number") from err
    if values is None:
        return default
    if len(values) != 1 or not np.isfinite(values[0]):
        raise InputError(f"{label}: {keyword} must be one finite number, got {values}")
    return values[0]


def _short(uid: str) -> str:
    return uid or "(no SeriesInstanceUID)"
