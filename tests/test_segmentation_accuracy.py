"""The shipped model's accuracy, pinned to what was measured when it was trained (model.json's "accuracy"),
so that a regression fails CI. Real data comes from ../shared/data and was never used in training."""

import pytest

from recon.segmentation.accuracy import held_out_phantoms, totalsegmentator_example
from recon.segmentation.model import load_model
from tests.conftest import SHARED_DATA, shared_path

SLACK = 0.02  # Dice may move this much with library versions before a change counts as a regression

# measured with models/bone3mm when it was trained (see its model.json)
PINNED_TOTALSEG = {
    "femur_left": 0.1604,
    "femur_right": 0.4833,
    "hip_left": 0.2564,
    "hip_right": 0.6045,
    "sacrum": 0.459,
    "vertebrae_L1": 0.493,
    "vertebrae_L2": 0.5686,
    "vertebrae_L3": 0.6028,
    "vertebrae_L4": 0.594,
    "vertebrae_L5": 0.5472,
    "vertebrae_T12": 0.1782,
}
PINNED_NAMED_RIGHT = ("vertebrae_T12", "vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4",
                      "vertebrae_L5")  # named right on the real CT
# real/tptbox-l3: L3 Dice measured 0.0, so there is nothing to pin yet (see model.json)
PINNED_PHANTOM_WORST = {
    "femur_left": 0.9008,
    "femur_right": 0.9207,
    "hip_left": 0.8684,
    "hip_right": 0.8599,
    "sacrum": 0.9395,
    "vertebrae_L2": 0.6592,
    "vertebrae_L3": 0.8147,
    "vertebrae_L4": 0.8466,
    "vertebrae_L5": 0.8582,
    "vertebrae_T12": 0.2195,
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
