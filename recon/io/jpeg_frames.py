"""The frame header of JPEG and JPEG-LS codestreams, checked against the DICOM header before a native decoder
sees them: GDCM aborts the whole process (an uncaught C++ exception) when the two disagree, for example a
512-column codestream in a file whose header says 65535 columns."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from recon.errors import CorruptFileError

JPEG_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                 "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
# start-of-frame markers: JPEG's SOF0-SOF15 without DHT (C4), JPG (C8) and DAC (CC), and JPEG-LS's SOF55 (F7)
FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
START_OF_IMAGE = b"\xff\xd8"


def check_jpeg_frames(dataset: Dataset, syntax: str, label: str) -> None:
    """Raise ``CorruptFileError`` unless every frame's codestream declares the header's rows, columns and
    samples per pixel."""
    if syntax not in JPEG_SYNTAXES:
        return
    expected = (int(dataset.Rows), int(dataset.Columns), int(dataset.get("SamplesPerPixel", 1) or 1))
    n_frames = int(dataset.get("NumberOfFrames", 1) or 1)
    try:
        frames = list(generate_frames(dataset.PixelData, number_of_frames=n_frames))
    except Exception as err:  # pydicom's encapsulation parser raises several types on damaged items
        raise CorruptFileError(f"{label}: compressed pixel data is not valid encapsulated frames "
                               f"({type(err).__name__}); the file is damaged: export the series again") from err
    for number, codestream in enumerate(frames, start=1):
        found = frame_header(codestream)
        if found != expected:
            declared = "no frame header" if found is None else "{}x{} with {} sample(s)".format(*found)
            raise CorruptFileError(
                f"{label}: frame {number} is compressed as {declared}, the header says {expected[0]}x{expected[1]} "
                f"with {expected[2]}; the file is damaged: export the series again")


def frame_header(codestream: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from the first start-of-frame segment, or None if there is none."""
    if not codestream.startswith(START_OF_IMAGE):
        return None
    at = 2
    while at + 4 <= len(codestream):
        if codestream[at] != 0xFF:
            return None
        marker = codestream[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in FRAME_MARKERS:
            if at + 10 > len(codestream):
                return None
            rows = int.from_bytes(codestream[at + 5:at + 7], "big")
            columns = int.from_bytes(codestream[at + 7:at + 9], "big")
            return rows, columns, codestream[at + 9]
        at += 2 + int.from_bytes(codestream[at + 2:at + 4], "big")
    return None
