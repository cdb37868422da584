"""The network applied to a whole image: intensity normalisation and sliding-window inference, on the image
and on its left-right mirror image (test-time mirroring, as nnU-Net does it), left and right classes swapped
back, so the network's leaning to one side cancels out."""

from __future__ import annotations

import numpy as np
import torch

WINDOW_OVERLAP = 0.25


def normalise(hu: np.ndarray, intensity: dict) -> np.ndarray:
    low, high = intensity["clip_hu"]
    return (np.clip(hu, low, high) / intensity["scale_hu"]).astype(np.float32)


def predict_scores(network: torch.nn.Module, image: np.ndarray, patch_voxels, device: str = "cpu") -> torch.Tensor:
    """Softmax class scores (classes x image shape, float32 on the CPU) by Gaussian-weighted sliding windows.
    An image smaller than a window is padded by repeating its edge voxels: tissue that goes on past a tight
    crop, not the air that would make a crop round one vertebra look like a thigh."""
    from monai.inferers import sliding_window_inference

    network.eval()
    with torch.inference_mode():
        logits = sliding_window_inference(
            torch.from_numpy(image)[None, None], roi_size=tuple(patch_voxels), sw_batch_size=1,
            predictor=network, overlap=WINDOW_OVERLAP, mode="gaussian", padding_mode="replicate",
            sw_device=device, device="cpu",
        )
        return torch.softmax(logits[0], dim=0)


def predict_mirrored_scores(network: torch.nn.Module, image: np.ndarray, patch_voxels, labels: list[str],
                            device: str = "cpu") -> torch.Tensor:
    """``predict_scores`` averaged over ``image`` and its mirror image across index axis 0, which points to
    the patient's left on an axis-aligned LPS grid; in the mirror image's scores a ``*_left`` class (named in
    ``labels``) is read as its ``*_right`` counterpart and the other way round."""
    direct = predict_scores(network, image, patch_voxels, device)
    mirrored = predict_scores(network, np.ascontiguousarray(image[::-1]), patch_voxels, device).flip(1)
    return (direct + mirrored[_mirror_classes(labels)]) / 2


def _mirror_classes(labels: list[str]) -> list[int]:
    """For each class, the class it becomes in a mirror image: its other side, or itself."""
    return [labels.index(_other_side(name)) for name in labels]


def _other_side(name: str) -> str:
    if name.endswith("_left"):
        return name.removesuffix("_left") + "_right"
    if name.endswith("_right"):
        return name.removesuffix("_right") + "_left"
    return name


def predict_classes(network: torch.nn.Module, image: np.ndarray, patch_voxels, device: str = "cpu") -> np.ndarray:
    """The most likely class per voxel (uint8)."""
    return predict_scores(network, image, patch_voxels, device).argmax(dim=0).numpy().astype(np.uint8)
