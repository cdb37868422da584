"""A segmentation model on disk: ``model.safetensors`` (weights) and ``model.json`` (architecture, labels,
spacing, intensity handling, provenance, measured accuracy, sha256 of the weights). Weights load only from
safetensors whose hash matches; nothing is unpickled."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recon.errors import InputError
from recon.io.atomic import atomic_path
from recon.schemas import read_json

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = "bone3mm"
WEIGHTS_FILE, CARD_FILE = "model.safetensors", "model.json"


@dataclass(frozen=True)
class Model:
    network: torch.nn.Module
    card: dict

    @property
    def labels(self) -> list[str]:
        """Class names in output-channel order; channel 0 is background."""
        return self.card["labels"]

    @property
    def spacing_mm(self) -> float:
        return float(self.card["spacing_mm"])


def build_network(spec: dict, n_classes: int) -> torch.nn.Module:
    """The network that ``spec`` (model.json's ``network``) describes, from MONAI."""
    from monai.networks.nets import UNet

    if spec.get("name") != "UNet":
        raise InputError(f"unknown network {spec.get('name')!r}; recon builds MONAI's UNet")
    return UNet(spatial_dims=3, in_channels=1, out_channels=n_classes, channels=tuple(spec["channels"]),
                strides=tuple(spec["strides"]), num_res_units=int(spec["num_res_units"]))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_dir(name_or_path: str | Path | None) -> Path:
    """``None``: the shipped default; a folder path; or a model name under ``models/``."""
    candidate = Path(name_or_path) if name_or_path is not None else MODELS_DIR / DEFAULT_MODEL
    if not candidate.exists() and name_or_path is not None and "/" not in str(name_or_path):
        candidate = MODELS_DIR / str(name_or_path)
    if candidate.is_file():
        if candidate.suffix in (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"):
            raise InputError(f"{candidate}: recon loads models only from safetensors with a model.json beside "
                             "them; pickled files can run code when loaded and are refused")
        candidate = candidate.parent
    if not (candidate / CARD_FILE).is_file() or not (candidate / WEIGHTS_FILE).is_file():
        raise InputError(f"{candidate}: not a recon model (needs {WEIGHTS_FILE} and {CARD_FILE}); train one with "
                         "'recon train -o models/NAME' or name a shipped model")
    return candidate


def load_model(name_or_path: str | Path | None = None) -> Model:
    folder = model_dir(name_or_path)
    card = read_json(folder / CARD_FILE, "model card")
    weights = folder / WEIGHTS_FILE
    if sha256_of(weights) != card.get("sha256"):
        raise InputError(f"{weights}: its sha256 does not match model.json; the weights are damaged or were "
                         "replaced. Restore both files together")
    network = build_network(card["network"], len(card["labels"]))
    try:
        network.load_state_dict(load_file(weights))
    except Exception as err:  # safetensors parses without running code; any failure means a foreign file
        raise InputError(f"{weights}: not safetensors weights for the network model.json describes "
                         f"({type(err).__name__}); recon loads nothing else") from err
    network.eval()
    return Model(network, card)


def save_model(network: torch.nn.Module, card: dict, folder: Path) -> Path:
    """Write the weights, then the card with their sha256 (both atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_FILE) as temporary:
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(temporary))
    card = {**card, "sha256": sha256_of(folder / WEIGHTS_FILE)}
    with atomic_path(folder / CARD_FILE) as temporary:
        temporary.write_text(json.dumps(card, indent=2) + "\n")
    return folder
