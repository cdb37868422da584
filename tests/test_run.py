"""``recon run`` end to end: an existing segmentation of a real study, and a phantom study segmented by the
shipped model with its plan checked against the phantom's truth."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import trimesh

from recon.cli import main
from recon.io.dicom_seg import read_dicom_seg
from recon.io.labels import read_label_map
from recon.resample import resample_labels
from recon.phantom.synth import synthesize
from tests.conftest import shared_path

OUTPUTS = ("labels.nii.gz", "labels.json", "segmentation.seg.nrrd", "scene.glb", "plan.json", "plan.mrk.json",
           "plan.csv", "preview.png", "provenance.json", "meshes/meshes.json")


def test_run_with_an_existing_segmentation_writes_every_output(tmp_path, capsys):
    study = shared_path("real/totalseg-example")
    out = tmp_path / "run"
    assert main(["run", str(study / "ct.nii.gz"), "--seg", str(study / "reference_v1"), "-o", str(out)]) == 0
    for name in OUTPUTS + ("screws.stl", "cups.stl", "meshes/vertebrae_L3.stl", "meshes/hip_left.stl"):
        assert (out / name).is_file(), name
    assert not list(out.rglob(".tmp-*"))
    plan = json.loads((out / "plan.json").read_text())
    assert any(screw["status"] == "planned" for screw in plan["screws"])
    assert [cup["status"] for cup in plan["hip"]] == ["planned", "planned"]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["model"]["source"] == "existing segmentation"
    assert len(provenance["input"]["sha256"]) == 64
    assert {"load", "segment", "mesh", "plan spine", "plan hip"} <= set(provenance["stages"])
    assert provenance["dependencies"]["numpy"]
    scene = trimesh.load(out / "scene.glb")
    assert {"pedicle screws", "acetabular cups", "vertebrae_L3"} <= set(scene.geometry)
    assert "clinician" in capsys.readouterr().out


@pytest.mark.parametrize("zooms", [(), ("1.1", "0.9")])
def test_run_with_the_shipped_network_on_real_ct_plans_most_lumbar_screws(tmp_path, zooms):
    """The whole pipeline on the real CT with recon's own labels. Measured 2026-12-07: 9 of the 10 lumbar
    screws planned (L5 left: no catalogue length fits its 23 mm of bone); 6 with these weights before the
    pedicle finder's tilt cost and the canal's least depth, 8 with the previous weights; before the fix to
    shortening touching screws, this run crashed on a screw shortened short of its pedicle. With test-time
    zooms 1.1 and 0.9 (2026-12-08): 9 of 10 too, the same L5 left not plannable."""
    study = shared_path("real/totalseg-example")
    out = tmp_path / "run"
    zoom_options = ["--zooms", *zooms] if zooms else []
    assert main(["run", str(study / "ct.nii.gz"), "--procedure", "spine", "-o", str(out), *zoom_options]) == 0
    screws = json.loads((out / "plan.json").read_text())["screws"]
    lumbar = [screw for screw in screws if screw["vertebra"].startswith("vertebrae_L")]
    assert len(lumbar) == 10
    assert sum(screw["status"] == "planned" for screw in lumbar) >= 8
    assert json.loads((out / "provenance.json").read_text())["options"]["zooms"] == [float(z) for z in zooms]


@pytest.mark.parametrize("options, message", [(["--zooms", "1.1", "-0.9"], "zooms must be positive"),
                                              (["--zooms", "1.1", "--seg", "labels.nii.gz"], "for recon's network"),
                                              (["--zooms", "1.1", "--model", "totalsegmentator"],
                                               "for recon's network")])
def test_run_refuses_test_time_zooms_it_cannot_use_before_writing_anything(tmp_path, capsys, options, message):
    assert main(["run", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out"), *options]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_run_on_a_phantom_dicom_study_plans_screws_in_its_pedicles(tmp_path):
    case = synthesize(tmp_path / "study", count=1, seed=970_200_000, size="small", fmt="dicom")[0]
    truth = json.loads((case / "truth.json").read_text())
    out = tmp_path / "run"
    assert main(["run", str(case / "ct"), "-o", str(out), "--procedure", "spine"]) == 0
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    plan = json.loads((out / "plan.json").read_text())
    planned = [screw for screw in plan["screws"] if screw["status"] == "planned"]
    assert planned
    true_isthmi = {side: np.array([vertebra[f"pedicle_{side}"]["isthmus_center_lps_mm"]
                                   for vertebra in truth["vertebrae"].values()]) for side in ("left", "right")}
    for screw in planned:  # level names come from the network; positions must still be true pedicles
        nearest = np.linalg.norm(true_isthmi[screw["side"]] - screw["isthmus_center_lps_mm"], axis=1).min()
        assert nearest < 3.0, (screw["vertebra"], screw["side"], nearest)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["model"]["sha256"] and provenance["series"][0]["selected"]
    seg = pydicom.dcmread(out / "segmentation.dcm")
    assert seg.preamble == b"\x00" * 128 and seg.Modality == "SEG" and str(seg.PatientName) == ""
    source = pydicom.dcmread(next((case / "ct").glob("*.dcm")), stop_before_pixels=True)
    assert (seg.StudyInstanceUID, seg.FrameOfReferenceUID) == (source.StudyInstanceUID, source.FrameOfReferenceUID)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert all(item.SegmentAlgorithmType == "AUTOMATIC" for item in seg.SegmentSequence)
    labels = read_label_map(out / "labels.nii.gz")
    reread = resample_labels(read_dicom_seg(out / "segmentation.dcm"), labels.grid)
    by_name = {name: index for index, name in labels.names.items()}
    renumbered = np.zeros_like(labels.labels)
    for index, name in reread.names.items():
        renumbered[reread.labels == index] = by_name[name]
    assert np.array_equal(renumbered, labels.labels)
    for file in out.rglob("*"):  # the synthetic study's patient name and ID appear in no output
        if file.is_file():
            content = file.read_bytes()
            assert b"Synthetic^Phantom" not in content and b"SYNTHETIC" not in content, file.name


def test_run_on_the_real_dicom_series_says_why_it_writes_no_dicom_seg(tmp_path):
    study = shared_path("real/totalseg-example")
    out = tmp_path / "run"
    assert main(["run", str(study / "dicom"), "--seg", str(study / "dicom_reference_seg_v2.nii.gz"),
                 "--label-map", "totalsegmentator", "--procedure", "spine", "-o", str(out)]) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    # the anonymised series carries empty Study and Series Instance UIDs: a SEG could not reference it
    assert not (out / "segmentation.dcm").exists()
    assert any("no segmentation.dcm" in warning for warning in provenance["warnings"])
    assert (out / "report.html").is_file() and (out / "labels.nii.gz").is_file()
