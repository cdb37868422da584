"""Finding DICOM files: a folder (recursive), a zip of one, a DICOMDIR, or a single file.

Every file is read once, with large elements (pixel data) deferred until a chosen series needs them.
Files that are not DICOM are passed over; files that are DICOM but unreadable are reported, not raised,
so one bad file in a study does not hide the good series beside it.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from recon.errors import InputError, TooLargeError

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
MAX_ZIP_MEMBER_BYTES = 2 * 1024**3
MAX_ZIP_TOTAL_BYTES = 8 * 1024**3
DEFER_ELEMENTS_LARGER_THAN = "16 KB"
GROUPING_KEYWORDS = ("SeriesInstanceUID", "SOPInstanceUID", "Modality", "SeriesDescription")


@dataclass(frozen=True)
class DicomFile:
    """One DICOM file as read: ``label`` names it in messages, ``dataset`` has pixel data deferred."""

    label: str
    dataset: Dataset


@dataclass(frozen=True)
class UnreadableFile:
    """A file that starts like DICOM but could not be parsed."""

    label: str
    reason: str


def looks_like_dicom(head: bytes) -> bool:
    """True for a Part 10 file (``DICM`` at byte 128) or a bare dataset starting with group 0008 or 0002."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00") and head[3:4] == b"\x00"


def is_dicomdir(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR"


def read_dicom_files(path: Path) -> tuple[list[DicomFile], list[UnreadableFile]]:
    """Read every DICOM file under ``path`` (folder, zip, DICOMDIR or single file)."""
    if path.is_dir():
        sources = [p for p in sorted(path.rglob("*")) if p.is_file()]
        return _read_paths(sources, root=path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    if is_dicomdir(path):
        return _read_paths(_dicomdir_members(path), root=path.parent)
    return _read_paths([path], root=path.parent)


def _read_paths(paths: list[Path], *, root: Path) -> tuple[list[DicomFile], list[UnreadableFile]]:
    files: list[DicomFile] = []
    unreadable: list[UnreadableFile] = []
    for path in paths:
        label = _relative_label(path, root)
        try:
            with path.open("rb") as handle:
                head = handle.read(132)
        except OSError as err:
            unreadable.append(UnreadableFile(label, f"cannot open: {err.strerror}"))
            continue
        if not looks_like_dicom(head):
            continue
        _parse(label, path, files, unreadable)
    return files, unreadable


def _read_zip(path: Path) -> tuple[list[DicomFile], list[UnreadableFile]]:
    files: list[DicomFile] = []
    unreadable: list[UnreadableFile] = []
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{path}: not a readable zip archive ({err}); re-create the archive") from err
    total_bytes = 0
    with archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            label = f"{path.name}:{member.filename}"
            total_bytes += member.file_size
            if member.file_size > MAX_ZIP_MEMBER_BYTES or total_bytes > MAX_ZIP_TOTAL_BYTES:
                raise TooLargeError(
                    f"{label}: the zip unpacks to more than recon reads from one archive "
                    f"({MAX_ZIP_MEMBER_BYTES} bytes a member, {MAX_ZIP_TOTAL_BYTES} in all); "
                    "extract the study and pass the folder"
                )
            try:
                data = archive.read(member)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
                unreadable.append(UnreadableFile(label, f"cannot extract from the zip (encrypted or damaged): {err}"))
                continue
            if looks_like_dicom(data[:132]):
                _parse(label, io.BytesIO(data), files, unreadable)
    return files, unreadable


def _parse(label: str, source, files: list[DicomFile], unreadable: list[UnreadableFile]) -> None:
    try:
        dataset = pydicom.dcmread(source, defer_size=DEFER_ELEMENTS_LARGER_THAN, force=True)
    except Exception as err:  # pydicom raises many types on corrupt input; each becomes a report
        unreadable.append(UnreadableFile(label, f"corrupt or truncated DICOM ({type(err).__name__}: {err})"))
        return
    try:
        media_class = str(getattr(getattr(dataset, "file_meta", None), "MediaStorageSOPClassUID", ""))
        for keyword in GROUPING_KEYWORDS:  # read now, so a corrupt value is reported here, once
            dataset.get(keyword)
    except Exception as err:
        unreadable.append(UnreadableFile(label, f"corrupt header ({type(err).__name__}: {err})"))
        return
    if media_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in dataset:
        return
    _name_detected_encoding(dataset)
    files.append(DicomFile(label, dataset))


def _name_detected_encoding(dataset: Dataset) -> None:
    """A bare dataset (no Part 10 header) gets the transfer syntax pydicom detected while reading it."""
    if getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None):
        return
    implicit, little = dataset.original_encoding
    syntax = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if not hasattr(dataset, "file_meta"):
        dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax


def _dicomdir_members(path: Path) -> list[Path]:
    try:
        fileset = FileSet(pydicom.dcmread(path))
    except Exception as err:
        raise InputError(
            f"{path}: unreadable DICOMDIR ({type(err).__name__}: {err}); pass the folder that holds it instead"
        ) from err
    return [Path(instance.path) for instance in fileset]


def _relative_label(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
