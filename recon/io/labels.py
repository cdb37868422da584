"""Label maps on disk: an integer NIfTI/NRRD/MHA image plus ``labels.json`` ({id: name}) beside it, a folder
of one binary mask per structure (TotalSegmentator's layout), or a DICOM SEG (its segment labels name it).

One naming rule for every command that reads a label file: names come from ``label_map`` (a JSON file of
{id: name}, or one of the words in ``recon.anatomy.VOCABULARIES``), else from ``labels.json`` beside the
file, else ``label_<id>``. Names declared by a JSON file are kept even when their label is empty (so an
evaluation can report it absent); names from a built-in vocabulary are kept only for labels present.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from recon.anatomy import VOCABULARIES
from recon.errors import InputError
from recon.io.atomic import atomic_path
from recon.io.dicom_seg import is_dicom_file, read_dicom_seg
from recon.io.images import image_format, read_image, write_image
from recon.volume import LabelMap, compact_label_dtype

NAMES_FILE = "labels.json"
MAX_LABEL_ID = 2**31 - 1
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

log = logging.getLogger(__name__)


def write_label_map(labels: LabelMap, path: str | Path) -> Path:
    """Write the label image (the smallest unsigned type that holds its ids) and ``labels.json`` in the same
    folder: ``{id: name}``, or ``{id: {"name": ..., "confidence": ..., "counted_from": ...}}`` for labels with a
    confidence (vertebra levels: ``counted_from`` is the levels' anchor, where the model gave one)."""
    path = Path(path)
    write_image(labels.labels.astype(compact_label_dtype(labels.labels)), labels.grid, path)
    names = {str(index): _entry(labels, index, name) for index, name in sorted(labels.names.items())}
    with atomic_path(path.parent / NAMES_FILE) as temporary:
        temporary.write_text(json.dumps(names, indent=2))
    return path


def _entry(labels: LabelMap, index: int, name: str) -> str | dict:
    if index not in labels.confidence:
        return name
    entry = {"name": name, "confidence": round(labels.confidence[index], 4)}
    return entry | ({"counted_from": labels.level_anchor} if labels.level_anchor else {})


def read_label_map(path: str | Path, label_map: str | Path | None = None) -> LabelMap:
    """Read a label image, or a folder of per-structure masks, with names by the rule above."""
    path = Path(path)
    if path.is_dir():
        return read_structure_folder(path)
    if not image_format(path) and is_dicom_file(path):
        seg = read_dicom_seg(path)
        names = label_names(path, label_map)[0] if label_map is not None else seg.names
        return LabelMap(seg.grid, seg.labels, {i: names.get(i, f"label_{i}") for i in seg.names})
    image = read_image(path)
    values = np.asarray(image.array)
    if values.dtype.kind == "f" and not (np.all(np.isfinite(values)) and np.array_equal(values, np.round(values))):
        raise InputError(f"{path}: label image holds non-integer values (or NaN); expected integer labels")
    if values.min(initial=0) < 0 or values.max(initial=0) > MAX_LABEL_ID:
        raise InputError(f"{path}: label ids must lie between 0 (background) and {MAX_LABEL_ID}")
    labels = values.astype(compact_label_dtype(values))
    present = [int(v) for v in np.unique(labels) if v != 0]
    names, declared = label_names(path, label_map)
    ids = sorted(set(present) | (set(names) if declared else set()))
    return LabelMap(image.grid, labels, {v: names.get(v, f"label_{v}") for v in ids})


def label_names(path: Path, label_map: str | Path | None) -> tuple[dict[int, str], bool]:
    """The id -> name table for the label file at ``path``, and whether a JSON file declared it."""
    if label_map is not None and str(label_map) in VOCABULARIES:
        return VOCABULARIES[str(label_map)](), False
    if label_map is not None:
        return _names_file(Path(label_map)), True
    beside = path.parent / NAMES_FILE
    if beside.is_file():
        return _names_file(beside), True
    return {}, False


def _names_file(path: Path) -> dict[int, str]:
    fix = f"it must hold a JSON object of label id -> name, e.g. {{\"1\": \"vertebrae_L1\"}}, or be one of " \
          f"the words {', '.join(VOCABULARIES)}"
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"{path}: label map not found; {fix}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: unreadable label map ({err}); {fix}") from err
    if not isinstance(table, dict):
        raise InputError(f"{path}: not a label map; {fix}")
    names = {}
    for key, name in table.items():
        name = name.get("name") if isinstance(name, dict) else name
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and int(key) > 0
                and isinstance(name, str) and name and name.isascii() and name.isprintable()):
            raise InputError(f"{path}: entry {key!r}: {name!r} is not a positive id and a printable ASCII name; {fix}")
        if int(key) in names:
            raise InputError(f"{path}: id {int(key)} appears twice")
        names[int(key)] = name
    if len(set(names.values())) != len(names):
        raise InputError(f"{path}: two ids share a name; each label needs its own name")
    return names


def is_structure_folder(folder: Path) -> bool:
    """True when ``folder`` holds only mask images named after known structures (``vertebrae_L1.nii.gz``...),
    like TotalSegmentator's output folder, rather than one label file per case."""
    if not folder.is_dir() or (folder / NAMES_FILE).exists():
        return False
    files = [f for f in folder.iterdir() if not f.name.startswith(".")]
    known = known_structure_names()
    return bool(files) and all(f.is_file() and image_format(f) and structure_name(f) in known for f in files)


def known_structure_names() -> set[str]:
    return {name for vocabulary in VOCABULARIES.values() for name in vocabulary().values()}


def read_structure_folder(folder: Path) -> LabelMap:
    """Merge a folder of binary masks into one label map, one id per file (sorted by name), named after the
    file. Voxels claimed by two masks go to the later name, with a warning."""
    files = sorted(f for f in folder.iterdir() if image_format(f) and not f.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no mask images (.nii.gz, .nrrd, .mha) in this folder")
    first = read_image(files[0])
    labels = np.zeros(first.grid.shape, np.uint16)
    names, overlaps = {}, 0
    for index, file in enumerate(files, start=1):
        mask = first if index == 1 else read_image(file)
        if not mask.grid.same_as(first.grid, tolerance_mm=1e-3):
            raise InputError(f"{file}: its grid differs from {files[0].name}'s; the masks of one folder must "
                             "share one grid")
        inside = np.asarray(mask.array) != 0
        overlaps += int(np.count_nonzero(labels[inside]))
        labels[inside] = index
        names[index] = structure_name(file)
    if overlaps:
        log.warning("%s: %d voxels belong to two masks; each went to the later name", folder, overlaps)
    return LabelMap(first.grid, labels, names)


def structure_name(file: Path) -> str:
    """``vertebrae_L1.nii.gz`` -> ``vertebrae_L1``."""
    name = file.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return file.stem
