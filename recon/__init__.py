"""recon: CT study in, surgical plan out, in one physical frame (DICOM LPS, millimetres)."""

from recon.errors import ReconError
from recon.geometry import Grid
from recon.io.loading import load_ct
from recon.volume import LabelMap, Volume

__version__ = "0.1.0"
__all__ = ["Grid", "LabelMap", "ReconError", "Volume", "load_ct"]
