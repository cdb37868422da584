"""recon: CT study in, surgical plan out, in one physical frame (DICOM LPS, millimetres)."""

from recon.errors import ReconError
from recon.evaluation import evaluate
from recon.geometry import Grid
from recon.io.labels import read_label_map
from recon.io.loading import load_ct
from recon.volume import LabelMap, Volume

__version__ = "0.1.0"
__all__ = ["Grid", "LabelMap", "ReconError", "Volume", "evaluate", "load_ct", "read_label_map"]
