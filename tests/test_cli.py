"""The command line, run in-process: JSON shape, exit codes, no stack traces, --help everywhere."""

import json

import nibabel as nib
import numpy as np
import pytest

from recon.cli import EXIT_INPUT_ERROR, main
from recon.geometry import Grid
from recon.io.dicom_write import write_ct_series
from recon.volume import Volume


@pytest.fixture
def series(tmp_path):
    grid = Grid((16, 12, 5), (0.8, 0.8, 2.0), (-6.0, -4.0, 10.0))
    write_ct_series(Volume(grid, np.full(grid.shape, 40.0, np.float32)), tmp_path / "series")
    return tmp_path / "series"


def test_info_json_has_the_promised_fields(series, capsys):
    assert main(["info", str(series), "--json"]) == 0
    description = json.loads(capsys.readouterr().out)
    assert description["series"][0]["selected"] is True
    assert description["volume"]["shape_ijk"] == [16, 12, 5]
    assert description["volume"]["direction"] == [1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert "Synthetic" not in json.dumps(description)  # patient name never printed


def test_info_text_names_the_selected_series(series, capsys):
    assert main(["info", str(series)]) == 0
    assert "selected" in capsys.readouterr().out


def test_convert_writes_nifti_with_matching_codes(series, tmp_path, capsys):
    target = tmp_path / "ct.nii.gz"
    assert main(["convert", str(series), str(target)]) == 0
    header = nib.load(target).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 1)


@pytest.mark.parametrize("argv", [["info", "/no/such/study"], ["convert", "/no/such/study", "out.nii.gz"]])
def test_bad_input_exits_non_zero_without_a_traceback(argv, capsys):
    assert main(argv) == EXIT_INPUT_ERROR
    err = capsys.readouterr().err
    assert "/no/such/study" in err and "Traceback" not in err


def test_unknown_output_format_is_refused_before_loading(series, tmp_path, capsys):
    assert main(["convert", str(series), str(tmp_path / "ct.png")]) == EXIT_INPUT_ERROR
    assert ".nii.gz" in capsys.readouterr().err


def test_a_negative_worker_count_is_refused_before_training_starts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "-o", str(tmp_path / "model"), "--workers", "-1"])
    assert exit_info.value.code == 2 and "0 or more" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("command", [[], ["info"], ["convert"], ["demo"], ["synth"], ["preview"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: recon" in capsys.readouterr().out


def test_demo_writes_its_outputs(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--size", "small"]) == 0
    assert (tmp_path / "demo" / "run" / "report.html").is_file()
    assert (tmp_path / "demo" / "run" / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "demo" / "evaluation" / "summary.json").is_file()
    assert "report: " in capsys.readouterr().out
    info = json.loads((tmp_path / "demo" / "info.json").read_text())
    assert info["volume"]["shape_ijk"] == [128, 128, 128]


def test_synth_and_preview_commands(tmp_path, capsys):
    assert main(["synth", "-o", str(tmp_path), "--seed", "4", "--format", "nifti"]) == 0
    case = tmp_path / "phantom_00004"
    assert main(["preview", str(case / "ct.nii.gz"), "--labels", str(case / "labels.nii.gz"),
                 "-o", str(tmp_path / "view.png")]) == 0
    assert (tmp_path / "view.png").stat().st_size > 10_000
    assert main(["synth", "-o", str(tmp_path), "--count", "0"]) == EXIT_INPUT_ERROR


def test_patient_identifiers_never_reach_the_output(series, tmp_path, capsys):
    import warnings

    import pydicom

    canary = "CANARYXQZ"
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.PatientName = f"{canary}^{'X' * 80}"  # an invalid PN too, which pydicom would quote in a warning
        ds.PatientID = canary
        ds.InstitutionName = canary
        ds.save_as(path)
    assert main(["info", str(series), "--json"]) == 0
    assert main(["convert", str(series), str(tmp_path / "ct.nii.gz")]) == 0
    captured = capsys.readouterr()
    assert canary not in captured.out + captured.err
    assert canary.encode() not in (tmp_path / "ct.nii.gz").read_bytes()
