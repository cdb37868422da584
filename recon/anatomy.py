"""The label vocabulary: bone names as TotalSegmentator spells them, with recon's own ids."""

from __future__ import annotations

VERTEBRAE = ("vertebrae_T11", "vertebrae_T12", "vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4",
             "vertebrae_L5")
BONES = VERTEBRAE + ("sacrum", "hip_left", "hip_right", "femur_left", "femur_right")
LABEL_IDS: dict[str, int] = {name: index + 1 for index, name in enumerate(BONES)}
LABEL_NAMES: dict[int, str] = {index: name for name, index in LABEL_IDS.items()}


def level_of(vertebra: str) -> str:
    """``"vertebrae_L4"`` -> ``"L4"``."""
    return vertebra.removeprefix("vertebrae_")
