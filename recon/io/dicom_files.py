"""Finding DICOM files: a folder (recursive), a zip of one, a DICOMDIR, or a single file.

Every file is read once, with large elements (pixel data) deferred until a chosen series needs them.
Files that are not DICOM are passed over; files that are DICOM but unreadable are reported, not raised,
so one bad file in a study does not hide the good series beside it.

Messages name a file inside a folder, zip or DICOMDIR by its number in sorted path order (``file #12``), not by
its name: hospital exports often put the patient's name in file names. ``--verbose`` logs the names.
Text that pydicom quotes from a damaged header is cut out of messages for the same reason.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from recon.errors import InputError, TooLargeError

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
MAX_ZIP_MEMBER_BYTES = 2 * 1024**3
MAX_ZIP_TOTAL_BYTES = 8 * 1024**3
DEFER_ELEMENTS_LARGER_THAN = "16 KB"
QUOTED = re.compile("b?'[^']*'|b?\"[^\"]*\"")  # text in quotes, as pydicom quotes values in its messages
GROUPING_KEYWORDS = ("SeriesInstanceUID", "SOPInstanceUID", "Modality", "SeriesDescription")
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
UID_MAX_CHARACTERS = 64
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA_TAG = 0x7FE00010


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
        return _read_paths(sources)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    if is_dicomdir(path):
        return _read_paths(sorted(_dicomdir_members(path)))
    return _read_paths([path], single=True)


def _read_paths(paths: list[Path], *, single: bool = False) -> tuple[list[DicomFile], list[UnreadableFile]]:
    files: list[DicomFile] = []
    unreadable: list[UnreadableFile] = []
    for number, path in enumerate(paths, start=1):
        label = str(path) if single else file_label(number)
        log.debug("%s is %s", label, path)
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
        raise InputError(f"{path}: not a readable zip archive ({describe_error(err)}); re-create the archive") from err
    total_bytes = 0
    with archive:
        for number, member in enumerate(archive.infolist(), start=1):
            if member.is_dir():
                continue
            label = f"{path.name}: member #{number}"
            log.debug("%s is %s", label, member.filename)
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
                unreadable.append(UnreadableFile(label, "cannot extract from the zip (encrypted or damaged): "
                                                        f"{describe_error(err)}"))
                continue
            if looks_like_dicom(data[:132]):
                _parse(label, io.BytesIO(data), files, unreadable)
    return files, unreadable


def _parse(label: str, source, files: list[DicomFile], unreadable: list[UnreadableFile]) -> None:
    try:
        dataset = pydicom.dcmread(source, defer_size=DEFER_ELEMENTS_LARGER_THAN, force=True)
    except Exception as err:  # pydicom raises many types on corrupt input; each becomes a report
        unreadable.append(UnreadableFile(label, f"corrupt or truncated DICOM ({describe_error(err)})"))
        return
    try:
        media_class = str(getattr(getattr(dataset, "file_meta", None), "MediaStorageSOPClassUID", ""))
        for keyword in GROUPING_KEYWORDS:  # read now, so a corrupt value is reported here, once
            dataset.get(keyword)
    except Exception as err:
        unreadable.append(UnreadableFile(label, f"corrupt header ({describe_error(err)})"))
        return
    if media_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in dataset:
        return
    size = source.stat().st_size if isinstance(source, Path) else source.getbuffer().nbytes
    problem = _header_problem(dataset, size)
    if problem:
        unreadable.append(UnreadableFile(label, problem))
        return
    _name_detected_encoding(dataset)
    files.append(DicomFile(label, dataset))


def _header_problem(dataset: Dataset, size: int) -> str | None:
    """An element claiming more bytes than the file holds (read before anything is allocated for it), or a UID
    that is not one; None when neither."""
    for tag in dataset.keys():
        element = dataset.get_item(tag, keep_deferred=True)  # as read: a deferred value stays unread
        length, start = getattr(element, "length", 0), getattr(element, "value_tell", None)
        if element.tag == PIXEL_DATA_TAG:  # checked when read, so a truncated slice is an error, not a gap
            continue
        if start is not None and length != UNDEFINED_LENGTH and start + length > size:
            return (f"element {element.tag} claims {length} bytes, beyond the end of the {size}-byte file; the file "
                    "is truncated or damaged")
    invalid = [keyword for keyword in UID_KEYWORDS if dataset.get(keyword) and not is_valid_uid(dataset.get(keyword))]
    if invalid:
        return f"{', '.join(invalid)} not a valid UID (digits and dots, at most {UID_MAX_CHARACTERS} characters)"
    return None


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
    """The files a DICOMDIR references; refused if any reference points outside the DICOMDIR's folder."""
    try:
        records = pydicom.dcmread(path, force=True).DirectoryRecordSequence
    except Exception as err:
        raise InputError(
            f"{path}: unreadable DICOMDIR ({describe_error(err)}); pass the folder that holds it instead"
        ) from err
    folder = path.parent.resolve()
    members = []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if file_id is None:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        member = folder.joinpath(*parts).resolve()
        unsafe = any(part in ("..", "") or "/" in part or "\\" in part for part in parts)
        if unsafe or not member.is_relative_to(folder):
            raise InputError(f"{path}: a file reference points outside the DICOMDIR's folder; the DICOMDIR is "
                             "damaged or hostile. Pass the folder of the study instead")
        members.append(member)
    return members


def is_valid_uid(value) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (checked before a UID is used anywhere)."""
    text = str(value) if value is not None else ""
    return len(text) <= UID_MAX_CHARACTERS and UID.fullmatch(text) is not None


def file_label(number: int) -> str:
    """How messages name the ``number``-th file (1-based, sorted path order) of a folder, zip or DICOMDIR."""
    return f"file #{number} (in sorted path order)"


def describe_error(err: BaseException) -> str:
    """An exception's type and message with quoted text removed: pydicom quotes header values (names, IDs)."""
    message = QUOTED.sub("'…'", str(err))
    return f"{type(err).__name__}: {message[:300]}"
