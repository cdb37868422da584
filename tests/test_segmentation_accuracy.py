"""The shipped model's accuracy, pinned to what was measured when it was trained (model.json's "accuracy"),
so that a regression fails CI. Real data comes from ../shared/data and was never used in training."""

import json

import numpy as np
import pytest

from recon.cli import main
from recon.io.images import write_image
from recon.io.labels import read_label_map
from recon.io.loading import load_ct
from recon.geometry import Grid
from recon.segmentation.accuracy import (HELD_OUT_SEED_BASE, TEST_TIME_ZOOMS, held_out_phantoms, lumbar_crop,
                                         osteoporotic, phantom_lumbar_crops, totalsegmentator_example, tptbox_l3,
                                         vertebral_parts)
from recon.segmentation.model import load_model
from recon.volume import LabelMap, Volume
from tests.conftest import SHARED_DATA, shared_path

SLACK = 0.02  # Dice may move this much with library versions before a change counts as a regression

# measured with models/bone3mm and the post-processing as it is now (see its model.json)
PINNED_TOTALSEG = {
    "femur_left": 0.5667,
    "femur_right": 0.8501,
    "hip_left": 0.8719,
    "hip_right": 0.8947,
    "sacrum": 0.7667,
    "vertebrae_L1": 0.8284,
    "vertebrae_L2": 0.8758,
    "vertebrae_L3": 0.8889,
    "vertebrae_L4": 0.9082,
    "vertebrae_L5": 0.8774,
    "vertebrae_T12": 0.6508,
}
PINNED_POSTERIOR_ELEMENTS = {  # each vertebra behind its body (``vertebral_parts``), where the real CT loses most
    "vertebrae_L1": 0.6074,
    "vertebrae_L2": 0.6515,
    "vertebrae_L3": 0.7253,
    "vertebrae_L4": 0.743,
    "vertebrae_L5": 0.6797,
}
# named right on the real CT (T11, a 76-voxel sliver at the top of the scan, is merged into T12)
PINNED_NAMED_RIGHT = ("vertebrae_T12", "vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4", "vertebrae_L5")
PINNED_TPTBOX_L3 = {"dice_L3": 0.0991,  # real/tptbox-l3: L3 is found whole but named L2 (no sacrum to count from)
                    "dice_L3_as_found": 0.7279}
# the same two real CTs with ``recon segment --zooms 1.1 0.9`` (``TEST_TIME_ZOOMS``): more of each bone found (and on
# the held-out phantoms, where the network already draws bones larger than the geometric truth, the vertebrae
# 0.02-0.03 lower; model.json)
PINNED_TOTALSEG_ZOOMED = {
    "femur_left": 0.6273,
    "femur_right": 0.858,
    "hip_left": 0.8851,
    "hip_right": 0.8917,
    "sacrum": 0.7824,
    "vertebrae_L1": 0.8658,
    "vertebrae_L2": 0.8888,
    "vertebrae_L3": 0.9025,
    "vertebrae_L4": 0.9102,
    "vertebrae_L5": 0.8786,
    "vertebrae_T12": 0.7045,
}
PINNED_TPTBOX_L3_ZOOMED = {"dice_L3": 0.7012}  # named right
PELVIC_BONES = {"sacrum", "hip_left", "hip_right", "femur_left", "femur_right"}
PINNED_PHANTOM_WORST = {  # on phantoms whose iliac wing thins to the fossa (as every phantom now draws it)
    "femur_left": 0.9217,
    "femur_right": 0.9377,
    "hip_left": 0.8646,
    "hip_right": 0.8657,
    "sacrum": 0.8891,
    "vertebrae_T12": 0.3425,
    "vertebrae_L1": 0.8586,
    "vertebrae_L2": 0.8827,
    "vertebrae_L3": 0.8629,
    "vertebrae_L4": 0.8636,
    "vertebrae_L5": 0.8665,
}
PINNED_HIP_REPLACEMENT_WORST = {
    "femur_left": 0.8708,
    "femur_right": 0.8236,
    "hip_left": 0.8434,
    "hip_right": 0.8461,
}
PINNED_HIP_FIXATION_WORST = {  # held-out phantom 950000001: a cephalomedullary nail left, cannulated screws right
    "femur_left": 0.814,
    "femur_right": 0.8283,
    "hip_left": 0.8392,
    "hip_right": 0.8214,
}


def assert_holds(measured: dict, pinned: dict) -> None:
    for name, value in pinned.items():
        assert measured.get(name, 0.0) >= value - SLACK, name


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_real_ct_against_totalsegmentator_v1_holds_its_measured_dice(model):
    shared_path("real/totalseg-example/reference_v1")
    measured = totalsegmentator_example(model, SHARED_DATA)
    assert_holds(measured["dice"], PINNED_TOTALSEG)
    assert_holds(measured["dice_posterior_elements"], PINNED_POSTERIOR_ELEMENTS)
    assert all(measured["levels_named_right"][name] for name in PINNED_NAMED_RIGHT), measured["levels_named_right"]


def test_real_crop_round_l3_holds_its_measured_dice(model):
    shared_path("real/tptbox-l3")
    assert_holds(tptbox_l3(model, SHARED_DATA), PINNED_TPTBOX_L3)


def test_real_cts_segmented_with_test_time_zooms_hold_their_measured_dice(model):
    shared_path("real/totalseg-example/reference_v1")
    shared_path("real/tptbox-l3")
    measured = totalsegmentator_example(model, SHARED_DATA, zooms=TEST_TIME_ZOOMS)
    assert_holds(measured["dice"], PINNED_TOTALSEG_ZOOMED)
    assert all(measured["levels_named_right"][name] for name in PINNED_NAMED_RIGHT), measured["levels_named_right"]
    assert_holds(tptbox_l3(model, SHARED_DATA, zooms=TEST_TIME_ZOOMS), PINNED_TPTBOX_L3_ZOOMED)


@pytest.mark.parametrize("top, bottom, anchor", [("L1", "L4", "none"), ("L4", None, "sacrum")])
def test_a_narrow_crop_of_the_real_lumbar_spine_shows_no_pelvic_bone_the_reference_lacks_and_its_anchor(
        tmp_path, capsys, top, bottom, anchor):
    """150 mm across, from the centre of ``bottom`` (or the bottom of the scan) to the centre of ``top``, as a
    spine protocol reconstructs it. Before ``placement.py`` the network called parts of the L1-L4 crop's
    vertebrae hip bone, femur and sacrum; with no sacrum in view that crop is named a level high."""
    folder = shared_path("real/totalseg-example")
    ct, reference = load_ct(folder / "ct.nii.gz"), read_label_map(folder / "reference_v1")
    crop, truth = lumbar_crop(ct, reference, top, bottom, 150)
    write_image(crop.hu, crop.grid, tmp_path / "crop.nii.gz")
    assert main(["segment", str(tmp_path / "crop.nii.gz"), "-o", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "labels.json").read_text())
    found = {entry["name"] if isinstance(entry, dict) else entry for entry in written.values()}
    shown = {truth.names[int(number)] for number in np.unique(truth.labels) if number}
    assert found & PELVIC_BONES <= shown, found  # none where the reference has none
    assert sum(name.startswith("vertebrae_") for name in found) >= 2  # the vertebrae stay
    assert {entry["counted_from"] for entry in written.values() if isinstance(entry, dict)} == {anchor}
    assert ("WARNING: vertebra levels counted without" in capsys.readouterr().out) == (anchor == "none")


def test_spine_centred_crops_of_held_out_phantoms_counted_from_the_lumbosacral_junction_are_named_right(model):
    crops = phantom_lumbar_crops(model, seeds=range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + 2))
    # 14 vertebrae, 12 named right when measured; the twenty-seventh stage alone also found the half of L2 that the
    # 150 mm crop to L2's centre shows of phantom 950000000 (13 of 15; on all 16 held-out phantoms 150 of 153
    # against the shipped average's 151 of 154; 7 of 7 before the sacrum bent down)
    assert crops["sacrum"]["crops"] == 6 and crops["sacrum"]["vertebrae"] == 14
    assert crops["sacrum"]["named_right"] >= 12
    assert crops["none"]["named_right"] >= 15 - 2  # 15 of 29 when measured: without the junction, a guess


def test_held_out_phantoms_hold_their_measured_dice(model):
    assert_holds(held_out_phantoms(model, count=2)["dice_worst"], PINNED_PHANTOM_WORST)


def test_held_out_phantoms_with_hip_replacements_hold_their_measured_dice(model):
    measured = held_out_phantoms(model, count=2, hip_replacement_probability=1.0)
    assert_holds(measured["dice_worst"], PINNED_HIP_REPLACEMENT_WORST)


def test_held_out_phantoms_with_fixed_hip_fractures_hold_their_measured_dice(model):
    measured = held_out_phantoms(model, count=2, hip_fixation_probability=1.0)
    assert_holds(measured["dice_worst"], PINNED_HIP_FIXATION_WORST)


def test_low_density_bone_is_faint_and_nothing_else_changes():
    grid = Grid((12, 12, 12), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    hu = np.full(grid.shape, 40.0, np.float32)
    hu[4:8, 4:8, 4:8], hu[5, 5, 5], hu[0, 0, 0] = 200.0, 1300.0, 1300.0  # cancellous, cortex, a bright speck
    labels = np.zeros(grid.shape, np.uint8)
    labels[4:8, 4:8, 4:8] = 1
    faint = osteoporotic(Volume(grid, hu), LabelMap(grid, labels, {1: "vertebrae_L3"})).hu
    assert faint[4, 4, 4] == 60 + 140 * 0.25 - 20 and faint[5, 5, 5] == 60 + 1240 * 0.25 - 20
    changed = faint != hu
    assert not changed[labels == 0].any() and faint[0, 0, 0] == 1300.0


def test_a_vertebra_is_scored_by_its_body_and_its_posterior_elements_apart():
    grid = Grid((10, 10, 4), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0))
    truth = np.zeros(grid.shape, np.uint8)
    truth[2:6, 2:5] = 1  # body: rows 2-4; posterior elements: row 5
    truth[2:6, 5] = 1
    bodies = np.zeros(grid.shape, bool)
    bodies[:, :5] = True
    found = truth.copy()
    found[2:6, 6] = 2  # another level's label behind: not this vertebra's
    found[2:4, 5] = 0  # half the posterior elements missed
    names = {1: "vertebrae_L3", 2: "vertebrae_L4"}
    parts = vertebral_parts(LabelMap(grid, found, names), LabelMap(grid, truth, {1: "vertebrae_L3"}), bodies)
    assert parts == {"dice_body": {"vertebrae_L3": 1.0}, "dice_posterior_elements": {"vertebrae_L3": round(2 * 8 / 24, 4)}}
