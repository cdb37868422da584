"""Phantoms: reproducible, plausible, and their truth agrees with their own label map."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from skimage.transform import radon

from recon.anatomy import LABEL_IDS, OTHER_BONE, OTHER_BONE_ID
from recon.geometry import Grid
from recon.io.labels import read_label_map
from recon.io.loading import load_ct
from recon.phantom import make_phantom
from recon.phantom.implants import FIXATIONS, HEAD_DIAMETER_MM, METAL_THRESHOLD_HU, metal_sinogram
from recon.phantom.render import Paint, render
from recon.phantom.shapes import Sphere
from recon.phantom.synth import synthesize

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def phantoms():
    return {seed: make_phantom(seed) for seed in SEEDS}


def label_at(phantom, points):
    index = np.round(phantom.labels.grid.lps_to_index(np.atleast_2d(points))).astype(int)
    inside = np.all((index >= 0) & (index < phantom.labels.grid.shape), axis=1)
    values = np.full(len(index), -1)
    values[inside] = phantom.labels.labels[tuple(index[inside].T)]
    return values


def test_the_same_seed_gives_the_same_phantom(phantoms):
    again = make_phantom(SEEDS[0])
    np.testing.assert_array_equal(again.ct.hu, phantoms[SEEDS[0]].ct.hu)
    np.testing.assert_array_equal(again.labels.labels, phantoms[SEEDS[0]].labels.labels)
    assert json.dumps(again.truth) == json.dumps(phantoms[SEEDS[0]].truth)


def test_different_seeds_give_different_anatomy(phantoms):
    heads = [p.truth["hips"]["left"]["femoral_head_radius_mm"] for p in phantoms.values()]
    assert len(set(heads)) == len(heads)


@pytest.mark.parametrize("seed", SEEDS)
def test_pedicle_axes_run_inside_their_pedicles_through_the_isthmus(phantoms, seed):
    phantom = phantoms[seed]
    checked = 0
    for name, vertebra in phantom.truth["vertebrae"].items():
        for side in ("left", "right"):
            pedicle = vertebra[f"pedicle_{side}"]
            center, axis = np.asarray(pedicle["isthmus_center_lps_mm"]), np.asarray(pedicle["axis_lps"])
            along = center + np.linspace(-4, 4, 9)[:, None] * axis
            values = label_at(phantom, along)
            if np.any(values < 0):
                continue  # outside the field of view
            assert np.all(values == LABEL_IDS[name]), (name, side, values)
            medial = np.cross(axis, np.asarray(vertebra["superior_endplate"]["normal_lps"]))
            medial *= -np.sign(medial @ (np.asarray(vertebra["body_center_lps_mm"]) - center)) * -1
            canal = center + medial * (pedicle["width_mm"] / 2 + 3.0)
            assert label_at(phantom, canal)[0] != LABEL_IDS[name], (name, side, "medial wall missing")
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("seed", SEEDS)
def test_femoral_head_and_acetabulum_spheres_match_their_voxels(phantoms, seed):
    phantom = phantoms[seed]
    grid = phantom.labels.grid
    voxel = max(grid.spacing_mm)
    for side, hip in phantom.truth["hips"].items():
        if not hip["in_field_of_view"]:
            continue
        center, radius = np.asarray(hip["femoral_head_center_lps_mm"]), hip["femoral_head_radius_mm"]
        femur = grid.index_to_lps(np.argwhere(phantom.labels.labels == LABEL_IDS[f"femur_{side}"]))
        head_top = femur[(femur[:, 2] > center[2] + 0.3 * radius) & (np.linalg.norm(femur - center, axis=1) < radius + 5)]
        assert len(head_top) > 20
        assert abs(np.linalg.norm(head_top - center, axis=1).max() - radius) <= voxel
        pelvis = grid.index_to_lps(np.argwhere(phantom.labels.labels == LABEL_IDS[f"hip_{side}"]))
        nearest = np.linalg.norm(pelvis - center, axis=1).min()
        assert abs(nearest - hip["acetabulum_radius_mm"]) <= voxel


@pytest.mark.parametrize("seed", SEEDS)
def test_landmarks_lie_on_the_hip_bones_and_endplates_on_their_bodies(phantoms, seed):
    phantom = phantoms[seed]
    grid = phantom.labels.grid
    for side in ("left", "right"):
        bone = grid.index_to_lps(np.argwhere(phantom.labels.labels == LABEL_IDS[f"hip_{side}"]))
        for landmark in (f"asis_{side}", f"pubic_tubercle_{side}"):
            point = np.asarray(phantom.truth["landmarks_lps_mm"][landmark])
            if not np.all((grid.lps_to_index(point) >= 0) & (grid.lps_to_index(point) < grid.shape)):
                continue
            assert np.linalg.norm(bone - point, axis=1).min() <= np.linalg.norm(grid.spacing_mm), landmark
    for name, vertebra in phantom.truth["vertebrae"].items():
        for endplate in ("superior_endplate", "inferior_endplate"):
            center = np.asarray(vertebra[endplate]["center_lps_mm"])
            normal = np.asarray(vertebra[endplate]["normal_lps"])
            inside, outside = label_at(phantom, [center - 2.5 * normal, center + 2.5 * normal])
            if inside >= 0 and outside >= 0:
                assert inside == LABEL_IDS[name] and outside != LABEL_IDS[name], (name, endplate)


def test_hounsfield_units_are_plausible(phantoms):
    for phantom in phantoms.values():
        hu, labels = phantom.ct.hu, phantom.labels.labels
        bone = np.median(hu[(labels >= LABEL_IDS["vertebrae_L1"]) & (labels <= LABEL_IDS["vertebrae_L5"])])
        assert 50 < bone < 700
        assert -1010 < np.median(hu[hu < -900]) < -950
        assert phantom.ct.hu.dtype == np.int16


def test_synth_writes_a_dicom_series_that_recon_and_simpleitk_read(tmp_path):
    case = synthesize(tmp_path, count=1, seed=5, size="small", fmt="dicom")[0]
    phantom = make_phantom(5)
    ct = load_ct(case / "ct")
    assert ct.grid.same_as(phantom.ct.grid, tolerance_mm=1e-3)
    np.testing.assert_array_equal(ct.hu, phantom.ct.hu)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(case / "ct")))
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), phantom.ct.hu)
    np.testing.assert_allclose(image.GetOrigin(), phantom.ct.grid.origin_lps_mm, atol=1e-3)
    labels = read_label_map(case / "labels.nii.gz")
    assert labels.grid.same_as(phantom.ct.grid, tolerance_mm=1e-3)
    assert set(labels.names.values()) == set(phantom.labels.names.values())
    truth = json.loads((case / "truth.json").read_text())
    assert truth["generator"]["seed"] == 5
    assert {"hips", "vertebrae", "landmarks_lps_mm"} <= set(truth)
    l4 = truth["vertebrae"]["vertebrae_L4"]
    assert {"body_center_lps_mm", "superior_endplate", "inferior_endplate", "pedicle_left", "pedicle_right"} <= set(l4)


def test_synth_writes_nifti_on_request(tmp_path):
    case = synthesize(tmp_path, count=2, seed=8, size="small", fmt="nifti")[1]
    assert case.name == "phantom_00009"
    assert load_ct(case / "ct.nii.gz").grid.shape == (128, 128, 128)


def test_the_spine_runs_on_above_t11_as_unlabelled_vertebrae_with_ribs():
    phantom = make_phantom(4, shape=(80, 80, 200), spacing_mm=(3.0, 3.0, 3.0))  # tall: up to T8 or so
    t11 = phantom.truth["vertebrae"]["vertebrae_T11"]
    assert set(phantom.truth["vertebrae"]) == {f"vertebrae_{v}" for v in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")}
    up = np.asarray(t11["superior_endplate"]["normal_lps"])
    above = np.asarray(t11["body_center_lps_mm"]) + up * np.arange(40, 100, 6)[:, None]
    index = np.round(phantom.ct.grid.lps_to_index(above)).astype(int)
    inside = np.all((index >= 0) & (index < phantom.ct.grid.shape), axis=1)
    assert inside.sum() >= 5
    hu = phantom.ct.hu[tuple(index[inside].T)]
    assert np.mean(hu > 150) > 0.5  # vertebral bodies (discs between them)
    assert not np.any(phantom.labels.labels[tuple(index[inside].T)])
    # for training they can carry a class of their own; nothing else changes
    labelled = make_phantom(4, shape=(80, 80, 200), spacing_mm=(3.0, 3.0, 3.0), label_other_bone=True)
    other = labelled.labels.labels == OTHER_BONE_ID
    assert np.array_equal(labelled.ct.hu, phantom.ct.hu) and labelled.labels.names[OTHER_BONE_ID] == OTHER_BONE
    assert np.array_equal(np.where(other, 0, labelled.labels.labels), phantom.labels.labels)
    assert np.mean(other[tuple(index[inside].T)][hu > 150]) > 0.6  # bodies, not their blurred edges
    assert np.median(phantom.ct.hu[other]) > 150


def test_a_hip_replacement_is_metal_in_the_bones_that_hold_it_streaks_its_slices_and_changes_nothing_else():
    plain, replaced = make_phantom(1), make_phantom(1, hip_replacement_probability=1.0)  # both hips in view
    assert plain.truth["generator"]["parameters"]["hip_replacements"] == []
    assert replaced.truth["generator"]["parameters"]["hip_replacements"] == ["left", "right"]
    assert not (plain.ct.hu > METAL_THRESHOLD_HU).any()
    metal = replaced.ct.hu > METAL_THRESHOLD_HU
    holders = {"hip_left", "hip_right", "femur_left", "femur_right"}
    in_metal = replaced.labels.labels[metal]
    assert set(np.unique(in_metal[in_metal > 0]).tolist()) == {LABEL_IDS[name] for name in holders}
    assert np.count_nonzero(in_metal == 0) < 0.005 * in_metal.size  # a few edge voxels a streak brightens
    grid = replaced.labels.grid
    for side, hip in replaced.truth["hips"].items():  # the native head is resected; a smaller ball replaces it
        center = np.asarray(hip["femoral_head_center_lps_mm"])
        femur = grid.index_to_lps(np.argwhere(replaced.labels.labels == LABEL_IDS[f"femur_{side}"]))
        head_top = femur[femur[:, 2] > center[2] + 5]
        assert np.linalg.norm(head_top - center, axis=1).min() < HEAD_DIAMETER_MM[1] / 2 + max(grid.spacing_mm)
        assert np.linalg.norm(head_top - center, axis=1).max() < hip["femoral_head_radius_mm"] - 1.0
    metal_slices = np.flatnonzero(metal.any(axis=(0, 1)))
    soft = (plain.ct.hu > -200) & (plain.ct.hu < 100) & (plain.labels.labels == 0)
    change = np.abs(replaced.ct.hu.astype(float) - plain.ct.hu)
    assert np.percentile(change[:, :, metal_slices][soft[:, :, metal_slices]], 90) > 20  # streaks
    top = slice(metal_slices.max() + 5, None)
    assert np.array_equal(plain.ct.hu[:, :, top], replaced.ct.hu[:, :, top])
    assert plain.truth["vertebrae"] == replaced.truth["vertebrae"]


@pytest.mark.parametrize("seed", [1, 4])
def test_the_metal_sinogram_agrees_with_skimages_radon_on_an_implants_slices(seed):
    metal = make_phantom(seed, hip_replacement_probability=1.0).ct.hu > METAL_THRESHOLD_HU
    side, angles = max(metal.shape[:2]), np.linspace(0.0, 180.0, 90, endpoint=False)
    slices = np.flatnonzero(metal.any(axis=(0, 1)))
    assert slices.size > 10
    for k in slices[::5]:
        square = np.zeros((side, side))
        square[: metal.shape[0], : metal.shape[1]] = metal[:, :, k]
        reference = radon(square, angles, circle=False)
        fast = metal_sinogram(metal[:, :, k], side, angles)
        assert fast.shape == reference.shape
        assert np.abs(fast - reference).sum() < 0.05 * reference.sum()


def test_a_hemiarthroplasty_is_a_metal_head_as_large_as_the_native_one_held_by_the_femur_with_no_cup():
    phantom = make_phantom(4, hip_replacement_probability=1.0)
    hips = phantom.truth["hips"]
    assert (hips["left"]["replacement"], hips["right"]["replacement"]) == ("total", "hemi")
    metal = phantom.ct.hu > METAL_THRESHOLD_HU
    holders = set(np.unique(phantom.labels.labels[metal]).tolist())
    assert LABEL_IDS["hip_left"] in holders and LABEL_IDS["hip_right"] not in holders
    center, radius = np.asarray(hips["right"]["femoral_head_center_lps_mm"]), hips["right"]["femoral_head_radius_mm"]
    points = phantom.ct.grid.index_to_lps(np.argwhere(metal))
    head_top = points[points[:, 2] > center[2] + 5]
    reach = np.linalg.norm(head_top - center, axis=1)
    near = reach[reach < radius + 10]
    spacing = max(phantom.ct.grid.spacing_mm)
    assert radius - spacing < near.max() < radius + spacing  # not the 14-18 mm ball of a total replacement


def test_a_fixed_hip_fracture_keeps_the_native_head_and_its_metal_is_femur_up_to_the_head():
    tall = {"shape": (112, 112, 150), "spacing_mm": (3.0, 3.0, 3.0)}  # down the femoral shafts
    plain, fixed = make_phantom(4, **tall), make_phantom(4, hip_fixation_probability=1.0, **tall)
    assert fixed.truth["generator"]["parameters"]["hip_fixations"] == ["left", "right"]
    kinds = {side: hip["fixation"] for side, hip in fixed.truth["hips"].items()}
    assert kinds == {"left": "cannulated screws", "right": "sliding hip screw"} and set(kinds.values()) < set(FIXATIONS)
    metal = np.argwhere(fixed.ct.hu > METAL_THRESHOLD_HU)
    grid = fixed.labels.grid
    for side, hip in fixed.truth["hips"].items():
        femur_id = LABEL_IDS[f"femur_{side}"]
        native = plain.labels.labels == femur_id
        assert not (native & (fixed.labels.labels != femur_id)).any()  # the head is kept, the metal is femur
        center, radius = np.asarray(hip["femoral_head_center_lps_mm"]), hip["femoral_head_radius_mm"]
        side_metal = metal[(grid.index_to_lps(metal)[:, 0] - center[0]) * np.sign(center[0]) > 0]
        assert np.all(fixed.labels.labels[tuple(side_metal.T)] == femur_id)
        offsets = grid.index_to_lps(side_metal) - center
        assert 1.0 < np.linalg.norm(offsets, axis=1).min() < radius / 2  # up the neck into the head, not through it
        assert (offsets[:, 2].min() < -90.0) == (kinds[side] == "sliding hip screw")  # its plate runs down the shaft
    top = slice(metal[:, 2].max() + 5, None)
    assert np.array_equal(plain.ct.hu[:, :, top], fixed.ct.hu[:, :, top])
    assert plain.truth["vertebrae"] == fixed.truth["vertebrae"]


def test_a_smaller_labelled_share_labels_the_partial_volume_voxels_at_a_bones_edge():
    grid = Grid((24, 24, 24), (3.0, 3.0, 3.0), (-34.5, -34.5, -34.5))
    bone = [Paint(Sphere(np.zeros(3), 20.0), 1200.0, label=1)]
    centres = grid.index_to_lps(np.indices(grid.shape).reshape(3, -1).T).reshape(*grid.shape, 3)
    outside_mm = np.linalg.norm(centres, axis=-1) - 20.0
    hu_truth, truth = render(grid, bone, background_hu=0.0)
    hu_edges, edges = render(grid, bone, background_hu=0.0, labelled_share=0.25)
    np.testing.assert_array_equal(hu_edges, hu_truth)
    np.testing.assert_array_equal(truth == 1, outside_mm <= 0)
    np.testing.assert_array_equal(edges == 1, outside_mm <= 0.25 * 3.0)  # a quarter of the 3 mm ramp outside
    assert (edges == 1).sum() > 1.1 * (truth == 1).sum()
    hu_next_to_bone = hu_truth[ndimage.binary_dilation(truth == 1) & (truth == 0)].mean()
    hu_next_to_edges = hu_edges[ndimage.binary_dilation(edges == 1) & (edges == 0)].mean()
    assert hu_next_to_edges < 0.5 * hu_next_to_bone


SACRUM = {"sacrum_length_mm": 110.0, "sacral_bend_mm": 20.0, "coccyx_length_mm": 40.0}
AURICULAR_SACRUM = SACRUM | {"auricular_height_mm": 60.0, "interauricular_half_width_mm": 50.0,
                             "sacral_apex_half_depth_mm": 4.0, "sacral_sweep_deg": 20.0}


def _sacrum_points(params: dict) -> np.ndarray:
    """Points on a 2 mm lattice inside the sacrum, in its frame: left, posterior, up; S1 endplate centre at 0."""
    from recon.phantom.pelvis import _sacral_parts, _sacral_solid

    points = np.stack(np.meshgrid(*[np.arange(-79.5, 80.0, 2.0)] * 2 + [np.arange(-199.5, 0.0, 2.0)],
                                  indexing="ij"), axis=-1).reshape(-1, 3)
    upper, apex, canal = _sacral_parts(np.zeros(3), np.eye(3), params)
    return points[_sacral_solid(upper + apex, canal).sdf(points) <= 0]


def test_the_coccyx_carries_the_sacrum_on_below_its_apex_curving_forward():
    sacrum = _sacrum_points(SACRUM)
    apex = np.array([0.0, 24.0 - 20.0, -110.0])  # where the sacral curve ends (bent 20 mm forward)
    tail = sacrum[sacrum[:, 2] < apex[2] - 10.0]
    assert sacrum[:, 2].min() < apex[2] - 20.0
    assert tail[:, 1].mean() < apex[1] - 5.0  # in front of the apex
    assert np.ptp(tail[:, 0]) < 20.0  # narrow


@pytest.mark.parametrize("sacral_slope_deg", [20.0, 40.0, 60.0])
def test_the_sacrum_bends_to_end_about_level_with_the_hip_centres_whatever_its_slope(sacral_slope_deg):
    from recon.phantom.pelvis import _sacral_bend
    from recon.phantom.shapes import rotation_about

    params = {"sacrum_length_mm": 110.0, "coccyx_length_mm": 30.0, "sacral_apex_height_mm": 0.0}
    slope, s1_height_mm = np.radians(sacral_slope_deg), 110.0
    sacrum = _sacrum_points(params | {"sacral_bend_mm": _sacral_bend(params, s1_height_mm, slope)})
    heights = s1_height_mm + sacrum @ rotation_about([1, 0, 0], slope)[2]  # above the hip joint centres
    assert -35.0 < heights.min() < -5.0  # the apex about level with them, the coccyx below


def test_the_sacrum_lies_under_the_skin_and_fat_of_the_buttocks_even_where_it_runs_far_back():
    phantom = make_phantom(3, shape=(96, 96, 100), spacing_mm=(4.0, 4.0, 4.0))  # sacral slope 64 degrees
    sacrum = phantom.labels.labels == LABEL_IDS["sacrum"]
    air = phantom.ct.hu < -500.0
    air_behind = np.zeros_like(air)
    for voxels in (1, 2):  # up to 8 mm behind (index axis 1 points posterior)
        air_behind[:, :-voxels] |= air[:, voxels:]
    assert sacrum.sum() > 1000 and not (sacrum & air_behind).any()


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_the_iliac_wing_thins_in_its_middle_to_the_fossa_and_thickens_again_around_it(side):
    from recon.phantom.pelvis import ILIAC_FOSSA_UP_MM, _iliac_fossa
    from recon.phantom.shapes import Difference, Ellipsoid, rotation_about

    frame = rotation_about([0, 0, 1], side * 0.4) @ rotation_about([0, 1, 0], side * 0.35)
    radii, center = np.array([5.0, 72.0, 62.0]), np.array([side * 120.0, 30.0, 40.0])
    plain = Ellipsoid(center, radii, frame)
    wing = Difference(plain, _iliac_fossa(center, radii, frame, side, 1.5))

    def thickness(shape, up_mm):  # the extent along the wing's first axis, in 0.05 mm steps, through the point
        line = center + frame[:, 2] * up_mm + np.outer(np.arange(-8.0, 8.0, 0.05), frame[:, 0])
        inside = line[shape.sdf(line) <= 0] @ (side * frame[:, 0])
        return np.ptp(inside), inside.max()

    fossa, outer_face = thickness(wing, ILIAC_FOSSA_UP_MM)
    assert fossa == pytest.approx(1.5, abs=0.15)
    assert outer_face > radii[0] * 0.9  # the plate left is the wing's outer face: the hollow faces the body
    assert fossa + 1.0 < thickness(wing, ILIAC_FOSSA_UP_MM - 20.0)[0] < thickness(plain, ILIAC_FOSSA_UP_MM - 20.0)[0]
    assert thickness(wing, ILIAC_FOSSA_UP_MM - 45.0) == thickness(plain, ILIAC_FOSSA_UP_MM - 45.0)  # beyond its reach


def test_an_auricular_sacrum_keeps_its_width_down_the_auricular_surface_then_narrows_to_a_plate_concave_in_front():
    narrowing, auricular = _sacrum_points(SACRUM), _sacrum_points(AURICULAR_SACRUM)

    def band(points, depth_mm):
        return points[np.abs(points[:, 2] + depth_mm) < 2.0]

    assert np.ptp(band(auricular, 50)[:, 0]) > 0.9 * 2 * 50.0 > np.ptp(band(narrowing, 50)[:, 0]) + 20.0
    for depth_mm in (70, 85, 100):  # below the auricular surface: narrowing, still wider than the older shape
        assert np.ptp(band(narrowing, depth_mm)[:, 0]) < np.ptp(band(auricular, depth_mm)[:, 0]) < 2 * 50.0
    lower = band(auricular, 70)
    wings, middle = lower[np.abs(lower[:, 0]) > 20.0], lower[np.abs(lower[:, 0]) < 8.0]
    assert wings[:, 1].mean() < middle[:, 1].mean() - 5.0  # the wings lie forward: concave in front
    assert np.ptp(band(auricular, 85)[np.abs(band(auricular, 85)[:, 0]) > 20.0][:, 1]) <= 10.0  # a thin plate
    assert np.array_equal(narrowing, _sacrum_points(SACRUM | {"sacral_sweep_deg": 20.0}))  # needs its height


def test_make_phantom_draws_an_auricular_sacrum_with_its_probability_and_leaves_the_spine_as_it_was():
    grid = {"shape": (64, 64, 80), "spacing_mm": (4.0, 4.0, 4.0)}
    plain, auricular = make_phantom(7, **grid), make_phantom(7, auricular_sacrum_probability=1.0, **grid)
    drawn = auricular.truth["generator"]["parameters"]["pelvis"]
    assert 50.0 <= drawn["auricular_height_mm"] <= 72.0 and "auricular_height_mm" not in (
        plain.truth["generator"]["parameters"]["pelvis"])
    sacrum = LABEL_IDS["sacrum"]
    assert (auricular.labels.labels == sacrum).sum() > 1.05 * (plain.labels.labels == sacrum).sum()
    assert plain.truth["vertebrae"] == auricular.truth["vertebrae"]
    assert np.array_equal(plain.labels.labels == LABEL_IDS["vertebrae_L3"],
                          auricular.labels.labels == LABEL_IDS["vertebrae_L3"])


def test_a_faint_sacral_apex_keeps_the_sacrums_labels_and_only_part_of_its_contrast_below_s3():
    grid = {"shape": (64, 64, 80), "spacing_mm": (3.0, 3.0, 3.0)}
    plain, faint = make_phantom(7, **grid), make_phantom(7, faint_sacral_apex_probability=1.0, **grid)
    share = faint.truth["generator"]["parameters"]["pelvis"]["sacral_apex_contrast"]
    assert 0.05 <= share <= 0.5 and "sacral_apex_contrast" not in plain.truth["generator"]["parameters"]["pelvis"]
    assert np.array_equal(plain.labels.labels, faint.labels.labels)
    sacrum = plain.labels.labels == LABEL_IDS["sacrum"]
    slices = np.flatnonzero(sacrum.any(axis=(0, 1)))
    bottom, top = sacrum.copy(), sacrum.copy()
    bottom[..., slices[0] + len(slices) // 4:] = False  # the lowest quarter: coccyx and apex
    top[..., : slices[-1] - len(slices) // 4] = False  # the highest: S1
    muscle = faint.truth["generator"]["parameters"]["tissue_hu"]["muscle"]
    brightest = [np.percentile(phantom.ct.hu[bottom], 95) - muscle for phantom in (plain, faint)]
    assert brightest[1] < (share + 0.25) * brightest[0]  # blur mixes in the tissue around it
    assert np.allclose(plain.ct.hu[top], faint.ct.hu[top])


def test_alar_voids_fill_both_lateral_masses_of_the_sacrum_with_fat_and_keep_its_labels():
    from scipy import ndimage

    grid = {"shape": (64, 64, 80), "spacing_mm": (3.0, 3.0, 3.0)}
    plain, voids = make_phantom(7, **grid), make_phantom(7, alar_void_probability=1.0, **grid)
    assert "alar_void_hu" in voids.truth["generator"]["parameters"]["pelvis"]
    assert np.array_equal(plain.labels.labels, voids.labels.labels)
    sacrum = plain.labels.labels == LABEL_IDS["sacrum"]
    darker = plain.ct.hu - voids.ct.hu > 50.0
    assert darker.sum() > 20 and not (darker & ~ndimage.binary_dilation(sacrum, iterations=2)).any()
    midline = np.median(np.nonzero(sacrum)[0])
    sides = np.nonzero(darker)[0] - midline
    assert (sides < -3).sum() > 5 and (sides > 3).sum() > 5  # both lateral masses, not the body between them


def test_a_sacral_canal_runs_roofed_behind_the_sacral_bodies_holding_fat_and_only_the_sacrum_changes():
    grid = {"shape": (64, 64, 80), "spacing_mm": (3.0, 3.0, 3.0)}
    plain, canal = make_phantom(7, **grid), make_phantom(7, sacral_canal_probability=1.0, **grid)
    drawn = canal.truth["generator"]["parameters"]["pelvis"]
    sacral = (plain.labels.labels == LABEL_IDS["sacrum"]) | (canal.labels.labels == LABEL_IDS["sacrum"])
    assert np.array_equal(plain.labels.labels[~sacral], canal.labels.labels[~sacral])
    enclosed = [_enclosed_by_sacrum(phantom.labels.labels) for phantom in (plain, canal)]
    assert enclosed[1].sum() > 30 > enclosed[0].sum()
    muscle = canal.truth["generator"]["parameters"]["tissue_hu"]["muscle"]
    assert np.median(canal.ct.hu[enclosed[1]]) < (drawn["sacral_canal_hu"] + muscle) / 2


def _enclosed_by_sacrum(labels: np.ndarray) -> np.ndarray:
    """Voxels the sacrum's label rings round in an axial slice."""
    sacrum = labels == LABEL_IDS["sacrum"]
    filled = np.stack([ndimage.binary_fill_holes(sacrum[:, :, z]) for z in range(sacrum.shape[2])], axis=2)
    return filled & ~sacrum


def test_a_hip_joint_space_range_changes_only_the_joint_space_and_a_closed_joint_lets_the_acetabulum_meet_the_head():
    from recon.phantom.morphometry import PELVIS_RANGES

    grid = {"shape": (60, 46, 90), "spacing_mm": (5.0, 5.0, 5.0)}  # both hips, wherever the grid centres
    plain = make_phantom(7, **grid)
    same = make_phantom(7, hip_joint_space_mm=PELVIS_RANGES["joint_space_mm"], **grid)
    closed = make_phantom(7, hip_joint_space_mm=(0.0, 0.0), **grid)
    assert np.array_equal(plain.ct.hu, same.ct.hu) and np.array_equal(plain.labels.labels, same.labels.labels)
    drawn = [phantom.truth["generator"]["parameters"]["pelvis"] for phantom in (plain, closed)]
    assert drawn[1].pop("joint_space_mm") == 0.0 and drawn[0].pop("joint_space_mm") >= 1.5
    assert drawn[0] == drawn[1]
    for side in ("left", "right"):
        hip = closed.truth["hips"][side]
        assert hip["acetabulum_radius_mm"] == hip["femoral_head_radius_mm"]
        assert _touching(closed.labels.labels, side) > 2 * _touching(plain.labels.labels, side) > 0


def test_a_raised_iliac_crest_reaches_that_much_higher_and_changes_only_the_hip_bones_above_the_acetabulum():
    grid = {"shape": (60, 46, 90), "spacing_mm": (5.0, 5.0, 5.0)}
    plain, raised = make_phantom(7, **grid), make_phantom(7, iliac_crest_raise_mm=(25.0, 25.0), **grid)
    hips = [np.isin(phantom.labels.labels, [LABEL_IDS["hip_left"], LABEL_IDS["hip_right"]])
            for phantom in (plain, raised)]
    tops = [np.nonzero(hip.any(axis=(0, 1)))[0].max() * grid["spacing_mm"][2] for hip in hips]
    assert 20.0 <= tops[1] - tops[0] <= 30.0
    changed = plain.labels.labels != raised.labels.labels
    assert _labels_where(changed, plain, raised) <= {0, LABEL_IDS["hip_left"], LABEL_IDS["hip_right"]}
    centres = [raised.truth["hips"][side]["femoral_head_center_lps_mm"][2] for side in ("left", "right")]
    lowest_change = raised.labels.grid.index_to_lps(np.argwhere(changed))[:, 2].min()
    assert lowest_change > np.mean(centres)  # the wing grows above the acetabulum, not into it


def test_a_raised_posterior_ilium_moves_up_by_that_much_and_only_the_hip_bones_change():
    grid = {"shape": (60, 46, 90), "spacing_mm": (5.0, 5.0, 5.0)}
    plain, raised = make_phantom(7, **grid), make_phantom(7, posterior_ilium_raise_mm=(20.0, 20.0), **grid)
    hip_ids = [LABEL_IDS["hip_left"], LABEL_IDS["hip_right"]]
    hips = [np.isin(phantom.labels.labels, hip_ids) for phantom in (plain, raised)]
    assert _labels_where(plain.labels.labels != raised.labels.labels, plain, raised) <= {0, *hip_ids}
    gained, lost = (np.argwhere(a & ~b)[:, 2].mean() * grid["spacing_mm"][2] for a, b in ((hips[1], hips[0]),
                                                                                           (hips[0], hips[1])))
    assert 10.0 <= gained - lost <= 45.0


def _labels_where(mask: np.ndarray, *phantoms) -> set[int]:
    """The label ids any of ``phantoms`` has inside ``mask``."""
    return set().union(*(np.unique(phantom.labels.labels[mask]).tolist() for phantom in phantoms))


def _touching(labels: np.ndarray, side: str) -> int:
    """Voxel faces where the hip bone's label meets the femur's."""
    hip, femur = (labels == LABEL_IDS[f"{bone}_{side}"] for bone in ("hip", "femur"))
    return sum(int((np.moveaxis(a, axis, 0)[:-1] & np.moveaxis(b, axis, 0)[1:]).sum())
               for axis in range(3) for a, b in ((hip, femur), (femur, hip)))


def test_an_inferior_articular_process_runs_down_the_superior_one_below_across_the_joint_space_at_its_angle():
    from recon.phantom.morphometry import draw_vertebra
    from recon.phantom.spine import (INFERIOR_PROCESS_RADIUS_MM, SUPERIOR_PROCESS_RADIUS_MM, _vertebra)

    lower_dims, upper_dims = (draw_vertebra(np.random.default_rng(0), level, 0.5) for level in ("L4", "L3"))
    lower = _vertebra("L4", np.zeros(3), np.eye(3), lower_dims, np.random.default_rng(1))
    upper_center = np.array([0.0, 0.0, (lower_dims["body_height"] + upper_dims["body_height"]) / 2 + 10.0])
    joint = {"below": lower, "angle_deg": 40.0, "space_mm": 2.0, "lamina_drop_mm": 0.0}
    apart, joined = (_vertebra("L3", upper_center, np.eye(3), upper_dims, np.random.default_rng(2), facets)
                     for facets in (None, joint))
    base, tip = lower.superior_processes["left"]
    along = base + np.linspace(0.35, 0.95, 13)[:, None] * (tip - base)  # the superior process's axis
    behind_medial = (SUPERIOR_PROCESS_RADIUS_MM + INFERIOR_PROCESS_RADIUS_MM + 2.0) * np.array(
        [-np.cos(np.radians(40.0)), np.sin(np.radians(40.0)), 0.0])
    assert np.all(lower.shape.sdf(along) < 0)
    # the upper vertebra's surface is the joint space away from the superior process all along it ...
    assert np.allclose(joined.shape.sdf(along), SUPERIOR_PROCESS_RADIUS_MM + 2.0, atol=0.2)
    # ... its inferior process's axis behind and medial to it at the joint's angle; without the joint, far off
    assert np.all(joined.shape.sdf(along + behind_medial) < -INFERIOR_PROCESS_RADIUS_MM + 0.2)
    assert np.all(apart.shape.sdf(along + behind_medial) > 0)
    assert joined.truth == apart.truth


def test_make_phantom_draws_facet_joints_with_their_probability_and_changes_only_the_vertebrae():
    grid = {"shape": (64, 64, 80), "spacing_mm": (4.0, 4.0, 4.0)}
    plain, joined = make_phantom(7, **grid), make_phantom(7, facet_joint_probability=1.0, **grid)
    assert (plain.truth["generator"]["parameters"]["facet_joints"],
            joined.truth["generator"]["parameters"]["facet_joints"]) == (False, True)
    assert plain.truth["vertebrae"] == joined.truth["vertebrae"]
    vertebrae = np.isin(plain.labels.labels, [LABEL_IDS[f"vertebrae_{level}"] for level in ("L1", "L2", "L3", "L4")])
    assert not np.array_equal(plain.labels.labels[vertebrae], joined.labels.labels[vertebrae])
    for bone in ("sacrum", "hip_left", "femur_right"):
        assert np.array_equal(plain.labels.labels == LABEL_IDS[bone], joined.labels.labels == LABEL_IDS[bone])


def test_with_facet_joints_the_laminae_reach_down_to_the_disc_below_and_keep_their_top_edge():
    from recon.phantom.morphometry import draw_vertebra
    from recon.phantom.spine import _facets, _vertebra

    dims = draw_vertebra(np.random.default_rng(0), "L3", 0.5)
    facets = _facets(np.random.default_rng(3), "L3", dims, None)
    apart, dropped = (_vertebra("L3", np.zeros(3), np.eye(3), dims, np.random.default_rng(2), f) for f in (None, facets))
    pedicle_length = np.random.default_rng(2).uniform(14, 20)  # _vertebra's first draw
    z = np.arange(-40.0, 40.0, 0.05)
    lamina_end = dims["body_depth"] / 2 + pedicle_length + 10  # where the laminae meet the spinous process
    column = np.column_stack([np.full_like(z, 4.0), np.full_like(z, lamina_end - 1.0), z])  # through the left one

    def edges(vertebra):
        inside = z[vertebra.shape.sdf(column) <= 0]
        return inside.min(), inside.max()

    (low, high), (dropped_low, dropped_high) = edges(apart), edges(dropped)
    assert facets["lamina_drop_mm"] > 0 and dropped_high == pytest.approx(high, abs=0.1)
    assert dropped_low == pytest.approx(low - facets["lamina_drop_mm"], abs=0.1)
    below_body = -dropped_low - dims["body_height"] / 2
    assert 0.2 * dims["disc_below_height"] - 0.1 <= below_body <= 0.8 * dims["disc_below_height"] + 0.1
