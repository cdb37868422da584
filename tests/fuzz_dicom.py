"""Fuzzing ``recon.load_ct`` with mutated DICOM, driven by Hypothesis.

Seeds: a small CT series written by recon, and CT files from ../shared/data/dicom-edge (uncompressed, JPEG,
JPEG 2000, JPEG-LS, RLE, a 3-slice series). Each example copies one seed and applies 1-4 mutations to its
files: truncation, flipped bytes, a corrupted element length, a dropped attribute, NaN/inf/huge numbers in
numeric attributes, absurd matrix sizes, and slices moved onto each other's positions. ``load_ct`` must load
the result or raise a ``ReconError``: any other exception, or an example running past ``--timeout`` seconds,
fails the run (Hypothesis then shrinks it and prints it). Run it in a child process with a memory cap, as
the test does, so memory exhaustion fails too:

    python -m tests.fuzz_dicom --examples 5000 --random    # longer, and new inputs on every run
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config as pydicom_config

from recon import load_ct
from recon.errors import ReconError
from recon.geometry import Grid
from recon.io.dicom_write import write_ct_series
from recon.volume import Volume

SHARED_EDGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom-edge"
SHARED_SEEDS = ("pydicom-samples/CT_small.dcm", "transfer-syntaxes-wg04/J2KI/CT2_J2KI",
                "transfer-syntaxes-wg04/JLSN/CT2_JLSN", "transfer-syntaxes-wg04/RLE/CT2_RLE",
                "transfer-syntaxes-wg04/JPLL/CT2_JPLL", "dcmqi-ct3-seg/ct-3slice")
NUMERIC_KEYWORDS = ("PixelSpacing", "SliceThickness", "RescaleSlope", "RescaleIntercept", "ImagePositionPatient",
                    "ImageOrientationPatient", "SpacingBetweenSlices")
STRANGE_NUMBERS = ("NaN", "inf", "-inf", "1e308", "-0", "0", "1e-320", "")
SIZE_KEYWORDS = ("Rows", "Columns", "NumberOfFrames", "BitsAllocated", "BitsStored", "SamplesPerPixel",
                 "PixelRepresentation", "HighBit")
ABSURD_SIZES = (0, 1, 3, 7, 65535, 2**31 - 1, 2**32 - 1)
DROPPABLE = NUMERIC_KEYWORDS + SIZE_KEYWORDS + ("PixelData", "SeriesInstanceUID", "SOPInstanceUID", "Modality",
                                                "FrameOfReferenceUID", "PhotometricInterpretation", "InstanceNumber")
LENGTH_TAGS = (b"\x28\x00\x10\x00", b"\x28\x00\x30\x00", b"\x20\x00\x32\x00", b"\xe0\x7f\x10\x00",
               b"\x20\x00\x0e\x00", b"\x08\x00\x60\x00")


def seeds() -> list[list[bytes]]:
    """Every seed input as the contents of its files."""
    own = _own_series()
    found = [own]
    for relative in SHARED_SEEDS:
        path = SHARED_EDGE / relative
        if path.is_dir():
            found.append([p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()])
        elif path.is_file():
            found.append([path.read_bytes()])
    return found


def _own_series() -> list[bytes]:
    rng = np.random.default_rng(0)
    grid = Grid((24, 20, 6), (0.8, 0.8, 2.0), (-10.0, -8.0, 5.0), np.eye(3))
    volume = Volume(grid, rng.normal(0, 300, grid.shape).astype(np.float32))
    with tempfile.TemporaryDirectory() as folder:
        write_ct_series(volume, Path(folder))
        return [p.read_bytes() for p in sorted(Path(folder).glob("*.dcm"))]


# ------------------------------------------------------------------------------------------ mutations


def _edit(data: bytes, change) -> bytes:
    """Parse, change the dataset, write it back; input pydicom cannot parse is left as it is."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        change(dataset)
        out = io.BytesIO()
        dataset.save_as(out, enforce_file_format=False)
        return out.getvalue()
    except Exception:
        return data


def truncate(fraction: float):
    return lambda files, i: _replace(files, i, files[i][: int(len(files[i]) * fraction)])


def flip(position: float, value: int):
    def apply(files, i):
        data = bytearray(files[i])
        if data:
            data[min(int(position * len(data)), len(data) - 1)] = value
        return _replace(files, i, bytes(data))
    return apply


def corrupt_length(tag: bytes, length: int):
    """Overwrite the length field after an element's tag (both the short and the long form's position)."""
    def apply(files, i):
        data = bytearray(files[i])
        at = data.find(tag, 132)
        if at >= 0:
            width = 4 if data[at + 4:at + 6] in (b"OB", b"OW", b"UN", b"SQ", b"UT") else 2
            start = at + 8 if width == 4 else at + 6
            data[start:start + width] = (length % 2 ** (8 * width)).to_bytes(width, "little")
        return _replace(files, i, bytes(data))
    return apply


def drop(keyword: str):
    return lambda files, i: _replace(files, i, _edit(files[i], lambda ds: ds.pop(keyword, None)))


def strange_number(keyword: str, text: str):
    def change(ds):
        if keyword in ds:
            count = max(1, ds.data_element(keyword).VM)
            ds.data_element(keyword).value = "\\".join([text] * count)
    return lambda files, i: _replace(files, i, _edit(files[i], change))


def absurd_size(keyword: str, value: int):
    def change(ds):
        setattr(ds, keyword, value if keyword != "NumberOfFrames" else str(value))
    return lambda files, i: _replace(files, i, _edit(files[i], change))


def same_position():
    def apply(files, i):
        try:
            position = pydicom.dcmread(io.BytesIO(files[0]), force=True, stop_before_pixels=True).get(
                "ImagePositionPatient")
        except Exception:  # the first file is already mutated beyond reading: nothing to copy
            return files
        if position is None:
            return files
        return _replace(files, i, _edit(files[i], lambda ds: setattr(ds, "ImagePositionPatient", position)))
    return apply


def _replace(files: list[bytes], i: int, data: bytes) -> list[bytes]:
    return [data if n == i else f for n, f in enumerate(files)]


MUTATIONS = st.one_of(
    st.builds(truncate, st.floats(0.0, 1.0)),
    st.builds(flip, st.floats(0.0, 1.0), st.integers(0, 255)),
    st.builds(corrupt_length, st.sampled_from(LENGTH_TAGS), st.sampled_from((0, 1, 3, 0xFFFF, 0xFFFFFFFE,
                                                                             0xFFFFFFFF, 2**31))),
    st.builds(drop, st.sampled_from(DROPPABLE)),
    st.builds(strange_number, st.sampled_from(NUMERIC_KEYWORDS), st.sampled_from(STRANGE_NUMBERS)),
    st.builds(absurd_size, st.sampled_from(SIZE_KEYWORDS), st.sampled_from(ABSURD_SIZES)),
    st.builds(same_position),
)


# ---------------------------------------------------------------------------------------------- run


class Hang(Exception):
    """An example ran past the time limit."""


def load_or_refuse(files: list[bytes], timeout_s: int) -> str:
    """'loaded' or 'refused' (a ReconError); anything else propagates and fails the example."""
    with tempfile.TemporaryDirectory() as folder:
        for n, data in enumerate(files):
            (Path(folder) / f"{n:04d}.dcm").write_bytes(data)
        signal.signal(signal.SIGALRM, _raise_hang)
        signal.alarm(timeout_s)
        try:
            load_ct(folder)
            return "loaded"
        except ReconError:
            return "refused"
        finally:
            signal.alarm(0)


def _raise_hang(signum, frame):
    raise Hang("load_ct ran past the time limit")


def fuzz(examples: int, timeout_s: int, randomise: bool, trace: Path | None = None) -> dict:
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    warnings.simplefilter("ignore")  # pydicom warns about every odd value; the outcome is what is checked
    logging.disable(logging.WARNING)
    inputs = seeds()
    counts = {"executions": 0, "loaded": 0, "refused": 0, "seeds": len(inputs)}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=not randomise,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(inputs) - 1), st.lists(st.tuples(MUTATIONS, st.integers(0, 63)), min_size=1,
                                                      max_size=4))
    def one(seed, mutations):
        files = inputs[seed]
        for mutate, target in mutations:
            files = mutate(files, target % len(files))
        if trace:
            trace.write_text(f"seed {seed}: {mutations}\n")
            for old in trace.parent.glob(f"{trace.name}.*.dcm"):
                old.unlink()
            for n, data in enumerate(files):
                (trace.parent / f"{trace.name}.{n:04d}.dcm").write_bytes(data)
        counts["executions"] += 1
        counts[load_or_refuse(files, timeout_s)] += 1

    one()
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--timeout", type=int, default=10, help="seconds one example may take")
    parser.add_argument("--random", action="store_true", help="new examples on every run (default: fixed)")
    parser.add_argument("--trace", type=Path, help="write each example here before running it (to replay a crash)")
    args = parser.parse_args(argv)
    print(json.dumps(fuzz(args.examples, args.timeout, args.random, args.trace)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
