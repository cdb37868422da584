"""The shipped model's accuracy, pinned to what was measured when it was trained (model.json's "accuracy"),
so that a regression fails CI. Real data comes from ../shared/data and was never used in training."""

import pytest

from recon.segmentation.accuracy import held_out_phantoms, totalsegmentator_example
from recon.segmentation.model import load_model
from tests.conftest import SHARED_DATA, shared_path

SLACK = 0.02  # Dice may move this much with library versions before a change counts as a regression

# measured with models/bone3mm when it was trained (see its model.json)
PINNED_TOTALSEG = {
    "femur_left": 0.1264,
    "femur_right": 0.4351,
    "hip_left": 0.2024,
    "hip_right": 0.3778,
    "sacrum": 0.2861,
    "vertebrae_L2": 0.2496,
    "vertebrae_L3": 0.531,
    "vertebrae_L4": 0.444,
    "vertebrae_L5": 0.4451,
}
PINNED_NAMED_RIGHT = ("vertebrae_L2", "vertebrae_L3", "vertebrae_L4", "vertebrae_L5")  # named right on the real CT
# real/tptbox-l3: L3 Dice measured 0.0, so there is nothing to pin yet (see model.json)
PINNED_PHANTOM_WORST = {
    "femur_left": 0.9004,
    "femur_right": 0.9058,
    "hip_left": 0.8379,
    "hip_right": 0.864,
    "sacrum": 0.9061,
    "vertebrae_L2": 0.6709,
    "vertebrae_L3": 0.6922,
    "vertebrae_L4": 0.7853,
    "vertebrae_L5": 0.8132,
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
