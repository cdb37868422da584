"""DICOM Segmentation objects (SEG) with highdicom: read as label maps (segment number -> id, segment label ->
name, the geometry from the SEG's own plane positions and orientation, LPS), and written from label maps in
the study of their source CT series."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from recon import __version__
from recon.anatomy import VERTEBRA_PREFIX
from recon.errors import InputError
from recon.io.atomic import atomic_path
from recon.geometry import Grid
from recon.volume import LabelMap, compact_label_dtype

# type 2 attributes (required, may be empty) of the patient and study modules that highdicom copies from the
# source: they identify the patient or the visit, so recon writes them empty unless asked
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
               "AccessionNumber", "ReferringPhysicianName")
# and where the source's acquisition was made and by whom, which highdicom copies into nested items
IDENTIFYING_ANYWHERE = IDENTIFYING + ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
                                      "StationName", "OperatorsName", "PerformingPhysicianName")


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom_seg(path: Path) -> LabelMap:
    """Every segment of a binary or fractional SEG as one label (fractional: at 0.5); segments must not overlap."""
    try:
        segmentation = hd.seg.segread(path)
    except (ValueError, AttributeError, KeyError, TypeError, OSError) as err:
        raise InputError(f"{path}: not a readable DICOM SEG ({type(err).__name__}); check the file") from err
    try:
        volume = segmentation.get_volume(combine_segments=True)
    except (ValueError, RuntimeError) as err:
        raise InputError(f"{path}: its segments cannot form one label map ({err}); recon needs non-overlapping "
                         "segments on a regular grid") from err
    affine = np.asarray(volume.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    grid = Grid(volume.array.shape, spacing, affine[:3, 3], (affine[:3, :3] / spacing))
    labels = np.asarray(volume.array)
    names = {int(item.SegmentNumber): str(item.SegmentLabel) for item in segmentation.SegmentSequence}
    return LabelMap(grid, labels.astype(compact_label_dtype(labels)), names)


def write_dicom_seg(labels: LabelMap, sources: list, path: str | Path, *, include_patient: bool = False) -> Path:
    """Write ``labels`` as a binary DICOM SEG in the study of ``sources`` (the CT series' datasets), one
    segment per label, coded (SNOMED CT) and marked as made by an automatic algorithm (recon).

    The patient's name, ID, birth date and sex and the study's ID, date, time, accession number and referring
    physician are left empty unless ``include_patient``: the SEG still belongs to the study (by its UID) and
    frame of reference of its source series.
    """
    counts = np.bincount(labels.labels.ravel().astype(np.int64))
    present = [index for index in sorted(labels.names) if index < len(counts) and counts[index]]
    if not present:
        raise InputError(f"{path}: no labelled voxels to write as a DICOM SEG")
    for dataset in sources:  # attributes the standard requires but lets be empty, which some writers omit
        for keyword in IDENTIFYING:
            if keyword not in dataset:
                setattr(dataset, keyword, "")
    segment_of = np.zeros(len(counts), np.uint8)  # label id -> segment number (1..N), unnamed ids -> 0
    segment_of[present] = np.arange(1, len(present) + 1)
    numbered = segment_of[labels.labels]
    grid = labels.grid
    affine = np.eye(4)
    axes = grid.direction_matrix * np.asarray(grid.spacing_mm)
    affine[:3, :3] = axes[:, ::-1]  # highdicom's axes: slice (k), row (j), column (i)
    affine[:3, 3] = grid.origin_lps_mm
    volume = hd.Volume(numbered.transpose(2, 1, 0), affine, coordinate_system="PATIENT",
                       frame_of_reference_uid=sources[0].FrameOfReferenceUID)
    algorithm = hd.AlgorithmIdentificationSequence(name="recon", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=labels.names[index],
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=_property_type(labels.names[index]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        for number, index in enumerate(present, start=1)]
    segmentation = hd.seg.Segmentation(
        source_images=sources, pixel_array=volume, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9001,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="recon", manufacturer_model_name="recon",
        software_versions=__version__, device_serial_number="none", series_description="recon bone segmentation",
        omit_empty_frames=True)
    if not include_patient:
        _blank_identifying(segmentation)
    segmentation.preamble = b"\x00" * 128
    with atomic_path(Path(path)) as temporary:
        segmentation.save_as(temporary, enforce_file_format=True)
    return Path(path)


def _blank_identifying(dataset) -> None:
    """Empty every identifying attribute, at the top level and inside sequences."""
    for element in list(dataset.iterall()):
        if element.keyword in IDENTIFYING_ANYWHERE and element.value not in (None, "", b""):
            element.value = ""


def _property_type(name: str):
    if name.startswith(VERTEBRA_PREFIX):
        return codes.SCT.Vertebra
    if name == "sacrum":
        return codes.SCT.Sacrum
    if name.startswith("femur"):
        return codes.SCT.Femur
    return codes.SCT.Bone
