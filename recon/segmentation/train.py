"""``recon train``: a bone segmentation network trained on phantoms drawn on the fly (and, optionally, on a
user dataset in nnU-Net v2 raw layout), validated on held-out phantoms, checkpointed and resumable.

Everything the run depends on is in its configuration (a JSON file, stored beside the model) and its seed:
phantom ``n`` of the run is ``make_phantom(TRAIN_SEED_BASE * (seed + 1) + n)`` and the augmentation of sample
``n`` draws from ``default_rng((seed, n))``, so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy import ndimage

from recon.anatomy import BONES, LABEL_IDS
from recon.errors import InputError
from recon.io.atomic import atomic_path
from recon.phantom import make_phantom
from recon.segmentation.datasets import load_user_dataset
from recon.segmentation.model import build_network, save_model
from recon.segmentation.window import normalise, predict_classes

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = 1_000_000
VALIDATION_SEED_BASE = 900_000_000  # never reached by training seeds
CHECKPOINT_WEIGHTS, CHECKPOINT_STATE, CONFIG_FILE = "checkpoint.safetensors", "checkpoint.json", "config.json"
WARMUP_STEPS = 100
LABELS = ["background", *BONES]


def default_config() -> dict:
    return json.loads(resources.files("recon.data").joinpath("training_default.json").read_text())


def train(out: str | Path, *, steps: int | None = None, seed: int | None = None, resume: bool = False,
          device: str = "cpu", data: str | Path | None = None, config_path: str | Path | None = None) -> Path:
    """Train (or resume) the model in ``out``; returns the folder holding model.safetensors and model.json."""
    out = Path(out)
    config = _configuration(out, resume, steps, seed, data, config_path)
    torch.manual_seed(config["seed"])
    network = build_network(config["network"], len(LABELS)).to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config["learning_rate"],
                                  weight_decay=config["weight_decay"])
    state = _load_checkpoint(out, network, optimiser) if resume else {"step": 0, "seconds": 0.0, "history": []}
    user_cases = load_user_dataset(Path(config["data"]), config) if config.get("data") else []
    validation = [_validation_phantom(config, n) for n in range(config["validation_phantoms"])]
    loss_function = _loss()
    started, first_step = time.perf_counter() - state["seconds"], state["step"]
    for step in range(first_step, config["steps"]):
        images, targets = _batch(config, step, user_cases)
        _set_learning_rate(optimiser, config, step)
        network.train()
        loss = loss_function(network(images.to(device)), targets.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        state["step"], state["seconds"] = step + 1, time.perf_counter() - started
        _progress(state, config, float(loss.detach()))
        if (step + 1) % config["validate_every"] == 0 or step + 1 == config["steps"]:
            state["history"].append({"step": step + 1, "dice": validate(network, validation, config, device)})
            print(f"validation at step {step + 1}: {_dice_line(state['history'][-1]['dice'])}", flush=True)
        if (step + 1) % config["checkpoint_every"] == 0 or step + 1 == config["steps"]:
            _save_checkpoint(out, network, optimiser, state)
    return save_model(network.cpu(), _card(config, state, device), out)


def _configuration(out: Path, resume: bool, steps, seed, data, config_path) -> dict:
    stored = out / CONFIG_FILE
    if resume:
        if not (out / CHECKPOINT_STATE).is_file():
            raise InputError(f"{out}: nothing to resume (no {CHECKPOINT_STATE}); start without --resume")
        config = json.loads(stored.read_text())
    else:
        if (out / CHECKPOINT_STATE).exists():
            raise InputError(f"{out}: holds a training run already; use --resume, or another output folder")
        config = json.loads(Path(config_path).read_text()) if config_path else default_config()
        config["data"] = str(Path(data).resolve()) if data else None
        if seed is not None:
            config["seed"] = int(seed)
    if steps is not None:
        config["steps"] = int(steps)
    out.mkdir(parents=True, exist_ok=True)
    config["command"] = " ".join(["recon", *sys.argv[1:]]) if Path(sys.argv[0]).name == "recon" else config.get(
        "command", "recon.segmentation.train.train")
    with atomic_path(stored) as temporary:
        temporary.write_text(json.dumps(config, indent=2) + "\n")
    return config


def _loss():
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)


def _set_learning_rate(optimiser, config: dict, step: int) -> None:
    """Linear warm-up, then cosine decay to zero: a function of the step alone, so resuming is exact."""
    if step < WARMUP_STEPS:
        factor = (step + 1) / WARMUP_STEPS
    else:
        factor = 0.5 * (1 + math.cos(math.pi * (step - WARMUP_STEPS) / max(1, config["steps"] - WARMUP_STEPS)))
    for group in optimiser.param_groups:
        group["lr"] = config["learning_rate"] * factor


def _batch(config: dict, step: int, user_cases: list) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = [], []
    for item in range(config["batch_size"]):
        index = step * config["batch_size"] + item
        rng = np.random.default_rng((config["seed"], index))
        if user_cases and rng.uniform() < 0.5:
            hu, labels = user_cases[int(rng.integers(len(user_cases)))]
        else:
            hu, labels = phantom_sample(config, index // config["crops_per_phantom"])
        image, target = training_crop(hu, labels, config, rng)
        images.append(image)
        targets.append(target)
    return torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(targets)[:, None])


_PHANTOM_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def phantom_sample(config: dict, number: int) -> tuple[np.ndarray, np.ndarray]:
    """Phantom ``number`` of this run at the model's spacing: (HU float32, class ids uint8)."""
    key = (config["seed"], number)
    if key not in _PHANTOM_CACHE:
        _PHANTOM_CACHE.clear()
        spacing = (config["spacing_mm"],) * 3
        phantom = make_phantom(TRAIN_SEED_BASE * (config["seed"] + 1) + number,
                               shape=tuple(config["phantom_shape"]), spacing_mm=spacing)
        _PHANTOM_CACHE[key] = (phantom.ct.hu.astype(np.float32), phantom.labels.labels.astype(np.uint8))
    return _PHANTOM_CACHE[key]


def training_crop(hu: np.ndarray, labels: np.ndarray, config: dict, rng: np.random.Generator):
    """A random patch (which may reach past the scan into air, as at a cut-off field of view), with the
    intensity, density, noise and blur randomised. No left-right flip: left and right are labels."""
    augment, patch = config["augment"], np.asarray(config["patch_voxels"])
    margin = augment["air_margin_voxels"]
    low = -margin - np.minimum(0, np.asarray(hu.shape) - patch)
    high = np.asarray(hu.shape) - patch + margin
    start = np.array([int(rng.integers(lo, max(lo, hi) + 1)) for lo, hi in zip(low, high)])
    image = _window(hu, start, patch, fill=-1024.0)
    target = _window(labels, start, patch, fill=0)
    image = _augment_intensity(image, augment, rng)
    return normalise(image, config["intensity"]), target.astype(np.int64)


def _window(array: np.ndarray, start: np.ndarray, size: np.ndarray, fill) -> np.ndarray:
    out = np.full(tuple(size), fill, dtype=array.dtype)
    source = tuple(slice(max(0, s), min(n, s + w)) for s, w, n in zip(start, size, array.shape))
    target = tuple(slice(src.start - s, src.stop - s) for src, s in zip(source, start))
    out[target] = array[source]
    return out


def _augment_intensity(hu: np.ndarray, augment: dict, rng: np.random.Generator) -> np.ndarray:
    threshold = augment["bone_threshold_hu"]
    bone = hu > threshold
    hu = hu.copy()
    hu[bone] = threshold + (hu[bone] - threshold) * rng.uniform(*augment["bone_scale"])
    hu = hu * rng.uniform(*augment["hu_scale"]) + rng.uniform(*augment["hu_shift"])
    sigma = [rng.uniform(*augment["blur_voxels"])] * 2 + [rng.uniform(*augment["slice_blur_voxels"])]
    hu = ndimage.gaussian_filter(hu, sigma)
    return hu + rng.normal(0.0, rng.uniform(*augment["noise_hu"]), hu.shape).astype(np.float32)


def _validation_phantom(config: dict, number: int) -> tuple[np.ndarray, np.ndarray]:
    phantom = make_phantom(VALIDATION_SEED_BASE + number, shape=tuple(config["phantom_shape"]),
                           spacing_mm=(config["spacing_mm"],) * 3)
    return phantom.ct.hu.astype(np.float32), phantom.labels.labels.astype(np.uint8)


def validate(network, cases, config: dict, device: str) -> dict[str, float]:
    """Mean Dice per bone over held-out phantoms (seeds never used in training), at the model's spacing."""
    scores: dict[str, list[float]] = {name: [] for name in BONES}
    network.eval()
    for hu, labels in cases:
        predicted = predict_classes(network, normalise(hu, config["intensity"]), config["patch_voxels"], device)
        for name in BONES:
            truth, guess = labels == LABEL_IDS[name], predicted == LABEL_IDS[name]
            if truth.any():
                scores[name].append(2 * np.count_nonzero(truth & guess) / (truth.sum() + guess.sum()))
    return {name: float(np.mean(values)) for name, values in scores.items() if values}


def _dice_line(dice: dict[str, float]) -> str:
    return ", ".join(f"{name.removeprefix('vertebrae_')} {value:.3f}" for name, value in dice.items())


def _progress(state: dict, config: dict, loss: float) -> None:
    step = state["step"]
    if step % 10 and step != config["steps"]:
        return
    rate = state["seconds"] / max(1, step)
    left = (config["steps"] - step) * rate
    print(f"step {step}/{config['steps']}  loss {loss:.4f}  {rate:.2f} s/step  about {left / 60:.0f} min left",
          flush=True)


def _save_checkpoint(out: Path, network, optimiser, state: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    optimiser_state = optimiser.state_dict()
    for index, values in optimiser_state["state"].items():
        for name, value in values.items():
            tensors[f"optimiser.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    with atomic_path(out / CHECKPOINT_WEIGHTS) as temporary:
        save_file(tensors, str(temporary))
    record = {**state, "param_groups": optimiser_state["param_groups"]}
    with atomic_path(out / CHECKPOINT_STATE) as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n")


def _load_checkpoint(out: Path, network, optimiser) -> dict:
    tensors = load_file(out / CHECKPOINT_WEIGHTS)
    record = json.loads((out / CHECKPOINT_STATE).read_text())
    network.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimiser."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimiser.load_state_dict({"state": state, "param_groups": record.pop("param_groups")})
    print(f"resumed at step {record['step']}", flush=True)
    return record


def _card(config: dict, state: dict, device: str) -> dict:
    return {
        "name": "recon bone segmentation",
        "network": config["network"],
        "labels": LABELS,
        "spacing_mm": config["spacing_mm"],
        "patch_voxels": config["patch_voxels"],
        "orientation": "resampled onto an axis-aligned LPS grid (identity direction) before inference",
        "intensity": {**config["intensity"], "handling": "HU clipped to clip_hu, divided by scale_hu"},
        "training": {
            "command": config["command"], "seed": config["seed"], "steps": config["steps"],
            "configuration": config, "data": "recon.phantom, drawn on the fly" + (
                f", and the nnU-Net dataset {Path(config['data']).name}" if config.get("data") else ""),
            "seconds": round(state["seconds"], 1),
            "machine": {"device": device, "platform": platform.platform(), "processor": platform.processor(),
                        "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        },
        "accuracy": {"held_out_phantoms": state["history"][-1] if state["history"] else None},
    }
