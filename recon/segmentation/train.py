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
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy import ndimage

from recon import __version__
from recon.anatomy import BONES, LABEL_IDS, OTHER_BONE, is_vertebra
from recon.errors import InputError
from recon.io.atomic import atomic_path
from recon.phantom import make_phantom
from recon.phantom.render import GEOMETRIC_SHARE
from recon.schemas import read_json
from recon.segmentation.datasets import load_user_dataset
from recon.segmentation.model import CARD_FILE, build_network, load_model, model_dir, save_model
from recon.segmentation.window import normalise, predict_classes

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = 1_000_000
VALIDATION_SEED_BASE = 900_000_000  # never reached by training seeds
CHECKPOINT_WEIGHTS, CHECKPOINT_STATE, CONFIG_FILE = "checkpoint.safetensors", "checkpoint.json", "config.json"
WARMUP_STEPS = 100
PHANTOM_PROBABILITIES = ("hip_replacement_probability", "hip_fixation_probability", "auricular_sacrum_probability",
                         "facet_joint_probability", "faint_sacral_apex_probability", "alar_void_probability",
                         "sacral_canal_probability")
PHANTOM_RANGES = ("hip_joint_space_mm", "iliac_crest_raise_mm", "posterior_ilium_raise_mm")  # (low, high) or absent
LABELS = ["background", *BONES]


def labels_for(config: dict) -> list[str]:
    """The classes a run learns: recon's bones and, where the configuration asks, other bone (ribs, vertebrae
    above T11) as a class apart from background, which recon never outputs."""
    return LABELS + [OTHER_BONE] * bool(config.get("other_bone_class"))


def default_config() -> dict:
    return json.loads(resources.files("recon.data").joinpath("training_default.json").read_text())


def train(out: str | Path, *, steps: int | None = None, seed: int | None = None, resume: bool = False,
          device: str = "cpu", data: str | Path | None = None, config_path: str | Path | None = None,
          init: str | Path | None = None, workers: int = 0) -> Path:
    """Train (or resume) the model in ``out``; returns the folder holding model.safetensors and model.json.
    ``init`` names a trained model to start from (fine-tuning) instead of random weights. ``workers``
    processes make the batches beside the training one (0: it makes them itself); the batches, and so the
    model, are the same either way."""
    out = Path(out)
    config = _configuration(out, resume, steps, seed, data, config_path, init)
    torch.manual_seed(config["seed"])
    network = build_network(config["network"], len(labels_for(config)))
    if config.get("initial_model") and not resume:
        network.load_state_dict(_initial_weights(config))
    network = network.to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config["learning_rate"],
                                  weight_decay=config["weight_decay"])
    state = _load_checkpoint(out, network, optimiser) if resume else {"step": 0, "seconds": 0.0, "history": []}
    user_cases = load_user_dataset(Path(config["data"]), config) if config.get("data") else []
    validation = [_validation_phantom(config, n) for n in range(config["validation_phantoms"])]
    criterion = dice_ce_loss()
    started, first_step = time.perf_counter() - state["seconds"], state["step"]
    for step, (images, targets) in enumerate(_batches(config, first_step, user_cases, workers), first_step):
        _set_learning_rate(optimiser, config, step)
        loss = training_step(network, optimiser, criterion, images.to(device), targets.to(device), config)
        state["step"], state["seconds"] = step + 1, time.perf_counter() - started
        _progress(state, config, loss)
        if (step + 1) % config["validate_every"] == 0 or step + 1 == config["steps"]:
            state["history"].append({"step": step + 1, "dice": validate(network, validation, config, device)})
            print(f"validation at step {step + 1}: {_dice_line(state['history'][-1]['dice'])}", flush=True)
        if (step + 1) % config["checkpoint_every"] == 0 or step + 1 == config["steps"]:
            _save_checkpoint(out, network, optimiser, state)
    return save_model(network.cpu(), _card(config, state, device, workers), out)


def _configuration(out: Path, resume: bool, steps, seed, data, config_path, init) -> dict:
    stored = out / CONFIG_FILE
    if resume:
        if not (out / CHECKPOINT_STATE).is_file():
            raise InputError(f"{out}: nothing to resume (no {CHECKPOINT_STATE}); start without --resume")
        config = read_json(stored, "training configuration")
    else:
        if (out / CHECKPOINT_STATE).exists():
            raise InputError(f"{out}: holds a training run already; use --resume, or another output folder")
        config = read_json(Path(config_path), "training configuration") if config_path else default_config()
        config["data"] = str(Path(data).resolve()) if data else None
        if seed is not None:
            config["seed"] = int(seed)
        if init is not None:
            config["initial_model"] = _provenance(init)
    if steps is not None:
        config["steps"] = int(steps)
    out.mkdir(parents=True, exist_ok=True)
    config["command"] = " ".join(["recon", *sys.argv[1:]]) if Path(sys.argv[0]).name == "recon" else config.get(
        "command", "recon.segmentation.train.train")
    with atomic_path(stored) as temporary:
        temporary.write_text(json.dumps(config, indent=2) + "\n")
    return config


def _provenance(init: str | Path) -> dict:
    """What a fine-tuning run starts from: the model, its weights' sha256 and how it was trained."""
    folder = model_dir(init)
    card = read_json(folder / CARD_FILE, "model card")
    training = card.get("training", {})
    return {"model": str(folder), "sha256": card.get("sha256"), "command": training.get("command"),
            "steps": training.get("steps"), "seconds": training.get("seconds"),
            "machine": training.get("machine")}


def _initial_weights(config: dict) -> dict:
    """The starting model's weights, refused unless it learns the same classes with the same network."""
    start = load_model(config["initial_model"]["model"])
    if start.labels != labels_for(config) or start.card["network"] != config["network"]:
        raise InputError(f"{config['initial_model']['model']}: its labels or network differ from this "
                         "configuration's; fine-tune from a model trained with the same ones")
    return start.network.state_dict()


def training_step(network, optimiser, criterion, images: torch.Tensor, targets: torch.Tensor,
                  config: dict) -> float:
    """One step: forward, loss, backward, update; returns the loss. With ``"autocast": "bfloat16"`` in the
    configuration the network's convolutions run in bfloat16 (faster on a CPU with AVX-512 BF16: make bench)
    while its weights, their updates and the loss stay in float32."""
    network.train()
    dtype = config.get("autocast")
    with torch.autocast(images.device.type, dtype=getattr(torch, dtype or "bfloat16"), enabled=dtype is not None):
        prediction = network(images)
    loss = criterion(prediction.float(), targets)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def dice_ce_loss():
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


class _PhantomBatches(torch.utils.data.Dataset):
    """Item ``i``: the batches of the run's ``i``-th group of steps from ``first_step`` on, a group being the
    steps whose crops come from one phantom, so that whichever process makes a group makes its phantom once."""

    def __init__(self, config: dict, first_step: int, user_cases: list):
        self.config, self.user_cases = config, user_cases
        self.group = math.lcm(config["batch_size"], config["crops_per_phantom"]) // config["batch_size"]
        self.first_group = first_step // self.group
        self.first_step = first_step

    def __len__(self) -> int:
        return max(0, -(-self.config["steps"] // self.group) - self.first_group)

    def __getitem__(self, item: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        start = (self.first_group + item) * self.group
        steps = range(max(start, self.first_step), min(start + self.group, self.config["steps"]))
        return [_batch(self.config, step, self.user_cases) for step in steps]


def _batches(config: dict, first_step: int, user_cases: list, workers: int):
    """The run's batches from ``first_step`` on, in order, made by ``workers`` processes (0: by this one)."""
    loader = torch.utils.data.DataLoader(_PhantomBatches(config, first_step, user_cases), batch_size=None,
                                         num_workers=workers, prefetch_factor=4 if workers else None)
    for group in loader:
        yield from group


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
    key = (json.dumps(config, sort_keys=True), number)  # another configuration draws other phantoms
    if key not in _PHANTOM_CACHE:
        _PHANTOM_CACHE.clear()
        spacing = (config["spacing_mm"],) * 3
        phantom = make_phantom(TRAIN_SEED_BASE * (config["seed"] + 1) + number,
                               shape=tuple(config["phantom_shape"]), spacing_mm=spacing,
                               label_other_bone=bool(config.get("other_bone_class")),
                               **{key: float(config.get(key, 0.0)) for key in PHANTOM_PROBABILITIES},
                               **{key: config.get(key) for key in PHANTOM_RANGES},
                               labelled_share=labelled_share_of(config))
        _PHANTOM_CACHE[key] = (phantom.ct.hu.astype(np.float32), phantom.labels.labels.astype(np.uint8))
    return _PHANTOM_CACHE[key]


def labelled_share_of(config: dict) -> float:
    """How much of a voxel must lie inside a phantom's bone for the run to label it (``make_phantom``)."""
    return float(config.get("labelled_share", GEOMETRIC_SHARE))


def training_crop(hu: np.ndarray, labels: np.ndarray, config: dict, rng: np.random.Generator):
    """A random patch (which may reach past the scan into air, as at a cut-off field of view), with the
    intensity, density, texture, noise, blur and resolution randomised, and at times a truncated
    reconstruction circle. No left-right flip: left and right are labels."""
    augment, size = config["augment"], np.asarray(config["patch_voxels"])
    patch = size
    if "scale" in augment and rng.uniform() < augment.get("scale_probability", 1.0):
        # a larger or smaller window zoomed to the patch: bigger or smaller patients than the phantom draws
        patch = np.maximum(8, np.rint(size * rng.uniform(*augment["scale"]) * rng.uniform(0.95, 1.05, 3))).astype(int)
    margin = augment["air_margin_voxels"]
    low = -margin - np.minimum(0, np.asarray(hu.shape) - patch)
    high = np.asarray(hu.shape) - patch + margin
    start = np.array([int(rng.integers(lo, max(lo, hi) + 1)) for lo, hi in zip(low, high)])
    image = _window(hu, start, patch, fill=-1024.0)
    target = _window(labels, start, patch, fill=0)
    if np.any(patch != size):
        factors = size / patch
        image, target = zoom_separably(image, factors, order=1), zoom_separably(target, factors, order=0)
        image, target = _fit(image, size, -1024.0), _fit(target, size, 0)
    augment = _low_density(augment, rng)
    if "bone_offset_hu" in augment:
        image = _marrow_variation(image, target, augment, rng)
    image = _augment_intensity(image, augment, rng)
    target = _truncate_field_of_view(image, target, augment, rng)
    image, target = _tight_crop(image, target, augment, rng, spine_classes(config))
    return normalise(image, config["intensity"]), target.astype(np.int64)


def _fit(array: np.ndarray, size: np.ndarray, fill) -> np.ndarray:
    """``array`` cut or padded (at the far end) to exactly ``size`` (a zoom may miss it by a voxel)."""
    return _window(array, np.zeros(3, int), size, fill)


def _window(array: np.ndarray, start: np.ndarray, size: np.ndarray, fill) -> np.ndarray:
    out = np.full(tuple(size), fill, dtype=array.dtype)
    source = tuple(slice(max(0, s), min(n, s + w)) for s, w, n in zip(start, size, array.shape))
    target = tuple(slice(src.start - s, src.stop - s) for src, s in zip(source, start))
    out[target] = array[source]
    return out


def _low_density(augment: dict, rng: np.random.Generator) -> dict:
    """With ``low_density_probability``, an osteoporotic skeleton: a faint cortex (``bone_scale`` drawn from
    ``low_density_bone_scale``) and fatty marrow in every bone (``bone_offset_hu`` from ``low_density_offset_hu``)
    together, as in an elderly patient, where independent draws of the two rarely pair them. A configuration
    without the key draws nothing, so its random stream stays as it was."""
    if "low_density_probability" not in augment or rng.uniform() >= augment["low_density_probability"]:
        return augment
    return {**augment, "bone_scale": augment["low_density_bone_scale"],
            "bone_offset_hu": augment["low_density_offset_hu"]}


def _marrow_variation(hu: np.ndarray, target: np.ndarray, augment: dict, rng: np.random.Generator) -> np.ndarray:
    """Each bone its own marrow, as SynthSeg draws each label's intensity on its own: a random offset per
    bone (fatty marrow darkens a whole sacrum, sclerosis brightens a vertebra) plus band-limited
    heterogeneity inside bone (islands of fat and red marrow). The change is blurred across the label's edge
    so that no intensity step marks where a label ends."""
    present = np.unique(target)
    present = present[present > 0]
    if present.size == 0:
        return hu
    offsets = np.zeros(int(present.max()) + 1, np.float32)
    offsets[present] = rng.uniform(*augment["bone_offset_hu"], present.size)
    islands = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32),
                                      rng.uniform(*augment["bone_grain_voxels"]))
    islands *= np.float32(rng.uniform(*augment["bone_heterogeneity_hu"]) / max(float(islands.std()), 1e-6))
    change = np.where(target > 0, offsets[target] + islands, 0).astype(np.float32)
    return hu + ndimage.gaussian_filter(change, 1.0)


def _augment_intensity(hu: np.ndarray, augment: dict, rng: np.random.Generator) -> np.ndarray:
    """Scanner and patient variation, SynthSeg-like where the configuration asks for it (keys absent from an
    older configuration switch that part off): bone density, at times fading from place to place, a random
    monotone HU curve, band-limited texture in bone and soft tissue, a smooth bias field, blur, coarser
    resolution, and noise."""
    threshold = augment["bone_threshold_hu"]
    bone = hu > threshold
    hu = hu.copy()
    scale = rng.uniform(*augment["bone_scale"])
    if "bone_fade_probability" in augment and rng.uniform() < augment["bone_fade_probability"]:
        scale = scale * _bone_fade(hu.shape, augment, rng)[bone]
    hu[bone] = threshold + (hu[bone] - threshold) * scale
    if "curve_jitter_hu" in augment and rng.uniform() < augment.get("curve_probability", 1.0):
        hu = _random_curve(hu, augment["curve_jitter_hu"], rng)
    hu = hu * rng.uniform(*augment["hu_scale"]) + rng.uniform(*augment["hu_shift"])
    if "texture_bone" in augment:
        hu = _texture(hu, augment, rng)
    if "bias_hu" in augment:
        hu = hu + _smooth_field(hu.shape, augment.get("bias_cells", 4), rng) * np.float32(
            rng.uniform(0, augment["bias_hu"]))
    sigma = [rng.uniform(*augment["blur_voxels"])] * 2 + [rng.uniform(*augment["slice_blur_voxels"])]
    hu = ndimage.gaussian_filter(hu, sigma)
    if "downsample" in augment and rng.uniform() < augment.get("downsample_probability", 0.0):
        hu = _degrade_resolution(hu, augment["downsample"], rng)
    return hu + rng.normal(0.0, rng.uniform(*augment["noise_hu"]), hu.shape).astype(np.float32)


def _bone_fade(shape, augment: dict, rng: np.random.Generator) -> np.ndarray:
    """A smooth factor between a faintest share drawn from ``bone_fade_min`` and 1: bone that fades over a few
    centimetres while the bone beside it stays bright, as a lower sacrum and coccyx, or the thin fossa of an
    iliac wing, show at 3 mm next to a dense S1 or acetabulum."""
    faintest = rng.uniform(*augment["bone_fade_min"])
    return 1.0 - (1.0 - faintest) * (_smooth_field(shape, augment["bone_fade_cells"], rng) + 1.0) / 2.0


def _random_curve(hu: np.ndarray, jitter: dict, rng: np.random.Generator) -> np.ndarray:
    """A random, monotone, piecewise-linear HU transfer curve: each control point (HU) moves by up to its
    jitter, then the points are sorted so that the order of tissues never changes, only their contrast."""
    points = np.array([float(k) for k in jitter])
    moved = np.sort(points + np.array([rng.uniform(-1, 1) * float(v) for v in jitter.values()]))
    slope_low, slope_high = 1.0, float(moved[-1] - moved[-2]) / max(1.0, float(points[-1] - points[-2]))
    out = np.interp(hu, points, moved).astype(np.float32)
    out[hu < points[0]] = (moved[0] + (hu[hu < points[0]] - points[0]) * slope_low)
    out[hu > points[-1]] = (moved[-1] + (hu[hu > points[-1]] - points[-1]) * slope_high)
    return out


def _smooth_field(shape, cells: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [-1, 1]: linear interpolation of ``cells``^3 random values."""
    coarse = rng.uniform(-1, 1, (cells,) * 3).astype(np.float32)
    return zoom_separably(coarse, [n / cells for n in shape], order=1)[: shape[0], : shape[1], : shape[2]]


def _texture(hu: np.ndarray, augment: dict, rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise: multiplicative inside bone (trabecular pattern), additive in soft tissue (fat
    strands, mottled organs); its grain and strength drawn per sample."""
    grain = rng.uniform(*augment["texture_grain_voxels"])
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), grain)
    noise /= max(float(noise.std()), 1e-6)
    threshold = augment["bone_threshold_hu"]
    weight = np.clip((hu - threshold) / 100.0, 0.0, 1.0)
    bone_part = (hu - threshold) * np.float32(rng.uniform(*augment["texture_bone"])) * noise * weight
    soft = (hu > -200) & (hu < threshold)
    soft_part = np.float32(rng.uniform(*augment["texture_soft_hu"])) * noise * soft
    return hu + bone_part + soft_part


def _degrade_resolution(hu: np.ndarray, factors: dict, rng: np.random.Generator) -> np.ndarray:
    """Down to a coarser grid and back (linear), as a thick-slice or low-dose reconstruction looks."""
    zoom = [1 / rng.uniform(1, factors["in_plane"])] * 2 + [1 / rng.uniform(1, factors["slice"])]
    small = zoom_separably(hu, zoom, order=1)
    back = zoom_separably(small, [n / m for n, m in zip(hu.shape, small.shape)], order=1)
    return back[: hu.shape[0], : hu.shape[1], : hu.shape[2]]


def zoom_separably(array: np.ndarray, factors, order: int) -> np.ndarray:
    """``ndimage.zoom(array, factors, order=order, grid_mode=True, mode="nearest")`` for ``order`` 0 or 1, one
    axis at a time: both interpolations are separable, so along each axis the zoom of the voxel positions
    picks the voxels (0) or the two voxels and their weights (1), several times faster on a training patch
    than interpolating every voxel from its eight neighbours (``make bench``)."""
    for axis, factor in enumerate(factors):
        n = array.shape[axis]
        position = ndimage.zoom(np.arange(n, dtype=float), factor, order=order, grid_mode=True, mode="nearest")
        low = np.floor(position).astype(int)
        if order == 0:
            array = np.take(array, low, axis=axis)
            continue
        share = (position - low).astype(array.dtype).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
        array = (np.take(array, low, axis=axis) * (1 - share)
                 + np.take(array, np.minimum(low + 1, n - 1), axis=axis) * share)
    return array


def _truncate_field_of_view(image: np.ndarray, target: np.ndarray, augment: dict, rng: np.random.Generator):
    """At times, blank everything outside an axial circle (a reconstruction field of view smaller than the
    body), labels included: bone that is not in the image is not to be found."""
    if rng.uniform() >= augment.get("truncate_probability", 0.0):
        return target
    n = np.asarray(image.shape)
    center = rng.uniform(0.2, 0.8, 2) * n[:2]
    radius = rng.uniform(*augment["truncate_radius_voxels"])
    i, j = np.ogrid[: n[0], : n[1]]
    outside = (i - center[0]) ** 2 + (j - center[1]) ** 2 > radius**2
    image[outside] = -1024.0
    target = target.copy()
    target[outside] = 0
    return target


def _tight_crop(image: np.ndarray, target: np.ndarray, augment: dict, rng: np.random.Generator,
                spine: list[int]):
    """At times, only a box of the patch holds the scan and the rest repeats the box's edge voxels, labels too:
    what sliding-window inference shows the network of a scan smaller than a window (a crop round one vertebra,
    a short lumbar series), since it pads such a scan by repeating its edges (``window.predict_scores``). The
    box is a spine protocol's field of view (``_spine_box``) with ``spine_crop_probability``, or else a random
    one (``tight_crop_min_voxels`` to the full patch along each axis) with ``tight_crop_probability``."""
    draw, on_spine = rng.uniform(), augment.get("spine_crop_probability", 0.0)
    n = np.asarray(image.shape)
    if draw < on_spine and (vertebrae := np.isin(target, spine)).any():
        start, size = _spine_box(vertebrae, augment, rng)
    elif on_spine <= draw < on_spine + augment.get("tight_crop_probability", 0.0):
        size = np.array([rng.integers(min(augment["tight_crop_min_voxels"], m), m + 1) for m in n])
        start = np.array([rng.integers(0, m - w + 1) for m, w in zip(n, size)])
    else:
        return image, target
    index = np.ix_(*[np.clip(np.arange(m), s, s + w - 1) for m, s, w in zip(n, start, size)])
    return image[index], target[index]


def _spine_box(spine: np.ndarray, augment: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A box centred on the vertebrae in the patch (give or take ``spine_crop_jitter_voxels``), as wide and deep
    as ``spine_crop_across_voxels`` draws and ``tight_crop_min_voxels`` to the full patch tall, anywhere along the
    spine: a lumbar series or a crop round a few vertebrae, with or without the sacrum or the ribs in view."""
    n = np.asarray(spine.shape)
    across = rng.uniform(*augment["spine_crop_across_voxels"]) * rng.uniform(0.9, 1.1, 2)
    size = np.minimum(np.append(across, rng.integers(min(augment["tight_crop_min_voxels"], n[2]), n[2] + 1)),
                      n).round().astype(int)
    centre = np.array([a.mean() for a in np.nonzero(spine)[:2]]) + rng.normal(
        0.0, augment["spine_crop_jitter_voxels"], 2)
    start = np.append(np.round(centre - size[:2] / 2), rng.integers(0, n[2] - size[2] + 1))
    return np.clip(start, 0, n - size).astype(int), size


def spine_classes(config: dict) -> list[int]:
    """The classes of a run that are vertebrae."""
    return [c for c, name in enumerate(labels_for(config)) if is_vertebra(name)]


def _validation_phantom(config: dict, number: int) -> tuple[np.ndarray, np.ndarray]:
    phantom = make_phantom(VALIDATION_SEED_BASE + number, shape=tuple(config["phantom_shape"]),
                           spacing_mm=(config["spacing_mm"],) * 3, labelled_share=labelled_share_of(config))
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


def code_revision() -> dict:
    """recon's version and, run from a git checkout, its commit and whether tracked files differ from it: the
    phantoms and the augmentation are code, so a configuration and a seed reproduce a model only with the code
    that trained it."""
    revision = {"recon": __version__}
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return revision
    try:
        commit, changes = (subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, text=True,
                                          timeout=30, check=True).stdout.strip()
                           for arguments in (["rev-parse", "HEAD"], ["status", "--porcelain", "--untracked-files=no"]))
    except (OSError, subprocess.SubprocessError):
        return revision
    return revision | {"git_commit": commit, "uncommitted_changes": bool(changes)}


def _card(config: dict, state: dict, device: str, workers: int) -> dict:
    return {
        "name": "recon bone segmentation",
        "network": config["network"],
        "labels": labels_for(config),
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
                        "torch_threads": torch.get_num_threads(), "data_workers": workers,
                        "torch": torch.__version__},
            "code": code_revision(),
        },
        "accuracy": {"held_out_phantoms": state["history"][-1] if state["history"] else None},
    }
