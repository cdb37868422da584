import numpy as np

from recon.anatomy import BONES
from recon.segmentation.placement import drop_pelvis_beside_spine

LABELS = ["background", *BONES, "other_bone"]
CLASS = {name: c for c, name in enumerate(LABELS)}


def spine(levels_from_bottom: list[str], slices_each: int = 10) -> np.ndarray:
    """A column of vertebrae, the first at the bottom slice, each ``slices_each`` slices tall."""
    classes = np.zeros((30, 30, slices_each * len(levels_from_bottom)), np.uint8)
    for number, level in enumerate(levels_from_bottom):
        classes[12:18, 12:18, number * slices_each:(number + 1) * slices_each] = CLASS[level]
    return classes


def test_pelvic_bones_beside_a_lumbar_crop_go_back_to_background():
    classes = spine(["vertebrae_L3", "vertebrae_L2", "vertebrae_L1"])  # a crop that ends at L3
    classes[2:8, 2:8, 0:12] = CLASS["femur_left"]  # the network's mistakes beside the vertebrae
    classes[22:28, 2:8, 0:6] = CLASS["hip_right"]
    classes[2:8, 22:28, 5:9] = CLASS["sacrum"]
    kept = drop_pelvis_beside_spine(classes, LABELS)
    assert not np.isin(kept, [CLASS["femur_left"], CLASS["hip_right"], CLASS["sacrum"]]).any()
    assert np.array_equal(kept[12:18, 12:18], classes[12:18, 12:18])  # the vertebrae stay


def test_pelvic_bones_below_the_spine_stay():
    classes = spine(["sacrum", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3"])
    classes[2:8, 2:8, 0:4] = CLASS["femur_left"]  # the femoral head at the bottom of the scan
    classes[22:28, 2:8, 0:35] = CLASS["hip_right"]  # up to the crest beside L4
    assert np.array_equal(drop_pelvis_beside_spine(classes, LABELS), classes)


def test_a_level_spilling_down_the_scan_does_not_take_the_iliac_crest_with_it():
    classes = spine(["vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2"])
    classes[12:18, 18:20, 0:30] = CLASS["vertebrae_L3"]  # the network's L3 reaches the bottom slice
    classes[22:28, 2:8, 0:14] = CLASS["hip_right"]  # the crest beside L5 and L4, cut off by the scan
    kept = drop_pelvis_beside_spine(classes, LABELS)
    assert np.array_equal(kept, classes)


def test_only_the_misplaced_piece_of_a_bone_goes():
    classes = spine(["sacrum", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2"])
    classes[2:8, 2:8, 0:5] = CLASS["hip_left"]  # the real hip bone below
    classes[2:8, 2:8, 42:48] = CLASS["hip_left"]  # and a piece beside L2
    kept = drop_pelvis_beside_spine(classes, LABELS)
    assert np.all(kept[2:8, 2:8, 0:5] == CLASS["hip_left"])
    assert not kept[2:8, 2:8, 42:48].any()


def test_without_vertebrae_nothing_is_dropped():
    classes = np.zeros((20, 20, 20), np.uint8)
    classes[2:8, 2:8, 10:20] = CLASS["femur_right"]
    assert np.array_equal(drop_pelvis_beside_spine(classes, LABELS), classes)
