"""recon: CT study in, surgical plan out, in one physical frame (DICOM LPS, millimetres).

The public functions are imported on first use (PEP 562), so ``recon --help`` does not pay for them."""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "Grid": "recon.geometry",
    "LabelMap": "recon.volume",
    "Volume": "recon.volume",
    "ReconError": "recon.errors",
    "load_ct": "recon.io.loading",
    "read_label_map": "recon.io.labels",
    "evaluate": "recon.evaluation",
    "mesh_labels": "recon.mesh",
    "segment": "recon.segmentation.infer",
    "plan_spine": "recon.plan.spine",
    "plan_hip": "recon.plan.hip",
    "run_study": "recon.run",
    "find_cases": "recon.batch",
    "run_batch": "recon.batch",
}
__all__ = ["Grid", "LabelMap", "ReconError", "Volume", "evaluate", "find_cases", "load_ct", "mesh_labels", "plan_hip",
           "plan_spine", "read_label_map", "run_batch", "run_study", "segment"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'recon' has no attribute {name!r}")
    return getattr(import_module(_PUBLIC[name]), name)
