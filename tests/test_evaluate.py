"""recon.evaluate against analytic truth and against DeepMind's surface-distance (a test-only dependency)."""

import math

import numpy as np
import pytest
import surface_distance
from scipy.spatial.transform import Rotation

from recon.errors import GeometryError, InputError
from recon.evaluation import evaluate
from recon.evaluation.cohort import summarize
from recon.evaluation.surface import area_table
from recon.geometry import Grid
from recon.volume import LabelMap

OBLIQUE = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
SPACING = (0.8, 1.1, 2.5)


def oblique_grid(shape=(80, 70, 36), spacing=SPACING):
    """A grid whose centre voxel lies at LPS (10, -20, 30), rotated and anisotropic."""
    centre = OBLIQUE @ (np.multiply(spacing, np.subtract(shape, 1)) / 2)
    return Grid(shape, spacing, np.array([10.0, -20.0, 30.0]) - centre, OBLIQUE)


def lps_of(grid):
    return grid.index_to_lps(np.indices(grid.shape).transpose(1, 2, 3, 0))


def ellipsoid(grid, centre, radii, axes=None):
    local = (lps_of(grid) - centre) @ (np.eye(3) if axes is None else axes)
    return np.sum((local / np.asarray(radii)) ** 2, axis=-1) <= 1.0


def labels_of(grid, *masks, names=None):
    array = np.zeros(grid.shape, np.uint8)
    for index, mask in enumerate(masks, start=1):
        array[mask] = index
    return LabelMap(grid, array, names or {index: f"bone_{index}" for index in range(1, len(masks) + 1)})


def test_concentric_spheres_on_an_oblique_anisotropic_grid_give_the_radius_difference():
    grid = oblique_grid()
    centre = np.array([10.0, -20.0, 30.0])
    score = evaluate(labels_of(grid, ellipsoid(grid, centre, [20] * 3)),
                     labels_of(grid, ellipsoid(grid, centre, [26] * 3))).labels["bone_1"]
    half_voxel = max(SPACING) / 2
    assert abs(score.hd_mm - 6.0) <= half_voxel
    assert abs(score.hd95_mm - 6.0) <= half_voxel
    assert abs(score.centroid_distance_mm) < 0.1
    assert score.dice == pytest.approx(2 * 20**3 / (20**3 + 26**3), rel=0.02)
    assert score.volume_ref_ml == pytest.approx(4 / 3 * math.pi * 26**3 / 1000, rel=0.01)
    assert score.nsd[1.0] == 0.0 and score.nsd[3.0] < 0.05


def test_a_shifted_box_gives_the_analytic_dice_hausdorff_and_centroid_distance():
    grid = Grid((40, 30, 20), SPACING, (0, 0, 0), OBLIQUE)
    box = np.zeros(grid.shape, bool)
    box[5:25, 5:20, 4:14] = True
    shifted = np.roll(box, 3, axis=0)
    score = evaluate(labels_of(grid, shifted), labels_of(grid, box)).labels["bone_1"]
    assert score.dice == pytest.approx(17 / 20, abs=1e-12)
    assert score.iou == pytest.approx(17 / 23, abs=1e-12)
    assert score.hd_mm == pytest.approx(3 * SPACING[0], abs=1e-9)
    assert score.centroid_distance_mm == pytest.approx(3 * SPACING[0], abs=1e-9)
    assert score.volume_pred_ml == score.volume_ref_ml


def test_single_voxels_same_and_neighbouring():
    grid = Grid((5, 5, 5), SPACING, (0, 0, 0))
    one, neighbour = np.zeros(grid.shape, bool), np.zeros(grid.shape, bool)
    one[2, 2, 2] = neighbour[2, 2, 3] = True
    same = evaluate(labels_of(grid, one), labels_of(grid, one)).labels["bone_1"]
    assert (same.dice, same.hd_mm, same.assd_mm, same.nsd[1.0]) == (1.0, 0.0, 0.0, 1.0)
    apart = evaluate(labels_of(grid, neighbour), labels_of(grid, one)).labels["bone_1"]
    assert apart.dice == 0.0 and apart.hd_mm == pytest.approx(SPACING[2])


def test_empty_masks_absent_or_infinite_and_the_worst_case_in_the_cohort():
    grid = Grid((20, 20, 20), (1.0, 1.0, 1.0), (0, 0, 0))
    cube = np.zeros(grid.shape, bool)
    cube[5:10, 5:10, 5:10] = True
    names = {1: "bone_1", 2: "bone_2", 3: "bone_3"}
    ref = labels_of(grid, cube, np.zeros_like(cube), np.zeros_like(cube), names=names)
    pred = labels_of(grid, np.zeros_like(cube), np.zeros_like(cube), np.roll(cube, 8, axis=0), names=names)
    result = evaluate(pred, ref)
    missing, absent, extra = (result.labels[f"bone_{n}"] for n in (1, 2, 3))
    assert missing.status == "missing_in_pred" and missing.dice == 0 and math.isinf(missing.hd95_mm)
    assert extra.status == "missing_in_ref" and extra.nsd[2.0] == 0 and math.isinf(extra.assd_mm)
    assert absent.status == "absent" and absent.dice is None and result.absent == ["bone_2"]
    assert result.as_dict()["labels"]["bone_1"]["hd95_mm"] == "inf"

    perfect = evaluate(ref, ref)
    summary = summarize({"a": result, "b": perfect})
    bone_1 = summary["labels"]["bone_1"]
    assert bone_1["cases"] == {"present": 1, "missing_in_pred": 1, "missing_in_ref": 0, "absent": 0}
    assert bone_1["dice"]["mean"] == pytest.approx(0.5)
    assert bone_1["hd95_mm"]["mean"] == pytest.approx(math.sqrt(3 * 20**2) / 2)
    assert summary["labels"]["bone_2"]["cases"]["absent"] == 2 and summary["labels"]["bone_2"]["dice"] == {"n": 0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_deepminds_surface_distance(seed):
    rng = np.random.default_rng(seed)
    spacing = tuple(rng.uniform(0.5, 3.0, 3))
    grid = Grid((60, 50, 40), spacing, (0, 0, 0))
    centre = np.multiply(grid.shape, spacing) / 2
    axes = Rotation.random(random_state=seed).as_matrix()
    ref = ellipsoid(grid, centre, rng.uniform(8, 20, 3), axes)
    pred = ellipsoid(grid, centre + rng.uniform(-3, 3, 3), rng.uniform(8, 20, 3), axes)
    pred &= rng.random(grid.shape) > 0.03  # a ragged surface exercises every cube configuration
    ours = evaluate(labels_of(grid, pred), labels_of(grid, ref), tolerances_mm=(0.5, 1, 2, 4)).labels["bone_1"]
    theirs = surface_distance.compute_surface_distances(ref, pred, spacing)
    assert ours.dice == pytest.approx(surface_distance.compute_dice_coefficient(ref, pred), abs=1e-9)
    assert ours.hd95_mm == pytest.approx(surface_distance.compute_robust_hausdorff(theirs, 95), abs=0.01)
    assert ours.hd_mm == pytest.approx(surface_distance.compute_robust_hausdorff(theirs, 100), abs=0.01)
    areas = np.concatenate([theirs["surfel_areas_gt"], theirs["surfel_areas_pred"]])
    distances = np.concatenate([theirs["distances_gt_to_pred"], theirs["distances_pred_to_gt"]])
    assert ours.assd_mm == pytest.approx(np.sum(areas * distances) / np.sum(areas), abs=0.01)
    for tolerance in (0.5, 1, 2, 4):
        expected = surface_distance.compute_surface_dice_at_tolerance(theirs, tolerance)
        assert ours.nsd[tolerance] == pytest.approx(expected, abs=0.001)


def test_surface_element_areas_equal_deepminds_table_for_every_configuration():
    from surface_distance import lookup_tables

    spacing = (0.7, 0.9, 2.5)
    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    # their bit 7 - b is our corner b (their kernel counts corners in the opposite order)
    ours = area_table(spacing)[[int(f"{code:08b}"[::-1], 2) for code in range(256)]]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_labels_are_matched_by_name_not_id():
    grid = Grid((30, 30, 30), (1.0, 1.0, 1.0), (0, 0, 0))
    a, b = np.zeros(grid.shape, bool), np.zeros(grid.shape, bool)
    a[2:10, 2:10, 2:10], b[15:25, 15:25, 15:25] = True, True
    ref = labels_of(grid, a, b, names={1: "vertebrae_L1", 2: "sacrum"})
    pred = labels_of(grid, b, a, names={1: "sacrum", 2: "vertebrae_L1"})
    result = evaluate(pred, ref)
    assert {name: score.dice for name, score in result.labels.items()} == {"vertebrae_L1": 1.0, "sacrum": 1.0}


def test_a_prediction_on_another_grid_is_resampled_in_patient_space():
    ref_grid = oblique_grid()
    centre = np.array([12.0, -18.0, 28.0])
    ref = labels_of(ref_grid, ellipsoid(ref_grid, centre, [15, 18, 21]))
    flipped = Grid(ref_grid.shape, ref_grid.spacing_mm,
                   ref_grid.index_to_lps(np.subtract(ref_grid.shape, 1) * [1, 0, 0]),
                   ref_grid.direction_matrix @ np.diag([-1.0, 1.0, 1.0]))
    pred = LabelMap(flipped, np.ascontiguousarray(ref.labels[::-1]), ref.names)
    result = evaluate(pred, ref)
    assert result.resampled and result.labels["bone_1"].dice == 1.0
    assert "resampled" in result.warnings[0]

    far_away = Grid(ref_grid.shape, ref_grid.spacing_mm, np.add(ref_grid.origin_lps_mm, 5000.0), OBLIQUE)
    with pytest.raises(GeometryError, match="do not overlap"):
        evaluate(LabelMap(far_away, ref.labels, ref.names), ref)


def test_verse_identification_rate():
    grid = Grid((20, 20, 120), (1.0, 1.0, 1.0), (0, 0, 0))
    bodies = []
    for level in range(4):
        body = np.zeros(grid.shape, bool)
        body[5:15, 5:15, 30 * level + 5:30 * level + 25] = True
        bodies.append(body)
    names = {1: "vertebrae_L1", 2: "vertebrae_L2", 3: "vertebrae_L3", 4: "vertebrae_L4"}
    ref = labels_of(grid, *bodies, names=names)
    assert evaluate(ref, ref).identification_rate == 1.0
    swapped = labels_of(grid, bodies[1], bodies[0], bodies[2], bodies[3], names=names)
    result = evaluate(swapped, ref)
    assert result.identification_rate == 0.5
    assert not result.labels["vertebrae_L1"].identified and result.labels["vertebrae_L3"].identified
    one_missing = labels_of(grid, bodies[0], bodies[1], bodies[2], names=names)
    assert evaluate(one_missing, ref).identification_rate == 0.75


def test_bad_tolerances_are_refused():
    grid = Grid((5, 5, 5), (1.0, 1.0, 1.0), (0, 0, 0))
    labels = labels_of(grid, np.ones(grid.shape, bool))
    with pytest.raises(InputError, match="tolerances"):
        evaluate(labels, labels, tolerances_mm=(1, -2))
