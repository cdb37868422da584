"""User training data in nnU-Net v2 raw layout: ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz`` and
``dataset.json`` whose ``labels`` map names to ids. Labels are mapped to recon's classes by name
(``recon.anatomy.recon_bone``); bones recon does not name become the other-bone class when the configuration
trains one, and everything else becomes background."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recon.anatomy import LABEL_IDS, OTHER_BONE_ID, is_other_bone, recon_bone
from recon.errors import InputError
from recon.io.images import read_image
from recon.io.loading import load_ct
from recon.resample import canonical_grid, resample_labels, resample_volume
from recon.volume import LabelMap


def load_user_dataset(folder: Path, config: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every training case resampled to the model's spacing on an axis-aligned LPS grid: (HU, class ids)."""
    description = folder / "dataset.json"
    if not description.is_file():
        raise InputError(f"{folder}: no dataset.json; expected nnU-Net v2 raw layout (imagesTr/, labelsTr/, "
                         "dataset.json)")
    names = json.loads(description.read_text()).get("labels", {})
    to_class = {int(value): LABEL_IDS[recon_bone(name)] for name, value in names.items() if recon_bone(name)}
    if not to_class:
        raise InputError(f"{description}: none of its labels ({', '.join(names)}) is a bone recon segments "
                         f"({', '.join(LABEL_IDS)})")
    if config.get("other_bone_class"):
        to_class |= {int(value): OTHER_BONE_ID for name, value in names.items() if is_other_bone(name)}
    cases = []
    for label_file in sorted((folder / "labelsTr").glob("*.nii.gz")):
        case = label_file.name.removesuffix(".nii.gz")
        image_file = folder / "imagesTr" / f"{case}_0000.nii.gz"
        if not image_file.is_file():
            raise InputError(f"{image_file}: missing; every label in labelsTr needs its image")
        volume = load_ct(image_file)
        grid = canonical_grid(volume.grid, config["spacing_mm"])
        raw = read_image(label_file)
        mapped = np.zeros(raw.array.shape, np.uint8)
        for value, recon_class in to_class.items():
            mapped[np.asarray(raw.array) == value] = recon_class
        labels = resample_labels(LabelMap(raw.grid, mapped), grid).labels
        cases.append((resample_volume(volume, grid), labels.astype(np.uint8)))
    if not cases:
        raise InputError(f"{folder / 'labelsTr'}: no .nii.gz label files")
    return cases
