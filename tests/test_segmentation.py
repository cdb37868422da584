"""Segmentation mechanics: level naming, the model file contract, training resume, existing segmentations.
(The shipped model's accuracy is pinned in test_segmentation_accuracy.py.)"""

import json
import math
import pickle

import numpy as np
import pytest
from scipy import ndimage
import torch

import recon
from recon.anatomy import BONES, LABEL_IDS, OTHER_BONE, OTHER_BONE_ID
from recon.cli import main
from recon.errors import InputError
from recon.geometry import Grid
from recon.io.images import write_image
from recon.phantom import make_phantom
from recon.phantom.implants import METAL_THRESHOLD_HU
from recon.segmentation.average import average_models
from recon.segmentation.datasets import load_user_dataset
from recon.segmentation.levels import assign_levels, level_anchor
from recon.segmentation.model import build_network, load_model, save_model
from recon.segmentation.sources import existing_labels
from recon.segmentation.train import (LABELS, code_revision, default_config, dice_ce_loss, labels_for,
                                      phantom_sample, train, training_step)
from recon.volume import Volume
from tests.conftest import shared_path

SPACING = 3.0


def spine(levels_from_inferior, shape=(20, 20, 90)):
    """Vertebra bodies stacked along S (index axis 2), 7 voxels tall with 3-voxel discs, each filled with the
    class the 'network' gave it."""
    classes = np.zeros(shape, np.uint8)
    for k, level in enumerate(levels_from_inferior):
        body = classes[5:15, 5:15, 3 + 10 * k:10 + 10 * k]
        body[...] = LABEL_IDS[level] if isinstance(level, str) else level
    return classes


def levels_of(classes, spacing_mm=SPACING, hu=None):
    """The post-processing on ``classes``, with a CT that is bone wherever the network saw vertebra."""
    return assign_levels(classes, LABELS, spacing_mm, np.where(classes > 0, 400.0, 40.0) if hu is None else hu)


def names_from_inferior(result, shape=(20, 20, 90)):
    return [LABELS[result.classes[10, 10, 6 + 10 * k]] for k in range(shape[2] // 10 - 1)
            if result.classes[10, 10, 6 + 10 * k]]


def test_consistent_levels_are_kept():
    levels = ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1"]
    result = levels_of(spine(levels))
    assert names_from_inferior(result) == levels
    assert all(value == 1.0 for value in result.confidence.values())


def test_a_duplicated_level_is_renamed_to_close_the_sequence():
    said = ["vertebrae_L5", "vertebrae_L4", "vertebrae_L4", "vertebrae_L2", "vertebrae_L1"]
    result = levels_of(spine(said))
    assert names_from_inferior(result) == ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2",
                                           "vertebrae_L1"]
    assert result.confidence[LABEL_IDS["vertebrae_L3"]] == 0.0  # the network never said L3 there


def anchor_of(classes):
    return level_anchor(levels_of(classes).classes, LABELS, SPACING)


def test_levels_say_whether_they_were_counted_from_the_lumbosacral_junction():
    lumbar = ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3"]
    assert anchor_of(spine(["sacrum", "sacrum", "sacrum", *lumbar])) == "sacrum"  # S1's body below L5
    fragment = spine(lumbar)
    fragment[5:15, 5:15, 0:2] = LABEL_IDS["sacrum"]  # 9 mm below L5: what a crop through L5 shows of it
    assert anchor_of(fragment) == "none"
    assert anchor_of(spine(["sacrum", "sacrum", "sacrum", 0, 0, *lumbar])) == "none"  # 72 mm below: not L5's
    assert anchor_of(spine(lumbar + ["vertebrae_L2", "vertebrae_L1", "vertebrae_T12"])) == "none"  # no sacrum
    assert level_anchor(np.zeros((5, 5, 5), np.uint8), LABELS, SPACING) is None


def test_a_field_of_view_cut_at_the_bottom_names_by_the_majority():
    said = ["vertebrae_L4", "vertebrae_L2", "vertebrae_L2", "vertebrae_L1", "vertebrae_T12"]
    result = levels_of(spine(said))
    assert names_from_inferior(result) == ["vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1",
                                           "vertebrae_T12"]


def test_a_crop_round_one_vertebra_is_named_by_the_whole_vertebra_not_the_cut_off_ones():
    """A scan that holds all of one vertebra and parts of those below and above: the network took the cut-off
    parts for a level higher each and was split on the whole vertebra, slightly more for the right level."""
    classes = np.zeros((20, 20, 30), np.uint8)
    classes[5:15, 5:15, 0:7] = LABEL_IDS["vertebrae_L3"]  # L4, cut off by the bottom of the scan
    classes[5:15, 5:15, 10:20] = LABEL_IDS["vertebrae_L3"]
    classes[5:15, 5:10, 10:20] = LABEL_IDS["vertebrae_L2"]  # 40% of the whole vertebra said L2
    classes[5:15, 5:6, 10:20] = LABEL_IDS["vertebrae_L3"]
    classes[5:15, 5:15, 23:30] = LABEL_IDS["vertebrae_L1"]  # L2, cut off by the top
    result = levels_of(classes)
    assert [LABELS[result.classes[10, 10, k]] for k in (3, 15, 26)] == ["vertebrae_L4", "vertebrae_L3",
                                                                       "vertebrae_L2"]


def test_stray_pieces_below_l5_and_above_the_top_level_go_back_to_background():
    levels = ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1", "vertebrae_T12",
              "vertebrae_T11"]
    below = np.zeros((20, 20, 10), np.uint8)
    below[8:12, 8:12, 2:6] = LABEL_IDS["vertebrae_T11"]  # a stray piece in the pelvis, 64 voxels
    classes = np.concatenate([below, spine(levels, (20, 20, 100))], axis=2)
    classes[8:12, 8:12, 94:98] = LABEL_IDS["vertebrae_L3"]  # and one above T11
    result = levels_of(classes)
    assert [LABELS[result.classes[10, 10, 16 + 10 * k]] for k in range(len(levels))] == levels
    assert not result.classes[8:12, 8:12, 2:6].any() and not result.classes[8:12, 8:12, 94:98].any()


def test_a_fragment_beside_the_spine_between_two_levels_does_not_shift_the_names_above_it():
    levels = ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1"]
    classes = spine(levels)
    classes[16:20, 16:20, 30:33] = LABEL_IDS["vertebrae_L2"]  # 48 voxels (1.3 ml) by the L3/L2 disc, apart
    result = levels_of(classes)
    assert names_from_inferior(result) == levels
    assert not result.classes[16:20, 16:20, 30:33].any()


def test_a_vertebra_split_between_two_levels_stays_one_instance_and_specks_go():
    classes = spine(["vertebrae_L5", "vertebrae_L4", "vertebrae_L3"])
    classes[5:15, 5:10, 13:20] = LABEL_IDS["vertebrae_L3"]  # half of L4 said to be L3
    classes[0, 0, 0] = LABEL_IDS["sacrum"]
    classes[2:4, 2:4, 60:62] = LABEL_IDS["sacrum"]
    classes[10:19, 10:19, 70:80] = LABEL_IDS["sacrum"]
    result = levels_of(classes)
    assert names_from_inferior(result, (20, 20, 40)) == ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3"]
    assert result.classes[0, 0, 0] == 0 and result.classes[12, 12, 75] == LABEL_IDS["sacrum"]


def test_vertebrae_joined_in_one_piece_are_cut_at_their_discs_whatever_level_the_network_gave_them():
    classes = spine(["vertebrae_L4", "vertebrae_L3", "vertebrae_L3"], (20, 20, 40))
    for k in range(3):  # posterior elements bridge each disc: one connected piece, narrow at the discs
        classes[12:14, 12:14, 10 + 10 * k:13 + 10 * k] = classes[10, 10, 6 + 10 * k]
    result = levels_of(classes)
    assert names_from_inferior(result, (20, 20, 40)) == ["vertebrae_L4", "vertebrae_L3", "vertebrae_L2"]


def test_a_process_reaching_past_the_disc_level_stays_with_its_own_vertebra():
    classes = spine(["vertebrae_L4", "vertebrae_L3"], (20, 20, 30))
    classes[5:15, 16:19, 9:20] = LABEL_IDS["vertebrae_L3"]  # L3's inferior process, hanging down beside L4
    classes[5:15, 15, 9:13] = LABEL_IDS["vertebrae_L4"]  # the joint between them, which the network took for bone
    hu = np.where(classes > 0, 400.0, 40.0)
    hu[5:15, 16:19] = np.where(classes[5:15, 16:19] > 0, 800.0, 40.0)  # the process's cortex
    hu[5:15, 15, 9:13] = 60.0
    result = levels_of(classes, hu=hu)
    assert np.all(result.classes[5:15, 16:19, 9:20] == LABEL_IDS["vertebrae_L3"])
    assert np.all(result.classes[5:15, 5:15, 3:10] == LABEL_IDS["vertebrae_L4"])


def test_two_levels_with_no_disc_between_them_in_the_ct_are_still_split_by_the_network():
    classes = spine(["vertebrae_L5", "vertebrae_L4", "vertebrae_L3"], (20, 20, 40))
    classes[5:15, 5:15, 10:13] = LABEL_IDS["vertebrae_L5"]  # L5 and L4 fused: no narrowing, 68 mm tall
    result = levels_of(classes, 4.0)
    assert names_from_inferior(result, (20, 20, 40)) == ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3"]


def test_a_vertebra_cut_across_between_two_slabs_the_networks_levels_split_stays_one():
    """L5, L4 and L3 in one piece with no disc showing between them, and a waist in the middle of L4 (where an
    oblique disc's narrowest slice runs through the vertebra behind it) that cuts the piece into two slabs,
    each too tall for one vertebra: the network's levels split both, and L4 on either side is one vertebra; so
    too when L4's upper half, above the waist, is a slab of its own that fits one vertebra."""
    classes = np.zeros((20, 20, 40), np.uint8)
    for low, high, level in ((0, 12, "vertebrae_L5"), (12, 28, "vertebrae_L4"), (28, 40, "vertebrae_L3")):
        classes[5:15, 5:15, low:high] = LABEL_IDS[level]
    classes[10:15, 5:15, 18:21] = 0  # the waist: half the area
    result = levels_of(classes)
    assert [LABELS[result.classes[7, 10, k]] for k in (5, 14, 24, 34)] == [
        "vertebrae_L5", "vertebrae_L4", "vertebrae_L4", "vertebrae_L3"]
    classes[7:15, 5:15, 28:31] = 0  # now L4's disc with L3 shows: L4's upper half is a slab of its own
    result = levels_of(classes)
    assert [LABELS[result.classes[7, 10, k]] for k in (5, 14, 24, 34)] == [
        "vertebrae_L5", "vertebrae_L4", "vertebrae_L4", "vertebrae_L3"]


def test_a_sliver_of_vertebra_cut_off_by_the_top_of_the_scan_is_its_own_level():
    """Areas per slice of L1 and, above its disc, the last 10 mm of T12 at the top of the scan (the profile of a
    held-out phantom the smoothing hid that disc in); the network named the sliver right."""
    areas = [48, 108, 166, 195, 212, 223, 199, 180, 142, 73, 39, 82, 127]
    classes = np.zeros((16, 16, len(areas)), np.uint8)
    for k, area in enumerate(areas):
        classes[:, :, k].flat[:area] = LABEL_IDS["vertebrae_L1" if k < 11 else "vertebrae_T12"]
    classes[:, :, 10].flat[:39] = LABEL_IDS["vertebrae_L1"]  # the disc level: posterior elements only
    result = levels_of(classes)
    assert np.all(result.classes[:, :, 11:][classes[:, :, 11:] > 0] == LABEL_IDS["vertebrae_T12"])
    assert np.all(result.classes[:, :, :9][classes[:, :, :9] > 0] == LABEL_IDS["vertebrae_L1"])


def test_a_sliver_the_scan_cuts_off_with_no_disc_in_view_is_parted_by_the_networks_levels():
    """L2, its disc, then L1 running on into the last 15 mm of T12 at the top of the scan with no narrowing
    between them (the network left the disc as bone); the network named the sliver T12."""
    classes = spine(["vertebrae_L2"], (20, 20, 30))
    classes[5:15, 5:15, 13:25] = LABEL_IDS["vertebrae_L1"]
    classes[5:15, 5:15, 25:30] = LABEL_IDS["vertebrae_T12"]
    result = levels_of(classes)
    assert [LABELS[result.classes[10, 10, k]] for k in (6, 18, 27)] == ["vertebrae_L2", "vertebrae_L1",
                                                                       "vertebrae_T12"]


def test_a_vertebra_pair_too_tall_for_one_is_cut_at_a_shallow_narrowing_not_by_the_networks_levels():
    """Two 30 mm vertebrae (3 mm slices) whose disc the network partly filled: the piece narrows only to 70% of
    its neighbours there, and the network gave the upper half of L1 to T12. The stretch, taller than any one
    vertebra, is cut at its narrowest slice; a vertebra of one height narrowing as much is left whole."""
    areas = [150, 190, 200, 200, 200, 200, 200, 190, 170, 140, 140, 170, 190, 200, 200, 200, 200, 200, 190, 150]
    classes = np.zeros((16, 16, len(areas)), np.uint8)
    for k, area in enumerate(areas):
        classes[:, :, k].flat[:area] = LABEL_IDS["vertebrae_L1" if k < 5 else "vertebrae_T12"]
    result = levels_of(classes, spacing_mm=3.0)
    assert np.all(result.classes[:, :, :9][classes[:, :, :9] > 0] == LABEL_IDS["vertebrae_L1"])
    assert np.all(result.classes[:, :, 11:][classes[:, :, 11:] > 0] == LABEL_IDS["vertebrae_T12"])
    one = levels_of(classes[:, :, :14], spacing_mm=3.0)  # 42 mm: a single vertebra with a narrow waist
    assert len(set(np.unique(one.classes)) - {0}) == 1


def test_a_leaning_spines_vertebrae_are_cut_at_discs_square_to_the_spine():
    """Four vertebrae (3 mm voxels: bodies 24 mm tall and 36 mm deep, 9 mm discs) along an axis leaning 30
    degrees from the scan's, their posterior elements bridging the discs, all named L3 by the network. Every
    axial slice through a disc also crosses a body, so no axial slice narrows; the planes square to the spine
    do."""
    i, j, k = np.indices((24, 48, 40))
    lean, pitch = np.radians(30), 11
    along = (j - 16) * np.sin(lean) + k * np.cos(lean)  # height along the spine's axis, voxels
    across = (j - 16) * np.cos(lean) - (k - 22) * np.sin(lean)  # towards posterior, square to the axis
    spine_height = (along >= 0) & (along < 4 * pitch)
    body = (abs(i - 12) <= 5) & (abs(across) <= 6) & (np.mod(along, pitch) < 8) & spine_height
    arch = (abs(i - 12) <= 2) & (across >= 7) & (across <= 10) & spine_height
    result = levels_of(np.where(body | arch, LABEL_IDS["vertebrae_L3"], 0).astype(np.uint8))
    names = [np.unique(result.classes[body & (along >= pitch * n + 2) & (along < pitch * n + 6)]) for n in range(4)]
    assert all(len(name) == 1 for name in names)
    assert np.diff([int(name[0]) for name in names]).tolist() == [-1, -1, -1]  # one level each, in order


def tiny_model(tmp_path):
    torch.manual_seed(0)
    spec = {"name": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 0}
    card = {"network": spec, "labels": LABELS, "spacing_mm": 4.0, "patch_voxels": [32, 32, 32],
            "intensity": {"clip_hu": [-1000.0, 2000.0], "scale_hu": 1000.0}}
    return save_model(build_network(spec, len(LABELS)), card, tmp_path / "tiny")


def sided(name: str, image: torch.Tensor, score: torch.Tensor, scores: torch.Tensor, classes: list[str]) -> None:
    """A fake network's ``score`` for bone ``name`` (``femur``, ``hip``) put on its left class in the half of
    the window towards the patient's left (index axis 0) and on its right class in the other half, as a
    network that knows left from right would; with a window as large as the image, a bone's side is its
    side of the image."""
    left = (torch.arange(image.shape[2]) >= image.shape[2] / 2)[:, None, None]
    scores[:, classes.index(f"{name}_left")] = torch.where(left, score, -50.0)
    scores[:, classes.index(f"{name}_right")] = torch.where(left, -50.0, score)


def test_segment_returns_labels_on_the_input_grid_whatever_its_orientation(tmp_path):
    from recon.segmentation.infer import segment

    folder = tiny_model(tmp_path)
    direction = np.diag([-1.0, 1.0, -1.0])  # a rotation by 180 degrees about P
    grid = Grid((40, 36, 30), (2.0, 2.5, 3.0), (30.0, -40.0, 50.0), direction)
    hu = np.where(np.indices(grid.shape)[0] > 20, 700, 0).astype(np.int16)
    labels = segment(Volume(grid, hu), model=folder)
    assert labels.grid == grid and labels.labels.shape == grid.shape
    assert labels.labels.dtype == np.uint8 and set(labels.names.values()) <= set(BONES)


def test_classes_recon_does_not_name_are_never_output(tmp_path):
    from recon.segmentation.infer import segment
    from recon.segmentation.model import Model

    classes = labels_for({"other_bone_class": True})
    assert classes == [*LABELS, OTHER_BONE]

    class OtherBoneEverywhere(torch.nn.Module):  # bone-bright voxels: other bone; the rest: background
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # a network has parameters (and a device)

        def forward(self, image):
            scores = torch.zeros((image.shape[0], len(classes), *image.shape[2:]))
            bright = (image[:, 0] > 0.3).float()
            scores[:, classes.index(OTHER_BONE)] = 50 * bright
            scores[:, 0] = 50 * (1 - bright)
            return scores

    card = {**load_model(tiny_model(tmp_path)).card, "labels": classes}
    grid = Grid((40, 36, 30), (2.0, 2.5, 3.0), (30.0, -40.0, 50.0))
    hu = np.where(np.indices(grid.shape)[0] > 20, 700, 0).astype(np.int16)
    labels = segment(Volume(grid, hu), model=Model(OtherBoneEverywhere().eval(), card))
    assert not labels.labels.any() and labels.names == {}


def test_the_bone_fill_never_grows_a_bone_into_what_the_network_calls_other_bone(tmp_path):
    from recon.segmentation.infer import segment
    from recon.segmentation.model import Model

    classes = labels_for({"other_bone_class": True})

    class FemurBesideRibs(torch.nn.Module):  # 700 HU: femur; 1500 HU: other bone; the rest: background
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, image):
            scores = torch.zeros((image.shape[0], len(classes), *image.shape[2:]))
            bright, brighter = (image[:, 0] > 0.3).float(), (image[:, 0] > 1.0).float()
            sided("femur", image, 50 * (bright - brighter), scores, classes)
            scores[:, classes.index(OTHER_BONE)] = 50 * brighter
            scores[:, 0] = 50 * (1 - bright)
            return scores

    card = {**load_model(tiny_model(tmp_path)).card, "labels": classes, "patch_voxels": [48, 48, 48]}
    grid = Grid((40, 36, 30), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    i = np.indices(grid.shape)[0]
    hu = np.select([i > 11, i > 4], [1500, 700], 0).astype(np.int16)
    labels = segment(Volume(grid, hu), model=Model(FemurBesideRibs().eval(), card))
    assert set(labels.names.values()) == {"femur_right"}  # index axis 0 points to the patient's left
    assert labels.labels[6:11].all() and not labels.labels[13:].any()


def test_bone_the_network_splits_between_two_bones_is_still_bone(tmp_path):
    from recon.segmentation.infer import segment
    from recon.segmentation.model import Model

    class FemurOrHip(torch.nn.Module):  # soft tissue-bright voxels: femur 0.40, hip 0.35, background 0.25
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, image):
            scores = torch.full((image.shape[0], len(LABELS), *image.shape[2:]), -50.0)
            bone = image[:, 0] > 0.1
            for name, share in (("femur", 0.40), ("hip", 0.35)):
                sided(name, image, torch.where(bone, math.log(share), -50.0), scores, LABELS)
            scores[:, 0] = torch.where(bone, math.log(0.25), 50.0)
            return scores

    grid = Grid((40, 36, 30), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    hu = np.where(np.indices(grid.shape)[0] > 20, 120, -500).astype(np.int16)  # too faint for the bone fill
    card = {**load_model(tiny_model(tmp_path)).card, "patch_voxels": [48, 48, 48]}
    labels = segment(Volume(grid, hu), model=Model(FemurOrHip().eval(), card))
    assert labels.names == {LABEL_IDS["femur_left"]: "femur_left"}
    assert (labels.labels[22:] == LABEL_IDS["femur_left"]).all() and not labels.labels[:20].any()


def test_models_load_only_from_safetensors_with_a_matching_hash(tmp_path):
    folder = tiny_model(tmp_path)
    assert load_model(folder).labels == LABELS
    card = json.loads((folder / "model.json").read_text())
    card["sha256"] = "0" * 64
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="sha256"):
        load_model(folder)


class _Planted:
    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_pickled_model_is_refused_without_being_unpickled(tmp_path):
    planted = _Planted()
    planted.target = tmp_path / "pwned"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(planted))
    with pytest.raises(InputError, match="pickle"):
        load_model(tmp_path / "evil.pt")
    assert not planted.target.exists()


def small_training_config(tmp_path, **changes):
    config = default_config()
    config.update({"steps": 4, "batch_size": 1, "patch_voxels": [32, 32, 32], "spacing_mm": 6.0,
                   "phantom_shape": [48, 48, 56], "crops_per_phantom": 2, "validate_every": 100,
                   "checkpoint_every": 2, "validation_phantoms": 1,
                   "network": {"name": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 0}, **changes})
    (tmp_path / "config.json").write_text(json.dumps(config))
    return config


def test_training_resumes_exactly_where_it_stopped(tmp_path):
    small_training_config(tmp_path)
    straight = train(tmp_path / "straight", config_path=tmp_path / "config.json")
    train(tmp_path / "split", config_path=tmp_path / "config.json", steps=2)
    resumed = train(tmp_path / "split", resume=True, steps=4)
    a, b = load_model(straight).network.state_dict(), load_model(resumed).network.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    card = json.loads((resumed / "model.json").read_text())
    assert card["training"]["steps"] == 4 and card["accuracy"]["held_out_phantoms"]["step"] == 4
    assert card["training"]["code"] == code_revision() and card["training"]["code"]["recon"] == recon.__version__


def test_worker_processes_make_the_same_batches_in_the_same_order(tmp_path):
    from recon.segmentation.train import _batches

    config = small_training_config(tmp_path, steps=5, crops_per_phantom=2)
    here, workers = (list(_batches(config, 1, [], count)) for count in (0, 2))
    assert len(here) == len(workers) == 4
    assert all(torch.equal(a, b) for pair in zip(here, workers) for a, b in zip(*pair))


def test_a_bfloat16_training_step_gives_the_float32_loss_to_bfloat16_precision_and_keeps_float32_weights(tmp_path):
    config = small_training_config(tmp_path)
    classes = len(labels_for(config))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((2, 1, 32, 32, 32), generator=generator)
    targets = torch.randint(0, classes, (2, 1, 32, 32, 32), generator=generator)
    losses, weights = {}, {}
    for precision, extra in (("float32", {}), ("bfloat16", {"autocast": "bfloat16"})):
        torch.manual_seed(1)
        network = build_network(config["network"], classes)
        optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
        losses[precision] = training_step(network, optimiser, dice_ce_loss(), images, targets, config | extra)
        weights[precision] = network.state_dict()
    assert losses["bfloat16"] != losses["float32"]  # the forward pass did run in bfloat16
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.02)
    assert all(tensor.dtype == torch.float32 for tensor in weights["bfloat16"].values() if tensor.is_floating_point())


def test_training_phantoms_carry_hip_fixations_when_the_configuration_asks_for_them(tmp_path):
    config = small_training_config(tmp_path)
    plain, _ = phantom_sample(config, 0)
    fixed, labels = phantom_sample(config | {"hip_fixation_probability": 1.0}, 0)
    assert not (plain > METAL_THRESHOLD_HU).any()
    metal = fixed > METAL_THRESHOLD_HU
    assert metal.any() and set(np.unique(labels[metal]).tolist()) <= {LABEL_IDS["femur_left"], LABEL_IDS["femur_right"]}


def test_training_phantoms_carry_an_auricular_sacrum_when_the_configuration_asks_for_it(tmp_path):
    config = small_training_config(tmp_path)
    sacrum = LABEL_IDS["sacrum"]
    plain = phantom_sample(config, 0)[1] == sacrum
    auricular = phantom_sample(config | {"auricular_sacrum_probability": 1.0}, 0)[1] == sacrum
    assert auricular.sum() > plain.sum()


def test_training_phantoms_meet_in_facet_joints_when_the_configuration_asks_for_it(tmp_path):
    config = small_training_config(tmp_path)
    joined = config | {"facet_joint_probability": 1.0}
    assert not np.array_equal(phantom_sample(config, 0)[1], phantom_sample(joined, 0)[1])


def test_averaging_models_writes_their_weighted_mean_and_records_each_of_them(tmp_path):
    first = tiny_model(tmp_path)
    torch.manual_seed(1)
    card = json.loads((first / "model.json").read_text())
    second = save_model(build_network(card["network"], len(LABELS)), card | {"training": {"seed": 1}},
                        tmp_path / "second")
    assert main(["average", str(first), str(second), "--weights", "3", "1", "-o",
                           str(tmp_path / "soup")]) == 0
    soup = load_model(tmp_path / "soup")
    a, b = load_model(first).network.state_dict(), load_model(second).network.state_dict()
    for key, value in soup.network.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * a[key] + 0.25 * b[key])
    sources = soup.card["training"]["averaged"]
    assert [source["weight"] for source in sources] == [0.75, 0.25]
    assert sources[1]["training"] == {"seed": 1} and sources[0]["sha256"] == card["sha256"]
    other = save_model(build_network(card["network"], len(LABELS) - 1), card | {"labels": LABELS[:-1]},
                       tmp_path / "other")
    with pytest.raises(InputError, match="labels differ"):
        average_models([first, other], [1.0, 1.0], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_fine_tuning_starts_from_the_given_model_and_records_where_it_started(tmp_path):
    config = small_training_config(tmp_path, steps=1, learning_rate=1e-9, hip_replacement_probability=1.0)
    torch.manual_seed(123)  # another start than the run's own seed would give
    start = save_model(build_network(config["network"], len(labels_for(config))),
                       {"network": config["network"], "labels": labels_for(config), "spacing_mm": 6.0,
                        "patch_voxels": [32, 32, 32], "intensity": config["intensity"]}, tmp_path / "start")
    tuned = train(tmp_path / "tuned", config_path=tmp_path / "config.json", init=start)
    fresh = train(tmp_path / "fresh", config_path=tmp_path / "config.json")
    weights = {name: load_model(folder).network.state_dict() for name, folder in
               (("start", start), ("tuned", tuned), ("fresh", fresh))}

    def same(a, b):
        return all(torch.allclose(weights[a][key], weights[b][key], atol=1e-6) for key in weights[a])

    assert same("start", "tuned") and not same("start", "fresh")
    recorded = json.loads((tuned / "model.json").read_text())["training"]["configuration"]["initial_model"]
    assert recorded["sha256"] == json.loads((start / "model.json").read_text())["sha256"]


def test_fine_tuning_refuses_a_model_with_other_classes(tmp_path):
    config = small_training_config(tmp_path, steps=1, other_bone_class=False)
    start = save_model(build_network(config["network"], len(labels_for(config)) + 1),
                       {"network": config["network"], "labels": labels_for(config) + [OTHER_BONE],
                        "spacing_mm": 6.0, "patch_voxels": [32, 32, 32], "intensity": config["intensity"]},
                       tmp_path / "start")
    with pytest.raises(InputError, match="fine-tune from a model trained with the same ones"):
        train(tmp_path / "tuned", config_path=tmp_path / "config.json", init=start)


def test_an_existing_totalsegmentator_result_becomes_recon_labels_on_the_ct_grid():
    from recon.io.loading import load_ct

    ct = load_ct(shared_path("real/totalseg-example/ct.nii.gz"))
    labels = existing_labels(shared_path("real/totalseg-example/spine_report/totalseg.nii.gz"), ct.grid,
                             "totalsegmentator")
    assert labels.grid == ct.grid
    assert set(labels.names.values()) >= {"vertebrae_L1", "vertebrae_L5", "vertebrae_T12"}  # v2 has no sacrum here
    assert all(LABEL_IDS[name] == index for index, name in labels.names.items())


TOTALSEGMENTATOR_STYLE = {"vertebrae_L5": 1, "vertebrae_S1": 2, "sacrum": 3, "rib_left_12": 4, "liver": 5}


def slabs(values) -> tuple[np.ndarray, Grid]:
    """A 3 mm label image with one 2-voxel slab per value along S (the first slab background)."""
    grid = Grid((8, 8, 2 * len(values) + 2), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0))
    labels = np.zeros(grid.shape, np.uint8)
    for value in values:
        labels[:, :, 2 * value:2 * value + 2] = value
    return labels, grid


def slab_classes(labels: np.ndarray) -> list[int]:
    return [int(labels[4, 4, 2 * k]) for k in range(labels.shape[2] // 2)]


def test_a_user_dataset_is_mapped_by_name_with_s1_in_the_sacrum_and_ribs_as_other_bone(tmp_path):
    labels, grid = slabs(TOTALSEGMENTATOR_STYLE.values())
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    write_image(np.full(grid.shape, 300, np.int16), grid, tmp_path / "imagesTr" / "case_0000.nii.gz")
    write_image(labels, grid, tmp_path / "labelsTr" / "case.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, **TOTALSEGMENTATOR_STYLE}}))
    sacrum, l5 = LABEL_IDS["sacrum"], LABEL_IDS["vertebrae_L5"]
    (_, with_other), = load_user_dataset(tmp_path, {"spacing_mm": 3.0, "other_bone_class": True})
    assert slab_classes(with_other) == [0, l5, sacrum, sacrum, OTHER_BONE_ID, 0]
    (_, without), = load_user_dataset(tmp_path, {"spacing_mm": 3.0})
    assert slab_classes(without) == [0, l5, sacrum, sacrum, 0, 0]
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    with pytest.raises(InputError, match="dataset.json: none of its labels"):
        load_user_dataset(tmp_path, {"spacing_mm": 3.0})


def test_an_existing_segmentation_puts_totalsegmentator_v2_s1_into_the_sacrum(tmp_path):
    labels, grid = slabs(TOTALSEGMENTATOR_STYLE.values())
    write_image(labels, grid, tmp_path / "labels.nii.gz")
    (tmp_path / "names.json").write_text(json.dumps({str(v): name for name, v in TOTALSEGMENTATOR_STYLE.items()}))
    recon_labels = existing_labels(tmp_path / "labels.nii.gz", grid, tmp_path / "names.json")
    sacrum, l5 = LABEL_IDS["sacrum"], LABEL_IDS["vertebrae_L5"]
    assert slab_classes(recon_labels.labels) == [0, l5, sacrum, sacrum, 0, 0]
    assert recon_labels.names == {l5: "vertebrae_L5", sacrum: "sacrum"}


def test_a_phantom_ct_has_the_labels_the_model_knows():
    phantom = make_phantom(3, size="small")
    assert set(phantom.labels.names.values()) <= set(LABELS)


def test_the_random_hu_curve_changes_contrast_but_never_the_order_of_tissues():
    from recon.segmentation.train import _random_curve

    jitter = default_config()["augment"]["curve_jitter_hu"]
    hu = np.linspace(-1100, 2500, 2000, dtype=np.float32)
    for seed in range(20):
        assert np.all(np.diff(_random_curve(hu, jitter, np.random.default_rng(seed))) >= 0)


def test_each_bone_gets_its_own_marrow_offset_and_the_rest_of_the_image_is_untouched():
    from recon.segmentation.train import _marrow_variation

    augment = {**default_config()["augment"], "bone_heterogeneity_hu": [0.0, 0.0]}
    target = np.zeros((40, 40, 40), np.uint8)
    target[5:15, 5:15, 5:15], target[25:35, 25:35, 25:35] = 3, 8
    hu = np.full(target.shape, 200.0, np.float32)
    changed = _marrow_variation(hu, target, augment, np.random.default_rng(1)) - hu
    first, second = changed[10, 10, 10], changed[30, 30, 30]
    low, high = augment["bone_offset_hu"]
    assert low <= first <= high and low <= second <= high and abs(first - second) > 1.0
    assert np.allclose(changed[8:12, 8:12, 8:12], first, atol=0.01 * abs(first))
    assert np.all(changed[20, :, :] == 0) and changed[0, 0, 0] == 0


def test_a_low_density_draw_pairs_a_faint_cortex_with_fatty_marrow_and_old_configurations_draw_nothing():
    from recon.segmentation.train import _low_density

    augment = default_config()["augment"]
    rng = np.random.default_rng(4)
    assert _low_density(augment, rng) is augment and rng.uniform() == np.random.default_rng(4).uniform()
    osteoporotic = {**augment, "low_density_probability": 1.0, "low_density_bone_scale": [0.15, 0.35],
                    "low_density_offset_hu": [-120.0, -30.0]}
    drawn = _low_density(osteoporotic, np.random.default_rng(4))
    assert drawn["bone_scale"] == [0.15, 0.35] and drawn["bone_offset_hu"] == [-120.0, -30.0]
    assert _low_density({**osteoporotic, "low_density_probability": 0.0}, rng)["bone_scale"] == augment["bone_scale"]


def test_bone_fades_smoothly_from_place_to_place_and_soft_tissue_keeps_its_value():
    from recon.segmentation.train import _augment_intensity

    base = {"bone_threshold_hu": default_config()["augment"]["bone_threshold_hu"], "bone_scale": [1.0, 1.0],
            "hu_scale": [1.0, 1.0], "hu_shift": [0.0, 0.0], "blur_voxels": [0.0, 0.0],
            "slice_blur_voxels": [0.0, 0.0], "noise_hu": [0.0, 0.0]}  # every other change switched off
    hu = np.full((40, 40, 40), 40.0, np.float32)
    hu[:, :, ::2] = 1150.0  # bone in every other slice
    fading = base | {"bone_fade_probability": 1.0, "bone_fade_min": [0.2, 0.2], "bone_fade_cells": 3}
    faded = _augment_intensity(hu, fading, np.random.default_rng(3))
    share = (faded[:, :, ::2] - 150.0) / 1000.0
    assert np.all(faded[:, :, 1::2] == 40.0)
    assert 0.2 - 1e-4 <= share.min() < 0.5 and share.max() > 0.7 and share.max() <= 1.0 + 1e-4
    assert np.abs(np.diff(share, axis=0)).max() < 0.1  # no step from voxel to voxel
    assert np.array_equal(_augment_intensity(hu, base, np.random.default_rng(3)), hu)  # no key, no fade


def test_a_tight_crop_repeats_its_edge_voxels_to_the_patch_size_labels_alike():
    from recon.segmentation.train import training_crop

    config = default_config()
    config["augment"].update(tight_crop_probability=1.0, tight_crop_min_voxels=8, truncate_probability=0.0)
    config["patch_voxels"] = [40, 40, 40]
    phantom = make_phantom(5, shape=(64, 64, 72), spacing_mm=(4.0, 4.0, 4.0))
    image, target = training_crop(phantom.ct.hu.astype(np.float32), phantom.labels.labels, config,
                                  np.random.default_rng(2))
    assert image.shape == target.shape == (40, 40, 40)
    repeated = [np.flatnonzero(np.all(np.diff(image, axis=a) == 0, axis=tuple({0, 1, 2} - {a}))) for a in range(3)]
    assert sum(len(r) for r in repeated) > 0  # some axis was cropped short of the patch
    for axis, steps in enumerate(repeated):
        assert np.all(np.take(np.diff(target, axis=axis), steps, axis=axis) == 0)


def test_a_spine_crop_is_a_box_round_the_vertebrae_padded_with_its_edge_voxels():
    from recon.segmentation.train import spine_classes, training_crop

    config = default_config()
    config["augment"].update(spine_crop_probability=1.0, spine_crop_across_voxels=[12.0, 16.0],
                             spine_crop_jitter_voxels=0.0, tight_crop_min_voxels=8, truncate_probability=0.0,
                             scale_probability=0.0)
    config["patch_voxels"] = [56, 56, 64]  # most of the phantom: vertebrae in view
    phantom = make_phantom(5, shape=(64, 64, 72), spacing_mm=(4.0, 4.0, 4.0))
    boxes = 0
    for seed in range(6):
        image, target = training_crop(phantom.ct.hu.astype(np.float32), phantom.labels.labels, config,
                                      np.random.default_rng(seed))
        vertebrae = np.isin(target, spine_classes(config))
        if not vertebrae.any():
            continue
        changing = [np.flatnonzero(np.any(np.diff(image, axis=a) != 0, axis=tuple({0, 1, 2} - {a})))
                    for a in range(3)]
        box = [(c.min(), c.max() + 2) for c in changing]  # the voxels that differ from their neighbours
        inside = vertebrae[tuple(slice(*b) for b in box)]
        for axis in (0, 1):
            assert 12 * 0.9 - 1 <= box[axis][1] - box[axis][0] <= 16 * 1.1 + 1
            centre = np.nonzero(inside)[axis].mean() / (box[axis][1] - box[axis][0] - 1)
            if 0 < box[axis][0] and box[axis][1] < image.shape[axis]:  # a box the patch's edge does not stop
                assert 0.25 <= centre <= 0.75  # has the vertebrae in view round its middle
        assert box[2][1] - box[2][0] >= 8
        boxes += 1
    assert boxes >= 3


def test_a_scan_smaller_than_a_window_is_padded_with_its_own_edge_voxels_not_air():
    from recon.segmentation.window import predict_scores

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x):
            self.seen.append((float(x.min()), float(x.max())))
            return torch.zeros((x.shape[0], 2, *x.shape[2:]))

    network = Recorder()
    predict_scores(network, np.full((10, 12, 6), 0.05, np.float32), (16, 16, 16))
    assert network.seen and all(low == high == np.float32(0.05) for low, high in network.seen)


def test_the_mirror_images_scores_are_read_with_left_and_right_swapped_back():
    from recon.segmentation.window import predict_mirrored_scores, predict_scores

    class HipsBySide(torch.nn.Module):  # knows left from right
        def forward(self, image):
            scores = torch.zeros((image.shape[0], len(LABELS), *image.shape[2:]))
            sided("hip", image, torch.full(image[:, 0].shape, 20.0), scores, LABELS)
            return scores

    class AlwaysHipLeft(torch.nn.Module):  # leans to one side
        def forward(self, image):
            scores = torch.zeros((image.shape[0], len(LABELS), *image.shape[2:]))
            scores[:, LABELS.index("hip_left")] = 20.0
            return scores

    image, window = np.zeros((12, 10, 8), np.float32), (16, 16, 16)  # one window, centred on the image
    by_side = predict_mirrored_scores(HipsBySide(), image, window, LABELS)
    np.testing.assert_allclose(by_side, predict_scores(HipsBySide(), image, window), atol=1e-6)
    assert (by_side[LABELS.index("hip_left"), 6:] > 0.99).all()  # the patient-left half of the image
    assert (by_side[LABELS.index("hip_right"), :6] > 0.99).all()
    leaning = predict_mirrored_scores(AlwaysHipLeft(), image, window, LABELS)
    for side in ("hip_left", "hip_right"):
        np.testing.assert_allclose(leaning[LABELS.index(side)], 0.5, atol=1e-4)


def test_training_crops_have_the_patch_size_and_no_label_outside_a_truncated_field_of_view():
    from recon.segmentation.train import training_crop

    config = default_config()
    config["augment"].update(truncate_probability=1.0, scale_probability=1.0)
    phantom = make_phantom(5, shape=(64, 64, 72), spacing_mm=(4.0, 4.0, 4.0))
    hu, labels = phantom.ct.hu.astype(np.float32), phantom.labels.labels
    config["patch_voxels"] = [40, 40, 40]
    for seed in range(4):
        image, target = training_crop(hu, labels, config, np.random.default_rng(seed))
        assert image.shape == target.shape == (40, 40, 40)
        blank = image <= config["intensity"]["clip_hu"][0] / config["intensity"]["scale_hu"]
        assert not np.any(target[blank.all(axis=2)])


@pytest.mark.parametrize("factors", [(80 / 93, 80 / 71, 80 / 88), (0.6, 0.7, 0.45), (1.3, 1.0, 2.0)])
def test_zooming_one_axis_at_a_time_gives_scipys_zoom(factors):
    from recon.segmentation.train import zoom_separably

    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 300.0, (93, 71, 88)).astype(np.float32)
    labels = rng.integers(0, 13, image.shape).astype(np.uint8)
    linear = ndimage.zoom(image, factors, order=1, grid_mode=True, mode="nearest")
    nearest = ndimage.zoom(labels, factors, order=0, grid_mode=True, mode="nearest")
    zoomed = zoom_separably(image, factors, order=1)
    assert zoomed.shape == linear.shape
    assert np.abs(zoomed - linear).max() < 1e-3
    assert np.array_equal(zoom_separably(labels, factors, order=0), nearest)


@pytest.mark.parametrize("options, message", [(["--zooms", "1.1", "0"], "zooms must be positive"),
                                              (["--zooms", "1.1", "--labels", "seg.nii.gz"], "for recon's network"),
                                              (["--zooms", "1.1", "--model", "totalsegmentator"],
                                               "for recon's network")])
def test_recon_segment_refuses_test_time_zooms_it_cannot_use_before_writing_anything(tmp_path, capsys, options,
                                                                                      message):
    phantom = make_phantom(3, size="small")
    write_image(phantom.ct.hu, phantom.ct.grid, tmp_path / "ct.nii.gz")
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out"), *options]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
