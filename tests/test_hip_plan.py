"""Acetabular cup planning: angle conventions by hand, phantoms against their truth, a real pelvis, files."""

from __future__ import annotations

import json
from dataclasses import astuple
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from recon.cli import main
from recon.geometry import Grid, angle_between_deg
from recon.io.labels import read_label_map
from recon.phantom import make_phantom
from recon.plan import cup_angles
from recon.plan.accuracy import cup_errors
from recon.plan.hip import HipPlan, _comparison, plan_hip
from recon.plan.pelvis import PelvisFrame, frame_from_landmarks
from recon.segmentation.model import load_model
from recon.volume import LabelMap, Volume
from tests.conftest import shared_path

LATERAL, ANTERIOR, SUPERIOR = np.eye(3)
HIP_GRID = {"shape": (200, 150, 320), "spacing_mm": (1.5, 1.5, 1.5)}


def test_three_conventions_on_a_hand_computed_axis():
    axis = np.array([1.0, 1.0, -1.0]) / np.sqrt(3)  # equally lateral, anterior and inferior
    steep = np.degrees(np.arcsin(1 / np.sqrt(3)))  # 35.26 degrees
    frame = (LATERAL, ANTERIOR, SUPERIOR)
    assert astuple(cup_angles.radiographic(axis, *frame)) == pytest.approx((45.0, steep))
    assert astuple(cup_angles.operative(axis, *frame)) == pytest.approx((steep, 45.0))
    assert astuple(cup_angles.anatomical(axis, *frame)) == pytest.approx((90.0 - steep, 45.0))
    straight_out = cup_angles.radiographic(LATERAL, *frame)
    assert (straight_out.inclination_deg, straight_out.anteversion_deg) == (90.0, 0.0)
    straight_down = cup_angles.anatomical(-SUPERIOR, *frame)
    assert straight_down.inclination_deg == pytest.approx(0.0)


@settings(max_examples=50, deadline=None)
@given(st.floats(5, 80), st.floats(-30, 45))
def test_murray_relations_hold(inclination, anteversion):
    frame = (LATERAL, ANTERIOR, SUPERIOR)
    axis = cup_angles.axis_from_radiographic(inclination, anteversion, *frame)
    back = cup_angles.radiographic(axis, *frame)
    assert (back.inclination_deg, back.anteversion_deg) == pytest.approx((inclination, anteversion), abs=1e-9)
    ri, ra = np.radians(inclination), np.radians(anteversion)
    operative, anatomical = cup_angles.operative(axis, *frame), cup_angles.anatomical(axis, *frame)
    assert np.tan(np.radians(operative.anteversion_deg)) == pytest.approx(np.tan(ra) / np.cos(ri))
    assert np.sin(np.radians(operative.inclination_deg)) == pytest.approx(np.sin(ri) * np.cos(ra))
    assert np.tan(np.radians(anatomical.anteversion_deg)) == pytest.approx(np.tan(ra) / np.sin(ri))
    assert np.cos(np.radians(anatomical.inclination_deg)) == pytest.approx(np.cos(ri) * np.cos(ra))


@pytest.fixture(scope="module", params=[970_100_000, 970_100_001])
def phantom_plan(request):
    phantom = make_phantom(request.param, **HIP_GRID)
    return phantom, plan_hip(phantom.labels)


def test_phantom_heads_and_pelvic_plane_match_the_truth(phantom_plan):
    phantom, plan = phantom_plan
    truth_frame = frame_from_landmarks(phantom.truth["landmarks_lps_mm"])
    assert [cup.status for cup in plan.sides] == ["planned", "planned"]
    for cup in plan.sides:
        truth = phantom.truth["hips"][cup.side]
        assert np.linalg.norm(np.subtract(cup.femoral_head_center_lps_mm, truth["femoral_head_center_lps_mm"])) < 1.0
        assert abs(cup.femoral_head_radius_mm - truth["femoral_head_radius_mm"]) < 0.5
        assert abs(cup.acetabulum_radius_mm - truth["acetabulum_radius_mm"]) < 0.5
        ours = frame_from_landmarks(cup.app_landmarks_lps_mm)
        assert angle_between_deg(ours.anterior, truth_frame.anterior) < 2.0
        lateral = ours.left if cup.side == "left" else -ours.left
        back = cup_angles.radiographic(np.asarray(cup.cup_axis_lps), lateral, ours.anterior, ours.superior)
        assert back.inclination_deg == pytest.approx(40.0, abs=0.5)
        assert back.anteversion_deg == pytest.approx(15.0, abs=0.5)
        assert cup.cup_diameter_mm >= 2 * cup.acetabulum_radius_mm
        assert cup.coverage_pct > 50


def test_a_femur_label_grown_into_the_joint_space_gets_its_head_back_from_the_ct(phantom_plan):
    phantom, _ = phantom_plan
    labels, ids = phantom.labels, {name: index for index, name in phantom.labels.names.items()}
    grown = labels.labels.copy()
    for side in ("left", "right"):  # as a network's 3 mm label does: the femur takes the joint space
        femur = labels.labels == ids[f"femur_{side}"]
        grown[ndimage.binary_dilation(femur, iterations=2) & (labels.labels == 0)] = ids[f"femur_{side}"]
    grown = LabelMap(labels.grid, grown, labels.names)
    for on_labels, on_ct in zip(plan_hip(grown).sides, plan_hip(grown, ct=phantom.ct).sides):
        truth = phantom.truth["hips"][on_ct.side]
        assert on_labels.femoral_head_fitted_to == "label_surface"
        assert on_labels.femoral_head_radius_mm - truth["femoral_head_radius_mm"] > 1.5
        assert on_ct.femoral_head_fitted_to == "ct_edge"
        assert abs(on_ct.femoral_head_radius_mm - truth["femoral_head_radius_mm"]) < 0.5
        assert np.linalg.norm(np.subtract(on_ct.femoral_head_center_lps_mm,
                                          truth["femoral_head_center_lps_mm"])) < 0.5


@pytest.mark.parametrize("ct", ["flat", "noise"])
def test_a_ct_without_a_joint_space_leaves_the_head_to_the_labels(phantom_plan, ct):
    phantom, plan = phantom_plan
    hu = np.full(phantom.ct.hu.shape, 300.0)
    if ct == "noise":  # dips as deep as a joint space's, everywhere
        hu += np.random.default_rng(0).normal(0.0, 150.0, hu.shape)
    on_ct = plan_hip(phantom.labels, ct=Volume(phantom.ct.grid, hu.astype(np.int16)))
    for cup, label_cup in zip(on_ct.sides, plan.sides):
        assert cup.femoral_head_fitted_to == "label_surface"
        assert cup.femoral_head_center_lps_mm == label_cup.femoral_head_center_lps_mm


def test_heads_planned_on_the_shipped_networks_labels_are_fitted_to_the_ct():
    # what `recon run` plans on a phantom's CT; measured 2026-12-06 on this one: both heads fitted to the CT's
    # edge, 0.04 and 0.02 mm from the true centres and 0.3 mm too large (3.3 and 5.8 mm off, 3.5 and 4.3 mm too
    # large, on the network's labels alone)
    rows = cup_errors(970_100_001, load_model(None))
    assert [row["status"] for row in rows] == ["planned", "planned"]
    assert all(row["head_center_mm"] <= 0.5 and abs(row["head_radius_mm"]) <= 0.5 for row in rows)


def test_planning_one_side_and_medialising(phantom_plan):
    phantom, both = phantom_plan
    right = plan_hip(phantom.labels, side="right", medialise_mm=3.0, inclination_deg=60.0)
    assert [cup.side for cup in right.sides] == ["right"]
    assert right.sides[0].center_shift_mm == pytest.approx(3.0, abs=1e-3)
    moved = np.subtract(right.sides[0].cup_center_lps_mm, both.sides[1].cup_center_lps_mm)
    assert moved[0] == pytest.approx(3.0, abs=0.3)  # the right hip's medial side is patient left (+L)
    assert right.warnings and "Lewinnek" in right.warnings[0]


def test_missing_hip_bone_is_not_plannable_with_the_reason(phantom_plan):
    phantom, _ = phantom_plan
    labels = phantom.labels
    names = {index: name for index, name in labels.names.items() if name != "hip_right"}
    plan = plan_hip(LabelMap(labels.grid, labels.labels, names))
    assert all(cup.status == "not_plannable" and "missing" in cup.reason and "hip_right" in cup.reason
               for cup in plan.sides)


def test_a_hip_bone_label_without_its_wing_is_refused_rather_than_planned_on_a_wrong_pelvic_plane(phantom_plan):
    # on a network's labels of a phantom the right hip bone took the femoral head and the spine was found on
    # the pubis: the pelvic plane came out 32 degrees off and the left cup was planned 29 degrees off, unwarned
    phantom, _ = phantom_plan
    labels = phantom.labels
    hip = {name: index for index, name in labels.names.items()}["hip_right"]
    head = np.asarray(phantom.truth["hips"]["right"]["femoral_head_center_lps_mm"])
    cells = np.argwhere(labels.labels == hip)
    wingless = labels.labels.copy()
    wingless[tuple(cells[labels.grid.index_to_lps(cells)[:, 2] > head[2] + 20.0].T)] = 0
    plan = plan_hip(LabelMap(labels.grid, wingless, labels.names))
    assert all(cup.status == "not_plannable" and "spine and pubic tubercle" in cup.reason for cup in plan.sides)


def test_leg_length_is_left_out_where_the_femur_label_has_a_gap_at_the_lesser_trochanter():
    # a network's femur label can stop below the neck and go on lower down: the leg-length comparison, which
    # looks for the lesser trochanter 20-80 mm below the head, once crashed the whole plan on such a label
    grid = Grid((30, 10, 100), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    labels = np.zeros(grid.shape, np.uint8)
    for index, column in ((1, 20), (2, 5)):  # femur_left (patient left is +x), femur_right
        labels[column:column + 4, 3:7, 88:96] = index  # the head and neck, about z = 190 mm
        labels[column:column + 4, 3:7, 0:25] = index  # the shaft 140-190 mm below the head, nothing between
    heads = {side: (SimpleNamespace(center_lps_mm=np.array([x, 10.0, 190.0])), None)
             for side, x in (("left", 43.0), ("right", 13.0))}
    frame = PelvisFrame(np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]), {})
    comparison = _comparison(LabelMap(grid, labels, {1: "femur_left", 2: "femur_right"}),
                             {"femur_left": 1, "femur_right": 2}, heads, frame)
    assert "lesser trochanter" in comparison["reason"]


def test_real_pelvis_at_3_mm():
    labels = read_label_map(shared_path("real/totalseg-example/reference_v1"))
    plan = plan_hip(labels)
    assert [cup.status for cup in plan.sides] == ["planned", "planned"]
    for cup in plan.sides:
        assert 44 <= cup.cup_diameter_mm <= 64
        assert np.linalg.norm(np.subtract(cup.cup_center_lps_mm, cup.femoral_head_center_lps_mm)) < 5.0


def test_plan_hip_command_writes_its_section_markups_and_cups(tmp_path, capsys):
    labels = shared_path("real/totalseg-example/reference_v1")
    out = tmp_path / "plan"
    assert main(["plan", "hip", str(labels), "-o", str(out)]) == 0
    assert main(["plan", "spine", str(labels), "-o", str(out)]) == 0
    data = json.loads((out / "plan.json").read_text())
    assert {"hip", "screws"} <= set(data)  # the spine plan kept the hip section
    plan = HipPlan.from_json(data)
    assert len(plan.planned) == 2
    names = [markup["name"] for markup in json.loads((out / "plan.mrk.json").read_text())["markups"]]
    assert "anterior pelvic plane landmarks" in names and any(name.startswith("cup left") for name in names)
    cups = trimesh.load(out / "cups.stl")
    assert cups.is_watertight
    assert "cup" in capsys.readouterr().out
