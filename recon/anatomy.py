"""The label vocabulary: bone names as TotalSegmentator spells them, with recon's own ids, and the id -> name
tables of the other tools whose label files recon reads (TotalSegmentator v2, VerSe)."""

from __future__ import annotations

import colorsys
import json
import zlib
from functools import cache
from importlib import resources

VERTEBRAE = ("vertebrae_T11", "vertebrae_T12", "vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4",
             "vertebrae_L5")
BONES = VERTEBRAE + ("sacrum", "hip_left", "hip_right", "femur_left", "femur_right")
LABEL_IDS: dict[str, int] = {name: index + 1 for index, name in enumerate(BONES)}
LABEL_NAMES: dict[int, str] = {index: name for name, index in LABEL_IDS.items()}
OTHER_BONE = "other_bone"  # bone recon does not name (``is_other_bone``): a training class only
OTHER_BONE_ID = max(LABEL_NAMES) + 1
VERTEBRA_PREFIX = "vertebrae_"
PART_OF = {"vertebrae_S1": "sacrum"}  # TotalSegmentator v2 labels S1 apart; recon's sacrum is the whole bone
OTHER_BONE_PREFIXES = ("rib_", "vertebrae_C", "vertebrae_T", "clavicula_", "scapula_", "humerus_")
OTHER_BONE_NAMES = ("sternum", "skull")


def level_of(vertebra: str) -> str:
    """``"vertebrae_L4"`` -> ``"L4"``."""
    return vertebra.removeprefix(VERTEBRA_PREFIX)


def is_vertebra(name: str) -> bool:
    return name.startswith(VERTEBRA_PREFIX)


def recon_bone(name: str) -> str | None:
    """The bone recon names that a label of another tool belongs to (``vertebrae_S1`` -> ``sacrum``), or None."""
    name = PART_OF.get(name, name)
    return name if name in LABEL_IDS else None


def is_other_bone(name: str) -> bool:
    """A bone that recon does not name, as TotalSegmentator spells it: ribs, vertebrae above T11, shoulder
    girdle, humeri, sternum, skull."""
    return recon_bone(name) is None and (name.startswith(OTHER_BONE_PREFIXES) or name in OTHER_BONE_NAMES)


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


BONE_COLOURS: dict[str, tuple[float, float, float]] = {
    "sacrum": (0.84, 0.70, 0.50),
    "hip_left": (0.91, 0.80, 0.58),
    "hip_right": (0.80, 0.72, 0.55),
    "femur_left": (0.93, 0.86, 0.70),
    "femur_right": (0.86, 0.80, 0.66),
}
VERTEBRA_COLOURS = ((0.90, 0.62, 0.55), (0.62, 0.78, 0.90), (0.70, 0.88, 0.62), (0.95, 0.82, 0.50),
                    (0.78, 0.66, 0.90), (0.55, 0.86, 0.82))


def colour_of(name: str) -> tuple[float, float, float]:
    """A display colour (RGB, 0-1) for a label: bone tones for the pelvis and femurs, neighbouring vertebrae in
    different colours, and a stable colour derived from the name for anything else."""
    if name in BONE_COLOURS:
        return BONE_COLOURS[name]
    order = list(verse_names().values())
    if name in order:
        return VERTEBRA_COLOURS[order.index(name) % len(VERTEBRA_COLOURS)]
    hue = zlib.crc32(name.encode()) % 360 / 360.0
    return colorsys.hsv_to_rgb(hue, 0.45, 0.9)
