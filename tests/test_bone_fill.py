"""Bone the network left as background goes to the label it adjoins, and only bone does."""

import numpy as np

from recon.segmentation.bone_fill import (
    ALL_PLANES, BONE_HU, ENCLOSING_HU, MIN_BONE_SCORE, PLANES_ALONG_THE_SPINE, REACH_MM, fill_bone, fill_enclosed)

SPACING = 3.0
SOFT_HU, CORTEX_HU, MARROW_HU = 40.0, 600.0, -20.0


def ct_with_bones(*boxes, shape=(30, 30, 30)):
    """Soft tissue with bright boxes (i, j, k slices): bone as a network at 3 mm would see it."""
    hu = np.full(shape, SOFT_HU, np.float32)
    for box in boxes:
        hu[box] = CORTEX_HU
    return hu


def sure_bone(hu):
    """The network's bone score: some wherever the CT is bright."""
    return np.where(hu > BONE_HU, 0.5, 0.0).astype(np.float32)


def test_a_bone_the_network_found_in_part_is_filled_out_marrow_included():
    box = np.s_[5:16, 8:20, 8:20]
    hu = ct_with_bones(box)
    hu[8:14, 11:17, 11:17] = MARROW_HU  # fatty marrow inside the cortex, darker than the soft tissue around
    classes = np.zeros(hu.shape, np.uint8)
    classes[5:12, 8:20, 8:20] = 9  # within reach of the whole bone
    score = np.zeros(hu.shape, np.float32)
    score[box] = 2 * MIN_BONE_SCORE  # the network thought the missed part might be bone
    filled = fill_bone(classes, hu, score, SPACING)
    assert np.all(filled[box] == 9)
    assert np.count_nonzero(filled) == np.count_nonzero(hu > BONE_HU) + 6 * 6 * 6


def test_two_bones_meet_where_the_ct_is_darkest_between_them():
    hu = ct_with_bones(np.s_[5:25, 10:20, 2:20])
    hu[5:25, 10:20, 11] = BONE_HU + 20  # a disc or joint space, dim but still above the bone threshold
    classes = np.zeros(hu.shape, np.uint8)
    classes[5:25, 10:20, 3:8] = 6
    classes[5:25, 10:20, 14:19] = 5
    filled = fill_bone(classes, hu, sure_bone(hu), SPACING)
    assert np.all(filled[5:25, 10:20, 2:11] == 6) and np.all(filled[5:25, 10:20, 12:20] == 5)


def test_bright_tissue_and_enclosed_spaces_the_network_calls_background_with_certainty_stay_background():
    hu = ct_with_bones(np.s_[5:25, 5:12, 5:25], np.s_[5:25, 12:16, 5:25])  # a bone and a contrast vessel on it
    classes = np.zeros(hu.shape, np.uint8)
    classes[5:25, 5:9, 5:25] = 7
    score = sure_bone(hu)
    score[:, 12:16] = MIN_BONE_SCORE / 2
    filled = fill_bone(classes, hu, score, SPACING)
    assert np.all(filled[5:25, 5:12, 5:25] == 7)
    assert not filled[:, 12:16].any()
    hu[10:20, 7:10, 10:20] = SOFT_HU  # a canal inside the bone, as a vertebral arch encloses in axial slices
    score[10:20, 7:10, 10:20] = 0.0
    assert not fill_bone(classes, hu, score, SPACING)[10:20, 9, 10:20].any()


def test_dim_bone_joins_but_only_a_cortex_bright_enough_encloses_marrow():
    """A ring between ``BONE_HU`` and ``ENCLOSING_HU`` (a vertebral arch blurred at 3 mm, or an older patient's
    cancellous bone) is bone, but what it encloses (a spinal canal) is not marrow; inside cortex it is."""
    hu = np.full((30, 30, 30), SOFT_HU, np.float32)
    hu[5:25, 5:25, 5:25] = (BONE_HU + ENCLOSING_HU) / 2
    hu[12:18, 12:18, 5:25] = SOFT_HU  # a canal through it, from the bottom slice to the top
    classes = np.zeros(hu.shape, np.uint8)
    classes[:, :, 14:16][hu[:, :, 14:16] > BONE_HU] = 5  # the ring, in slices within reach of 10:20
    score = np.full(hu.shape, 2 * MIN_BONE_SCORE, np.float32)  # the network unsure everywhere
    dim = fill_bone(classes, hu, score, SPACING)[:, :, 10:20]
    assert np.all(dim[hu[:, :, 10:20] > BONE_HU] == 5) and not dim[12:18, 12:18].any()
    hu[hu > BONE_HU] = CORTEX_HU
    assert np.all(fill_bone(classes, hu, score, SPACING)[12:18, 12:18, 14:16] == 5)


def test_bone_out_of_reach_of_every_label_stays_background():
    reach = int(REACH_MM // SPACING)
    hu = ct_with_bones(np.s_[2:28, 2:6, 5:25])
    classes = np.zeros(hu.shape, np.uint8)
    classes[2:4, 2:6, 5:25] = 8
    filled = fill_bone(classes, hu, sure_bone(hu), SPACING)
    assert np.all(filled[2:4 + reach, 2:6, 5:25] == 8)
    assert not filled[4 + reach:, 2:6, 5:25].any()


def test_voxels_the_network_labelled_keep_their_label_and_nothing_labelled_means_nothing_filled():
    hu = ct_with_bones(np.s_[5:25, 5:25, 5:25])
    classes = np.zeros(hu.shape, np.uint8)
    classes[0:3, 0:3, 0:3] = 4  # a label in soft tissue
    classes[10:12, 10:12, 10:12] = 3
    filled = fill_bone(classes, hu, sure_bone(hu), SPACING)
    assert np.all(filled[0:3, 0:3, 0:3] == 4) and np.all(filled[10:12, 10:12, 10:12] == 3)
    empty = np.zeros(hu.shape, np.uint8)
    assert not fill_bone(empty, hu, sure_bone(hu), SPACING).any()


def test_marrow_inside_a_hip_or_femur_outline_is_theirs_but_a_vertebras_canal_is_not():
    classes = np.zeros((30, 30, 30), np.uint8)
    classes[5:15, 5:15, 5:25] = 9  # hip_left: a tube, open at both ends, whose core the network missed
    classes[7:13, 7:13, 5:25] = 0
    classes[9, 9, 10] = 11  # a voxel of another bone inside keeps its label
    classes[18:28, 18:28, 5:25] = 3  # vertebrae_L1 around its canal
    classes[20:26, 20:26, 5:25] = 0
    filled = fill_enclosed(classes, [9, 10, 11, 12], ALL_PLANES)
    assert np.all(filled[7:13, 7:13, 5:25][classes[7:13, 7:13, 5:25] == 0] == 9)
    assert filled[9, 9, 10] == 11
    assert not filled[20:26, 20:26, 5:25].any()
    assert np.array_equal(filled[classes > 0], classes[classes > 0])
    assert not fill_enclosed(classes, [3], PLANES_ALONG_THE_SPINE)[20:26, 20:26, 5:25].any()  # open along the spine


def test_a_vertebral_body_the_network_hollowed_out_gets_its_marrow_back_and_the_canal_stays_empty():
    classes = np.zeros((30, 30, 30), np.uint8)
    classes[5:25, 3:27, 8:22] = 5  # vertebrae_L3: the body in front (index axis 1 low), the arch behind
    classes[9:21, 18:24, 8:22] = 0  # the spinal canal, open at the top and bottom of the vertebra
    classes[8:22, 5:15, 11:19] = 0  # the body's dark marrow, missed inside its cortex
    filled = fill_enclosed(classes, [5], PLANES_ALONG_THE_SPINE)
    assert np.all(filled[8:22, 5:15, 11:19] == 5)
    assert not filled[9:21, 18:24, 8:22].any()
    assert fill_enclosed(classes, [5], ALL_PLANES)[9:21, 18:24, 8:22].all()  # why not its axial slices
