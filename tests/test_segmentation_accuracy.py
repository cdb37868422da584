"""The shipped model's accuracy, pinned to what was measured when it was trained (model.json's "accuracy"),
so that a regression fails CI. Real data comes from ../shared/data and was never used in training."""

import pytest

from recon.segmentation.accuracy import held_out_phantoms, totalsegmentator_example
from recon.segmentation.model import load_model
from tests.conftest import SHARED_DATA, shared_path

SLACK = 0.02  # Dice may move this much with library versions before a change counts as a regression

# measured with models/bone3mm and the post-processing as it is now (see its model.json)
PINNED_TOTALSEG = {
    "femur_left": 0.1591,
    "femur_right": 0.6289,
    "hip_left": 0.4233,
    "hip_right": 0.7144,
    "sacrum": 0.521,
    "vertebrae_L1": 0.6334,
    "vertebrae_L2": 0.7927,
    "vertebrae_L3": 0.7846,
    "vertebrae_L4": 0.8027,
    "vertebrae_L5": 0.7084,
    "vertebrae_T12": 0.5573,
}
PINNED_NAMED_RIGHT = ("vertebrae_T12", "vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4",
                      "vertebrae_L5")  # named right on the real CT
# real/tptbox-l3: L3 Dice measured 0.0, so there is nothing to pin yet (see model.json)
PINNED_PHANTOM_WORST = {
    "femur_left": 0.9391,
    "femur_right": 0.9437,
    "hip_left": 0.874,
    "hip_right": 0.875,
    "sacrum": 0.9491,
    "vertebrae_L2": 0.8741,
    "vertebrae_L3": 0.8319,
    "vertebrae_L4": 0.8723,
    "vertebrae_L5": 0.9017,
    "vertebrae_T12": 0.5947,
}


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_real_ct_against_totalsegmentator_v1_holds_its_measured_dice(model):
    shared_path("real/totalseg-example/reference_v1")
    measured = totalsegmentator_example(model, SHARED_DATA)
    for name, pinned in PINNED_TOTALSEG.items():
        assert measured["dice"].get(name, 0.0) >= pinned - SLACK, name
    assert all(measured["levels_named_right"][name] for name in PINNED_NAMED_RIGHT), measured["levels_named_right"]


def test_held_out_phantoms_hold_their_measured_dice(model):
    measured = held_out_phantoms(model, count=2)
    for name, pinned in PINNED_PHANTOM_WORST.items():
        assert measured["dice_worst"].get(name, 0.0) >= pinned - SLACK, name
