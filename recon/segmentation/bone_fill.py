"""Bone the network left as background, given to the bone it belongs to (on the model's grid).

On real CT the network trained on phantoms finds where each bone is but misses much of it: the marrow of a fatty
sacrum or iliac wing, the rim of a vertebra. The CT itself says where bone is, since Hounsfield units are
calibrated: this step takes the voxels above ``BONE_HU`` (cortex and cancellous bone at the model's 3 mm, where
each voxel averages what it covers) and the marrow that those above ``ENCLOSING_HU`` enclose, and floods that mask
from the network's labels (scikit-image's marker watershed on the inverted HU, so two bones meet where the CT is
darkest between them: a disc, a joint space). Only bone within ``REACH_MM`` of a label and where the network gave
recon's bones together at least ``MIN_BONE_SCORE`` is taken, so a contrast-filled vessel or bowel beside a
vertebra, which the network calls background with near certainty, stays background, and so does a rib, which it
calls other bone. Voxels the network labelled keep their label.

Then what a label encloses in its slices joins it (``fill_enclosed``): marrow too dark for ``BONE_HU`` that
the network left as background inside a bone's own outline is that bone's. A hip bone or femur is cortex
around marrow with no cavity that belongs to anything else: its axial, coronal and sagittal slices are filled.
A vertebra encloses the spinal canal in its axial slices but never in its coronal or sagittal ones (the canal
runs on through the vertebrae above and below), so only those are filled: a low-density vertebral body that the
network hollowed out (on real CT a body of about 100 HU, the marrow of an older patient, or osteopenia) gets
its marrow back. The sacrum is left alone: its foramina and its curved canal can be enclosed in any plane.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

BONE_HU = 150.0  # above soft tissue, contrast-enhanced liver and spleen too (up to about 140 HU): an older
# patient's cancellous bone (100-200 HU) is in; brighter vessels and kidneys are MIN_BONE_SCORE's to keep out
ENCLOSING_HU = 200.0  # a ring this bright is cortex; at BONE_HU, a vertebral arch's blurred ring closes the canal
REACH_MM = 12.0
MIN_BONE_SCORE = 0.05
SOLID_BONES = ("hip_left", "hip_right", "femur_left", "femur_right")
ALL_PLANES = (0, 1, 2)  # sagittal, coronal, axial slices: the index axis each holds fixed
PLANES_ALONG_THE_SPINE = (0, 1)  # sagittal and coronal: on the model's grid index axis 2 points superior


def fill_bone(classes: np.ndarray, hu: np.ndarray, bone_score: np.ndarray, spacing_mm: float) -> np.ndarray:
    """``classes`` (uint8, 0 background) with the enclosed and adjoining bone of each label added to it.

    ``hu`` is the CT and ``bone_score`` the network's summed probability of recon's bones, both on the same
    grid as ``classes`` (isotropic, ``spacing_mm``)."""
    labelled = classes > 0
    if not labelled.any():
        return classes
    near = ndimage.distance_transform_edt(~labelled) * spacing_mm <= REACH_MM
    candidates = labelled | (_bone_with_marrow(hu) & near & (bone_score >= MIN_BONE_SCORE))
    return watershed(-hu, markers=classes.astype(np.int32), mask=candidates).astype(classes.dtype)


def _bone_with_marrow(hu: np.ndarray) -> np.ndarray:
    """Voxels above ``BONE_HU``, and what those above ``ENCLOSING_HU`` enclose in 3D and in each axial slice
    (index axis 2 is superior on the model's grid): marrow darker than the soft tissue around the bone still
    belongs to it."""
    bone = ndimage.binary_fill_holes(hu > ENCLOSING_HU)
    for k in range(bone.shape[2]):
        bone[:, :, k] = ndimage.binary_fill_holes(bone[:, :, k])
    return bone | (hu > BONE_HU)


def fill_enclosed(classes: np.ndarray, fill: list[int], axes: tuple[int, ...]) -> np.ndarray:
    """``classes`` with the background that each class in ``fill`` encloses in its slices across each of
    ``axes`` in turn (the index axis a slice holds fixed) given to it."""
    filled = classes.copy()
    for c in fill:
        bone = classes == c
        for axis in axes:  # each plane's fill closes outlines for the next
            planes = np.moveaxis(bone, axis, 0)
            enclosed = np.moveaxis(np.stack([ndimage.binary_fill_holes(plane) for plane in planes]), 0, axis)
            bone |= enclosed & (filled == 0)
        filled[bone] = c
    return filled
