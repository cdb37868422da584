"""``--model totalsegmentator``: run TotalSegmentator, when the user has it and its weights installed (an
optional extra, never required), and read its ``--ml`` result as any existing segmentation.

It runs as its own command in a scratch folder: the CT goes in as NIfTI, the multilabel file comes back.
Two things are made sure of first, because TotalSegmentator would otherwise reach the network: the weights
of its ``total`` task are already on disk (it downloads missing ones), and its usage statistics are off (its
configuration file turns them on by default; recon hands it a private one with them off, so the user's own
configuration is left untouched).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from recon.errors import InputError, ReconError
from recon.io.images import write_image
from recon.segmentation.sources import existing_labels
from recon.volume import LabelMap, Volume

TOTALSEGMENTATOR = "totalsegmentator"  # the --model word
EXECUTABLE = "TotalSegmentator"
TOTAL_TASK_DATASETS = (291, 292, 293, 294, 295)  # the "total" task at 1.5 mm comes in five parts
INSTALL_HINT = ("install it with 'pip install TotalSegmentator' and its weights with "
                "'totalseg_download_weights -t total', or pass a result you already have with --labels/--seg")


class TotalSegmentatorError(ReconError, RuntimeError):
    """TotalSegmentator ran and failed."""


def weights_folder(environ: dict[str, str] | None = None) -> Path:
    """Where TotalSegmentator keeps its weights: TOTALSEG_WEIGHTS_PATH, else TOTALSEG_HOME_DIR's, else the
    home folder's ``.totalsegmentator``."""
    environ = os.environ if environ is None else environ
    if environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(environ["TOTALSEG_WEIGHTS_PATH"])
    home = Path(environ["TOTALSEG_HOME_DIR"]) if environ.get("TOTALSEG_HOME_DIR") else Path.home() / ".totalsegmentator"
    return home / "nnunet" / "results"


def installed_version() -> str:
    """TotalSegmentator's installed version, or "not installed"."""
    try:
        return metadata.version(EXECUTABLE)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_totalsegmentator(volume: Volume, *, device: str = "cpu") -> LabelMap:
    """The bones TotalSegmentator finds in ``volume``, as recon labels on its grid."""
    executable = shutil.which(EXECUTABLE)
    if executable is None:
        raise InputError(f"--model totalsegmentator: the {EXECUTABLE} command is not installed; {INSTALL_HINT}")
    weights = weights_folder()
    missing = [n for n in TOTAL_TASK_DATASETS if not any(weights.glob(f"Dataset{n}_*"))]
    if missing:
        raise InputError(f"--model totalsegmentator: {weights} lacks the weights of datasets "
                         f"{', '.join(map(str, missing))} (recon never downloads at run time); {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="recon-totalseg-") as scratch:
        work = Path(scratch)
        write_image(volume.hu, volume.grid, work / "ct.nii.gz")
        result = subprocess.run(
            [executable, "-i", str(work / "ct.nii.gz"), "-o", str(work / "labels.nii.gz"), "--ml", "-ta", "total",
             "-d", "gpu" if device == "cuda" else "cpu", "-q"],
            env=_private_environment(work / "home", weights), capture_output=True, text=True, check=False)
        if result.returncode != 0 or not (work / "labels.nii.gz").is_file():
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no message"]
            raise TotalSegmentatorError(f"{EXECUTABLE} failed (exit {result.returncode}): {last[0]}")
        return existing_labels(work / "labels.nii.gz", volume.grid, "totalsegmentator")


def _private_environment(home: Path, weights: Path) -> dict[str, str]:
    """The environment TotalSegmentator runs in: its configuration in ``home`` with usage statistics off, the
    user's weights where they are."""
    home.mkdir()
    config = {"totalseg_id": "recon", "send_usage_stats": False, "prediction_counter": 0,
              "statistics_disclaimer_shown": True}
    (home / ".totalsegmentator").mkdir()
    for folder in (home, home / ".totalsegmentator"):  # TOTALSEG_HOME_DIR in v2, ~/.totalsegmentator before
        (folder / "config.json").write_text(json.dumps(config))
    return {**os.environ, "HOME": str(home), "TOTALSEG_HOME_DIR": str(home), "TOTALSEG_WEIGHTS_PATH": str(weights)}
