"""``--model totalsegmentator`` against a stand-in ``TotalSegmentator`` command (the real one and its weights are
an optional extra that CI does not have): refused with the fix when absent or without weights, never run
then; run offline with usage statistics off and the user's configuration untouched; its ``--ml`` result read
by name onto the CT's grid; a failure reported with its message."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from recon.anatomy import totalsegmentator_names
from recon.cli import main
from recon.errors import InputError
from recon.geometry import Grid
from recon.io.images import read_image, write_image
from recon.io.labels import read_label_map
from recon.segmentation.infer import segment
from recon.segmentation.totalseg import TOTAL_TASK_DATASETS, TotalSegmentatorError
from recon.volume import Volume

# The stand-in: records its arguments and environment, then labels every voxel above 300 HU as L3 in
# TotalSegmentator's own numbering (or fails, when asked to).
STAND_IN = """#!{python}
import json, os, sys
from pathlib import Path
import numpy as np
from recon.io.images import read_image, write_image
arguments = sys.argv[1:]
home = os.environ["TOTALSEG_HOME_DIR"]
record = {{"arguments": arguments, "environment": {{k: os.environ.get(k) for k in
          ("HOME", "TOTALSEG_HOME_DIR", "TOTALSEG_WEIGHTS_PATH")}},
          "config": json.load(open(os.path.join(home, "config.json")))}}
json.dump(record, open(os.environ["STAND_IN_RECORD"], "w"))
if os.environ.get("STAND_IN_FAIL"):
    sys.exit("RuntimeError: stand-in asked to fail")
image = read_image(Path(arguments[arguments.index("-i") + 1]))
labels = np.where(image.array > 300, {l3}, 0).astype(np.uint8)
write_image(labels, image.grid, Path(arguments[arguments.index("-o") + 1]))
"""


def _l3_id() -> int:
    return next(index for index, name in totalsegmentator_names().items() if name == "vertebrae_L3")


@pytest.fixture
def volume() -> Volume:
    hu = np.full((20, 18, 16), -100, np.int16)
    hu[5:12, 6:12, 4:10] = 700
    grid = Grid(hu.shape, (1.5, 1.5, 2.0), (-10.0, 20.0, 5.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return Volume(grid, hu)


@pytest.fixture
def stand_in(tmp_path, monkeypatch) -> dict:
    """The stand-in command on PATH, its weights folder, a user home, and the file it records into."""
    bin_dir, weights, user_home = tmp_path / "bin", tmp_path / "weights", tmp_path / "user"
    bin_dir.mkdir(), weights.mkdir(), user_home.mkdir()
    command = bin_dir / "TotalSegmentator"
    command.write_text(STAND_IN.format(python=sys.executable, l3=_l3_id()))
    command.chmod(command.stat().st_mode | stat.S_IEXEC)
    (user_home / ".totalsegmentator").mkdir()
    user_config = user_home / ".totalsegmentator" / "config.json"
    user_config.write_text(json.dumps({"totalseg_id": "user", "send_usage_stats": True, "prediction_counter": 7}))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(weights))
    monkeypatch.delenv("TOTALSEG_HOME_DIR", raising=False)
    monkeypatch.setenv("STAND_IN_RECORD", str(tmp_path / "record.json"))
    return {"weights": weights, "record": tmp_path / "record.json", "user_config": user_config}


def _install_weights(weights: Path) -> None:
    for number in TOTAL_TASK_DATASETS:
        (weights / f"Dataset{number}_TotalSegmentator_part").mkdir()


def test_refused_with_the_fix_when_not_installed(volume, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="not installed.*pip install TotalSegmentator"):
        segment(volume, model="totalsegmentator")


def test_refused_without_weights_and_never_run(volume, stand_in):
    with pytest.raises(InputError, match="lacks the weights of datasets 291, 292, 293, 294, 295.*never downloads"):
        segment(volume, model="totalsegmentator")
    assert not stand_in["record"].exists()


def test_runs_offline_with_statistics_off_and_reads_its_labels(volume, stand_in):
    _install_weights(stand_in["weights"])
    user_config_before = stand_in["user_config"].read_text()
    labels = segment(volume, model="totalsegmentator")
    assert list(labels.names.values()) == ["vertebrae_L3"]
    l3 = next(iter(labels.names))
    np.testing.assert_array_equal(labels.labels == l3, volume.hu > 300)
    assert labels.grid.same_as(volume.grid, tolerance_mm=1e-6)
    record = json.loads(stand_in["record"].read_text())
    assert "--ml" in record["arguments"] and record["arguments"][record["arguments"].index("-ta") + 1] == "total"
    assert record["config"]["send_usage_stats"] is False
    assert record["environment"]["TOTALSEG_WEIGHTS_PATH"] == str(stand_in["weights"])
    assert record["environment"]["HOME"] != str(stand_in["user_config"].parents[1])
    assert not Path(record["environment"]["TOTALSEG_HOME_DIR"]).exists()  # its scratch home is gone
    assert stand_in["user_config"].read_text() == user_config_before


def test_failure_is_reported_with_its_message(volume, stand_in, monkeypatch):
    _install_weights(stand_in["weights"])
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    with pytest.raises(TotalSegmentatorError, match="exit 1.*stand-in asked to fail"):
        segment(volume, model="totalsegmentator")


def test_recon_segment_command(volume, stand_in, tmp_path):
    _install_weights(stand_in["weights"])
    write_image(volume.hu, volume.grid, tmp_path / "ct.nii.gz")
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out"), "--model", "totalsegmentator"]) == 0
    written = read_label_map(tmp_path / "out" / "labels.nii.gz")
    assert list(written.names.values()) == ["vertebrae_L3"]
    assert read_image(tmp_path / "out" / "labels.nii.gz").array.shape == volume.grid.shape
