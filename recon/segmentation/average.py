"""A weighted average of the weights of models fine-tuned from one start ("model soups": Wortsman M et al.,
ICML 2022): models that share a start lie in one basin, and their average often keeps what each learnt.
The models must have the same network, classes, spacing and intensity handling; the card records each
model's sha256, weight and how it was trained, so that the average can be made again."""

from __future__ import annotations

from pathlib import Path

from recon.errors import InputError
from recon.segmentation.model import build_network, load_model, save_model

SHARED_CARD_KEYS = ("network", "labels", "spacing_mm", "patch_voxels", "orientation", "intensity")


def average_models(models: list[str | Path], weights: list[float], output: str | Path) -> Path:
    """Write to ``output`` the model whose weights are ``weights`` (normalised to sum 1) times those of
    ``models``; its card is the first model's, with ``training`` telling how it was made and no accuracy."""
    if len(models) < 2 or len(weights) != len(models) or min(weights) <= 0:
        raise InputError("averaging needs two or more models and one positive weight for each")
    loaded = [load_model(name) for name in models]
    first = loaded[0].card
    for name, model in zip(models[1:], loaded[1:]):
        differing = [key for key in SHARED_CARD_KEYS if model.card.get(key) != first.get(key)]
        if differing:
            raise InputError(f"{name}: its {', '.join(differing)} differ from {models[0]}'s; only models of one "
                             "network and vocabulary (fine-tuned from one start) can be averaged")
    shares = [weight / sum(weights) for weight in weights]
    states = [model.network.state_dict() for model in loaded]
    averaged = {key: sum(share * state[key].double() for share, state in zip(shares, states)).to(value.dtype)
                if value.is_floating_point() else value for key, value in states[0].items()}
    network = build_network(first["network"], len(first["labels"]))
    network.load_state_dict(averaged)
    command = (f"recon average {' '.join(map(str, models))} --weights {' '.join(f'{w:g}' for w in weights)} "
               f"-o {output}")
    sources = [{"model": str(name), "weight": share, "sha256": model.card["sha256"],
                "training": model.card.get("training")} for name, share, model in zip(models, shares, loaded)]
    card = {key: value for key, value in first.items() if key not in ("accuracy", "sha256", "training")}
    card["training"] = {"command": command, "averaged": sources}
    return save_model(network, card, Path(output))
