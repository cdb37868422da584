"""The one rule for label names (--label-map, else labels.json, else label_<id>) and per-structure folders."""

import json
import logging

import numpy as np
import pytest

from recon.errors import InputError
from recon.geometry import Grid
from recon.io.images import write_image
from recon.io.labels import is_structure_folder, read_label_map, write_label_map
from recon.volume import LabelMap
from tests.conftest import shared_path

GRID = Grid((6, 5, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))


@pytest.fixture
def label_file(tmp_path):
    array = np.zeros(GRID.shape, np.uint8)
    array[1, 1, 1], array[2, 2, 2], array[3, 3, 3] = 20, 27, 28
    path = tmp_path / "seg.nii.gz"
    write_image(array, GRID, path)
    return path


def test_without_names_labels_are_called_by_their_id(label_file):
    assert read_label_map(label_file).names == {20: "label_20", 27: "label_27", 28: "label_28"}


@pytest.mark.parametrize("word, expected", [
    ("verse", {20: "vertebrae_L1", 27: "label_27", 28: "vertebrae_T13"}),
    ("totalsegmentator", {20: "colon", 27: "vertebrae_L5", 28: "vertebrae_L4"}),
])
def test_a_named_vocabulary_names_the_present_labels(label_file, word, expected):
    assert read_label_map(label_file, word).names == expected


def test_labels_json_beside_the_file_names_labels_and_declares_absent_ones(label_file):
    (label_file.parent / "labels.json").write_text(json.dumps({"20": "a", "27": "b", "28": "c", "5": "empty"}))
    assert read_label_map(label_file).names == {5: "empty", 20: "a", 27: "b", 28: "c"}


def test_an_explicit_label_map_file_wins_over_labels_json(label_file, tmp_path):
    (label_file.parent / "labels.json").write_text(json.dumps({"20": "a"}))
    mapping = tmp_path / "mine.json"
    mapping.write_text(json.dumps({"20": "x", "27": "y", "28": "z"}))
    assert read_label_map(label_file, mapping).names == {20: "x", 27: "y", 28: "z"}


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"one": "x"}', '{"1": ""}', '{"1": "a", "2": "a"}'])
def test_a_bad_label_map_is_a_clear_error_naming_the_file(label_file, tmp_path, content):
    mapping = tmp_path / "bad.json"
    mapping.write_text(content)
    with pytest.raises(InputError, match="bad.json"):
        read_label_map(label_file, mapping)


def test_labels_round_trip_with_their_names(tmp_path):
    array = np.zeros(GRID.shape, np.uint16)
    array[0, 0, 0] = 300
    write_label_map(LabelMap(GRID, array, {300: "vertebrae_L2"}), tmp_path / "labels.nii.gz")
    assert read_label_map(tmp_path / "labels.nii.gz").names == {300: "vertebrae_L2"}


def test_levels_write_their_confidence_and_what_they_were_counted_from(tmp_path):
    array = np.zeros(GRID.shape, np.uint8)
    array[0, 0, 0], array[1, 1, 1], array[2, 2, 2] = 4, 5, 8
    names = {4: "vertebrae_L2", 5: "vertebrae_L3", 8: "sacrum"}
    write_label_map(LabelMap(GRID, array, names, {4: 0.81234, 5: 0.5}, "none"), tmp_path / "labels.nii.gz")
    written = json.loads((tmp_path / "labels.json").read_text())
    assert written == {"4": {"name": "vertebrae_L2", "confidence": 0.8123, "counted_from": "none"},
                       "5": {"name": "vertebrae_L3", "confidence": 0.5, "counted_from": "none"}, "8": "sacrum"}
    assert read_label_map(tmp_path / "labels.nii.gz").names == names


def _structure_folder(folder, masks):
    folder.mkdir()
    for name, mask in masks.items():
        write_image(mask.astype(np.uint8), GRID, folder / f"{name}.nii.gz")
    return folder


def test_a_totalsegmentator_style_folder_becomes_one_label_map(tmp_path, caplog):
    a, b = np.zeros(GRID.shape, bool), np.zeros(GRID.shape, bool)
    a[:3], b[2:] = True, True
    folder = _structure_folder(tmp_path / "segmentations", {"vertebrae_L1": a, "sacrum": b,
                                                            "femur_left": np.zeros(GRID.shape, bool)})
    assert is_structure_folder(folder)
    with caplog.at_level(logging.WARNING):
        labels = read_label_map(folder)
    assert sorted(labels.names.values()) == ["femur_left", "sacrum", "vertebrae_L1"]
    by_name = {name: index for index, name in labels.names.items()}
    assert np.all(labels.labels[2] == by_name["vertebrae_L1"])  # the overlap goes to the later name
    assert np.all(labels.labels[3:] == by_name["sacrum"])
    assert "belong to two masks" in caplog.text


def test_a_folder_of_cases_is_not_a_structure_folder(tmp_path):
    folder = _structure_folder(tmp_path / "cases", {"case_001": np.ones(GRID.shape, bool)})
    assert not is_structure_folder(folder)


def test_ids_above_65535_survive_a_round_trip(tmp_path):
    array = np.zeros(GRID.shape, np.uint32)
    array[1, 1, 1] = 70000
    write_label_map(LabelMap(GRID, array, {70000: "big"}), tmp_path / "labels.nii.gz")
    assert read_label_map(tmp_path / "labels.nii.gz").names == {70000: "big"}


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e12, -3.0])
def test_non_finite_huge_or_negative_label_values_are_refused(tmp_path, value):
    array = np.zeros(GRID.shape, np.float32)
    array[0, 0, 0] = value
    write_image(array, GRID, tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match="bad.nii.gz"):
        read_label_map(tmp_path / "bad.nii.gz")


def test_a_dicom_seg_reads_as_a_named_label_map_in_patient_space():
    from recon.io.loading import load_ct
    from recon.resample import resample_labels

    folder = shared_path("dicom-edge/dcmqi-ct3-seg")
    labels = read_label_map(folder / "liver.dcm")
    assert labels.names == {1: "Liver"}
    ct = load_ct(folder / "ct-3slice")
    on_ct = resample_labels(labels, ct.grid)
    assert 20 < float(np.median(ct.hu[on_ct.labels == 1])) < 100  # liver parenchyma, not air or bone
    with pytest.raises(InputError, match="overlap"):
        read_label_map(folder / "partial_overlaps.dcm")
