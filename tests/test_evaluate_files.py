"""recon evaluate on files: real TotalSegmentator masks from ../shared/data, folders of cases, the CLI."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from recon.cli import EXIT_INPUT_ERROR, main
from recon.evaluation import evaluate
from recon.geometry import Grid
from recon.io.labels import read_label_map, write_label_map
from recon.volume import LabelMap
from tests.conftest import shared_path

TOTALSEG = "real/totalseg-example"
LUMBAR = [f"vertebrae_L{n}" for n in range(1, 6)]


def test_real_segmentation_against_itself_is_perfect():
    labels = read_label_map(shared_path(f"{TOTALSEG}/dicom_reference_seg_v2.nii.gz"), "totalsegmentator")
    result = evaluate(labels, labels)
    assert len(result.labels) > 20 and not result.resampled
    for score in result.labels.values():
        assert (score.dice, score.iou, score.hd_mm, score.hd95_mm, score.assd_mm) == (1.0, 1.0, 0.0, 0.0, 0.0)
        assert all(value == 1.0 for value in score.nsd.values())


def test_real_segmentation_shifted_one_voxel_gives_the_analytic_values(tmp_path):
    source = shared_path(f"{TOTALSEG}/dicom_reference_seg_v2.nii.gz")
    image = nib.load(source)
    shifted = image.affine.copy()
    shifted[:3, 3] += image.affine[:3, 0]  # voxel i of the copy lies where voxel i + 1 of the original lies
    nib.Nifti1Image(np.asanyarray(image.dataobj), shifted).to_filename(tmp_path / "shifted.nii.gz")
    ref = read_label_map(source, "totalsegmentator")
    result = evaluate(read_label_map(tmp_path / "shifted.nii.gz", "totalsegmentator"), ref)
    step = ref.grid.spacing_mm[0]
    assert result.resampled
    checked = 0
    for index, name in ref.names.items():
        mask = ref.labels == index
        if mask[0].any() or mask[-1].any():
            continue  # part of the label leaves the grid
        score = result.labels[name]
        moved = np.roll(mask, 1, axis=0)
        assert score.dice == pytest.approx(np.count_nonzero(mask & moved) / np.count_nonzero(mask), abs=1e-12)
        assert score.hd_mm == pytest.approx(step, abs=1e-6)
        assert score.centroid_distance_mm == pytest.approx(step, abs=1e-6)
        assert score.volume_pred_ml == score.volume_ref_ml
        assert score.nsd[1.0] == 1.0  # every element moved by 0.98 mm
        checked += 1
    assert checked >= 10


def test_totalsegmentator_v1_folder_against_v2_ids_agrees_on_the_lumbar_spine(capsys):
    folder = shared_path(f"{TOTALSEG}/reference_v1")
    v2 = shared_path(f"{TOTALSEG}/spine_report/totalseg.nii.gz")
    assert main(["evaluate", str(folder), str(v2), "--ref-label-map", "totalsegmentator", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    for level in LUMBAR:
        assert table["labels"][level]["dice"] > 0.9
        assert table["labels"][level]["identified"] is True
    assert table["labels"]["sacrum"]["status"] == "missing_in_ref"  # v2 splits S1 from the sacrum
    assert "hd95_mm" in table["conventions"]


def _case(folder, shift):
    grid = Grid((30, 30, 30), (1.0, 1.0, 1.5), (0.0, 0.0, 0.0))
    array = np.zeros(grid.shape, np.uint8)
    array[5:15, 5:15, 5:15] = 1
    array[18:26, 5:15, 5:15] = 2
    array = np.roll(array, shift, axis=1)
    write_label_map(LabelMap(grid, array, {1: "vertebrae_L1", 2: "vertebrae_L2", 3: "sacrum"}),
                    folder / "labels.nii.gz")


def test_folders_of_cases_are_matched_by_name_and_summarised(tmp_path, capsys):
    for case, shift in [("a", 1), ("b", 2), ("c", 0)]:
        _case(tmp_path / "pred" / case, shift)
    for case in ("a", "b", "d"):
        _case(tmp_path / "ref" / case, 0)
    out = tmp_path / "out"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out),
                 "--tolerance-mm", "1,2"]) == 0
    with open(out / "metrics.csv") as stream:
        rows = list(csv.DictReader(line for line in stream if not line.startswith("#")))
    assert {(row["case"], row["label"]) for row in rows} == {
        (case, label) for case in "ab" for label in ("vertebrae_L1", "vertebrae_L2", "sacrum")}
    assert {row["status"] for row in rows if row["label"] == "sacrum"} == {"absent"}
    assert "nsd_2mm" in rows[0] and "nsd_3mm" not in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["unmatched_cases"] == {"pred_only": ["c"], "ref_only": ["d"]}
    l1 = summary["labels"]["vertebrae_L1"]
    assert l1["hd_mm"]["mean"] == pytest.approx(1.5) and l1["dice"]["n"] == 2
    assert summary["labels"]["sacrum"]["cases"]["absent"] == 2
    assert summary["identification"]["rate_pooled"] == 1.0
    assert "Conventions" in (out / "summary.md").read_text()
    assert (out / "boxplot_hd95_mm.png").stat().st_size > 1000


def test_a_file_against_a_folder_of_cases_is_a_clear_error(tmp_path, capsys):
    _case(tmp_path / "pred" / "a", 0)
    _case(tmp_path / "ref" / "a", 0)
    code = main(["evaluate", str(tmp_path / "pred" / "a" / "labels.nii.gz"), str(tmp_path / "ref")])
    assert code == EXIT_INPUT_ERROR
    assert "single case" in capsys.readouterr().err
