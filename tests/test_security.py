"""The guarantees in SECURITY.md: patient data stays out of every output, log and error; model files run no
code; configuration is data; paths never come from DICOM text; recon's DICOM SEG is valid; two runs into one
folder do not corrupt each other; a CT too large for the memory budget is refused with a message."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.fileset import FileSet

from recon import load_ct
from recon.errors import InputError, OutputBusyError, TooLargeError
from recon.geometry import Grid
from recon.io.dicom_write import write_ct_series
from recon.io.lock import output_lock
from recon.phantom.synth import synthesize
from recon.run import run_study
from recon.segmentation.model import DEFAULT_MODEL, MODELS_DIR, load_model
from recon.segmentation.train import train
from recon.volume import Volume

CANARIES = {"PatientName": "CANARYNAME^ZQX", "PatientID": "CANARYID7731", "PatientBirthDate": "18770523",
            "InstitutionName": "CANARYINST", "ReferringPhysicianName": "CANARYREF^DOC",
            "AccessionNumber": "CANARYACC55"}
PRIVATE_CANARY, FILE_CANARY = "CANARYPRIVATE", "CANARYFILE"
SEARCHED = ("CANARY", "18770523", "1877-05-23")


def _canary_study(folder: Path, seed: int) -> Path:
    """A small phantom DICOM study whose headers and file names carry canary strings."""
    case = synthesize(folder / "staging", count=1, seed=seed, size="small", fmt="dicom")[0]
    study = folder / "study"
    study.mkdir()
    for n, path in enumerate(sorted((case / "ct").glob("*.dcm"))):
        dataset = pydicom.dcmread(path)
        for keyword, value in CANARIES.items():
            setattr(dataset, keyword, value)
        block = dataset.private_block(0x0011, PRIVATE_CANARY, create=True)
        block.add_new(0x01, "LO", f"{PRIVATE_CANARY} value")
        dataset.save_as(study / f"{FILE_CANARY}_{CANARIES['PatientID']}_{n:04d}.dcm")
    shutil.rmtree(folder / "staging")
    return study


def _hits(root: Path, text: str) -> list[str]:
    """Canaries found in ``text`` and in every file under ``root`` (gzip members unpacked). Case matters:
    plotly's bundled JavaScript has a lower-case "canary" of its own."""
    found = [f"output text: {word}" for word in SEARCHED if word in text]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data += gzip.decompress(data)
            found += [f"{path.relative_to(root)}: {word}" for word in SEARCHED if word.encode() in data]
            found += [f"file name {path.relative_to(root)}" for word in SEARCHED if word in path.name]
    return found


def _recon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from recon.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory):
    """``recon run`` on the canary study: (study, output folder, everything it printed)."""
    root = tmp_path_factory.mktemp("privacy")
    study = _canary_study(root, 970_400_000)
    result = _recon("run", str(study), "-o", str(root / "run"), "--procedure", "spine")
    assert result.returncode == 0, result.stderr
    return study, root / "run", result.stdout + result.stderr


def test_recon_run_writes_no_patient_data_anywhere(canary_run):
    _, out, printed = canary_run
    assert (out / "segmentation.dcm").is_file() and (out / "report.html").is_file()
    assert _hits(out, printed) == []


def test_recon_batch_with_a_failing_case_writes_no_patient_data_anywhere(canary_run, tmp_path):
    study, _, _ = canary_run
    inputs = tmp_path / "inputs"
    shutil.copytree(study, inputs / "good")
    shutil.copytree(study, inputs / "broken")
    for path in (inputs / "broken").iterdir():  # a transfer cut short: every pixel data element truncated
        path.write_bytes(path.read_bytes()[:-5000])
    result = _recon("batch", str(inputs), "-o", str(tmp_path / "out"), "--procedure", "spine")
    assert result.returncode == 3, result.stderr
    rows = {row["case_id"]: row for row in json.loads((tmp_path / "out" / "batch_summary.json").read_text())["cases"]}
    assert rows["good"]["status"] == "done" and rows["broken"]["status"] == "failed"
    assert "file #" in rows["broken"]["error"]  # the file is named by its number, not its name
    assert _hits(tmp_path / "out", result.stdout + result.stderr) == []


def test_recon_seg_is_valid_dicom_with_a_zero_preamble_and_references_its_source(canary_run):
    study, out, _ = canary_run
    raw = (out / "segmentation.dcm").read_bytes()
    assert raw[:128] == b"\0" * 128 and raw[128:132] == b"DICM"
    previous = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.RAISE
    try:
        seg = pydicom.dcmread(out / "segmentation.dcm")
        source = pydicom.dcmread(next(study.iterdir()))
    finally:
        pydicom_config.settings.reading_validation_mode = previous
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert str(seg.PatientName) == "" and seg.PatientID == "" and seg.AccessionNumber == ""
    segmentation = hd.seg.segread(out / "segmentation.dcm")
    assert segmentation.number_of_segments >= 1


def test_seg_keeps_the_patient_module_only_when_asked(canary_run, tmp_path):
    study, _, _ = canary_run
    run_study(study, tmp_path / "run", procedure="spine", seg_with_identity=True)
    seg = pydicom.dcmread(tmp_path / "run" / "segmentation.dcm")
    assert seg.PatientID == CANARIES["PatientID"] and seg.AccessionNumber == CANARIES["AccessionNumber"]
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["options"]["seg_with_identity"] is True


class _CreatesAFile:
    """A pickle payload: unpickling it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_model_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "pickle_ran"
    payload = pickle.dumps(_CreatesAFile(marker))
    for name in ("model.pt", "model.pth", "weights.pkl", "checkpoint.ckpt"):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(InputError, match="pickled files can run code"):
            load_model(tmp_path / name)
    disguised = tmp_path / "disguised"  # a pickle renamed to model.safetensors, with a card that matches it
    shutil.copytree(MODELS_DIR / DEFAULT_MODEL, disguised)
    (disguised / "model.safetensors").write_bytes(payload)
    card = json.loads((disguised / "model.json").read_text())
    card["sha256"] = hashlib.sha256(payload).hexdigest()
    (disguised / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="not safetensors"):
        load_model(disguised)
    result = _recon("run", str(tmp_path / "nothing.nii.gz"), "-o", str(tmp_path / "out"), "--model",
                    str(tmp_path / "model.pt"))
    assert result.returncode == 1
    assert not marker.exists()


def test_configuration_files_are_checked_against_their_schema(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"seed": 0, "steps": "__import__('os').system('touch x')"}))
    with pytest.raises(InputError, match="not a valid training configuration"):
        train(tmp_path / "model", config_path=config)
    card = tmp_path / "model" / "model.json"
    shutil.copytree(MODELS_DIR / DEFAULT_MODEL, card.parent,
                    dirs_exist_ok=True)
    document = json.loads(card.read_text())
    document["network"]["channels"] = [16, 10**9]
    card.write_text(json.dumps(document))
    with pytest.raises(InputError, match="model card: at network/channels/1"):
        load_model(card.parent)


def test_a_dicomdir_pointing_outside_its_folder_is_refused(tmp_path):
    series = tmp_path / "series"
    write_ct_series(Volume(Grid((8, 8, 2), (1, 1, 1), (0, 0, 0), np.eye(3)), np.zeros((8, 8, 2), np.float32)),
                    series)
    fileset = FileSet()
    for path in sorted(series.glob("*.dcm")):
        fileset.add(pydicom.dcmread(path))
    fileset.write(tmp_path / "media")
    dicomdir = tmp_path / "media" / "DICOMDIR"
    dataset = pydicom.dcmread(dicomdir)
    images = [r for r in dataset.DirectoryRecordSequence if "ReferencedFileID" in r]
    images[0].ReferencedFileID = ["..", "..", "etc", "passwd"]
    dataset.save_as(dicomdir)
    with pytest.raises(InputError, match="outside the DICOMDIR's folder"):
        load_ct(dicomdir)


def test_uids_are_checked_before_use(tmp_path):
    paths = write_ct_series(Volume(Grid((8, 8, 3), (1, 1, 1), (0, 0, 0), np.eye(3)),
                                   np.zeros((8, 8, 3), np.float32)), tmp_path / "series")
    with pytest.raises(InputError, match="not a DICOM UID"):
        load_ct(tmp_path / "series", series_uid="../../etc")
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = "1.2.3/../../evil"
        dataset.save_as(path)
    with pytest.raises(InputError, match="SeriesInstanceUID not a valid UID"):
        load_ct(tmp_path / "series")


def test_absurd_headers_are_refused_at_once(tmp_path):
    path = write_ct_series(Volume(Grid((8, 8, 1), (1, 1, 1), (0, 0, 0), np.eye(3)),
                                  np.zeros((8, 8, 1), np.float32)), tmp_path / "matrix")[0]
    dataset = pydicom.dcmread(path)
    dataset.Rows = dataset.Columns = 65535
    dataset.NumberOfFrames = "2147483647"
    dataset.save_as(path)
    started = time.perf_counter()
    with pytest.raises(InputError, match="65535x65535x2147483647 voxels, more than"):
        load_ct(tmp_path / "matrix")
    assert time.perf_counter() - started < 1.0
    path = write_ct_series(Volume(Grid((128, 128, 1), (1, 1, 1), (0, 0, 0), np.eye(3)),
                                  np.zeros((128, 128, 1), np.float32)), tmp_path / "length")[0]
    data = bytearray(path.read_bytes())
    at = data.index(b"\xe0\x7f\x10\x00OW\x00\x00") + 8  # pixel data's 4-byte length: claim 4 GB
    data[at:at + 4] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    started = time.perf_counter()
    with pytest.raises(InputError, match="pixel data claims 4294967280 bytes"):
        load_ct(tmp_path / "length")
    assert time.perf_counter() - started < 1.0


def test_a_second_run_into_a_busy_folder_is_refused_and_the_first_is_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.json").write_text("{}")
    with output_lock(out):
        with pytest.raises(OutputBusyError, match="another recon process is writing into this folder"):
            run_study(tmp_path / "missing.nii.gz", out)
        result = _recon("run", str(tmp_path / "missing.nii.gz"), "-o", str(out))
        assert result.returncode == 1 and "another recon process" in result.stderr
    assert (out / "plan.json").read_text() == "{}"


def test_a_ct_beyond_the_memory_budget_is_refused_with_a_message(tmp_path, monkeypatch):
    write_ct_series(Volume(Grid((64, 64, 8), (1, 1, 1), (0, 0, 0), np.eye(3)), np.zeros((64, 64, 8), np.float32)),
                    tmp_path / "series")
    monkeypatch.setenv("RECON_MEMORY_GB", "0.0001")
    with pytest.raises(TooLargeError, match="RECON_MEMORY_GB"):
        load_ct(tmp_path / "series")
    monkeypatch.setenv("RECON_MEMORY_GB", str(64 * 64 * 8 * 12 / 1e9))  # enough to load, not to run
    with pytest.raises(TooLargeError, match="recon run on 32768 voxels needs about"):
        run_study(tmp_path / "series", tmp_path / "out")
    monkeypatch.setenv("RECON_MEMORY_GB", "lots")
    with pytest.raises(InputError, match="positive number"):
        load_ct(tmp_path / "series")
    assert os.environ["RECON_MEMORY_GB"] == "lots"
