"""The label vocabulary: bone names as TotalSegmentator spells them, with recon's own ids, and the id -> name
tables of the other tools whose label files recon reads (TotalSegmentator v2, VerSe)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

VERTEBRAE = ("vertebrae_T11", "vertebrae_T12", "vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4",
             "vertebrae_L5")
BONES = VERTEBRAE + ("sacrum", "hip_left", "hip_right", "femur_left", "femur_right")
LABEL_IDS: dict[str, int] = {name: index + 1 for index, name in enumerate(BONES)}
LABEL_NAMES: dict[int, str] = {index: name for name, index in LABEL_IDS.items()}
VERTEBRA_PREFIX = "vertebrae_"


def level_of(vertebra: str) -> str:
    """``"vertebrae_L4"`` -> ``"L4"``."""
    return vertebra.removeprefix(VERTEBRA_PREFIX)


def is_vertebra(name: str) -> bool:
    return name.startswith(VERTEBRA_PREFIX)


def verse_names() -> dict[int, str]:
    """VerSe ids: 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 28 T13 (a thirteenth thoracic vertebra)."""
    levels = [f"C{n}" for n in range(1, 8)] + [f"T{n}" for n in range(1, 13)] + [f"L{n}" for n in range(1, 7)]
    names = {index: VERTEBRA_PREFIX + level for index, level in enumerate(levels, start=1)}
    names[28] = VERTEBRA_PREFIX + "T13"
    return names


@cache
def totalsegmentator_names() -> dict[int, str]:
    """TotalSegmentator v2 ids of its ``total`` task (117 classes)."""
    text = resources.files("recon.data").joinpath("totalsegmentator_v2_total.json").read_text()
    return {int(index): name for index, name in json.loads(text)["names"].items()}


VOCABULARIES = {"recon": lambda: dict(LABEL_NAMES), "verse": verse_names, "totalsegmentator": totalsegmentator_names}
