"""Pedicle-screw planning: grading on analytic bone, sizes from the catalogue, phantoms against their truth,
real vertebrae, and the plan files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from recon.cli import main
from recon.errors import InputError
from recon.io.labels import read_label_map
from recon.plan.accuracy import screw_errors, summarize
from recon.plan.implants import ScrewCatalogue, load_screw_catalogue
from recon.plan.safety import gertzbein_robbins_grade, screw_safety, segment_distance
from recon.plan.pedicle import Pedicle, _first_axis, _outline, _widest_corridor
from recon.plan.spine import Screw, SpinePlan, _fitting_screw, _Trajectory, _unusual_angles, plan_spine
from recon.plan.vertebra import VertebraBone
from recon.segmentation.model import load_model
from tests.conftest import shared_path

SPACING = 0.75


def slab_bone(wall_x_mm: float) -> VertebraBone:
    """Analytic bone: everything lateral (x > wall) of a flat medial wall that lies midway between voxel
    centres, in a frame equal to LPS."""
    corner = np.array([-30.0, -60.0, -20.0])
    shape = (81, 121, 55)
    x = corner[0] + SPACING * np.arange(shape[0])
    occupancy = np.broadcast_to((x > wall_x_mm)[:, None, None], shape).astype(np.float32)
    return VertebraBone(np.zeros(3), np.eye(3), corner, SPACING, np.ascontiguousarray(occupancy),
                        np.array([0.0, 20.0]), 10.0)


@pytest.mark.parametrize(("protrusion_mm", "grade"), [(-1.0, "A"), (1.9, "B"), (2.0, "C"), (3.9, "C"), (4.0, "D"),
                                                      (5.9, "D"), (6.0, "E")])
def test_breach_depth_and_grade_on_an_analytic_wall(protrusion_mm, grade):
    wall = -30.0 + SPACING * 40.5  # midway between two voxel centres
    radius = 3.0
    entry = np.array([wall + radius - protrusion_mm, 20.0, 0.0])
    distance = slab_bone(wall).distance_field(np.array([-30.0, -60.0, -20.0]), np.array([30.0, 30.0, 20.0]))
    safety = screw_safety(distance, entry, np.array([0.0, -1.0, 0.0]), 40.0, 2 * radius, side=1.0)
    assert safety.grade == grade
    if protrusion_mm > 0:
        assert safety.breach_mm == pytest.approx(protrusion_mm, abs=0.02)
        assert safety.breach_direction == "medial"
        assert safety.min_cortex_distance_mm == 0.0
    else:
        assert safety.breach_mm == 0.0
        assert safety.min_cortex_distance_mm == pytest.approx(-protrusion_mm, abs=0.02)


@pytest.mark.parametrize(("breach", "grade"), [(0.0, "A"), (1.99, "B"), (2.0, "C"), (3.99, "C"), (4.0, "D"),
                                               (5.99, "D"), (6.0, "E"), (12.0, "E")])
def test_gertzbein_robbins_limits(breach, grade):
    assert gertzbein_robbins_grade(breach) == grade


def test_a_screw_that_would_breach_is_downsized_to_one_that_stays_in_bone():
    # a round pedicle 10 mm across along y, the trajectory 1 mm off its axis: 8.5 mm breaches by 0.25 mm,
    # 8.0 just touches, 7.5 stays 0.25 mm inside
    corner, shape = np.array([-15.0, -60.0, -15.0]), (41, 121, 41)
    x = corner[0] + SPACING * np.arange(shape[0])
    z = corner[2] + SPACING * np.arange(shape[2])
    tube = (np.hypot(x[:, None], z[None, :]) < 5.0)[:, None, :]
    bone = VertebraBone(np.zeros(3), np.eye(3), corner, SPACING, np.ascontiguousarray(
        np.broadcast_to(tube, shape).astype(np.float32)), np.array([0.0, 20.0]), 10.0)
    axis, entry = np.array([0.0, -1.0, 0.0]), np.array([1.0, 20.0, 0.0])
    pedicle = Pedicle(entry + 10 * axis, axis, 10.0, 10.0, 10.0)
    trajectory = _Trajectory(pedicle, entry, 0.0, bone.distance_field(corner, -corner))
    catalogue = ScrewCatalogue((6.5, 7.5, 8.5), (30.0, 40.0), "test")
    screw = _fitting_screw(bone, "vertebrae_L4", "left", trajectory, catalogue, 8.5, 70.0)
    assert (screw.diameter_mm, screw.length_mm, screw.grade) == (7.5, 40.0, "A")
    assert 0.1 < screw.min_cortex_distance_mm < 0.4
    plain = _fitting_screw(bone, "vertebrae_L4", "left", trajectory, catalogue, 6.5, 70.0)
    assert plain.diameter_mm == 6.5  # never larger than the rule allows


@pytest.mark.parametrize(("transverse", "sagittal", "unusual"), [
    (12.0, 5.0, False), (35.0, -10.0, False), (-3.0, 0.0, False),  # lumbar pedicles converge, L5 the most
    (-20.0, 0.0, True), (50.0, 0.0, True), (10.0, 30.0, True),  # diverging, too convergent, too steep
])
def test_angles_no_lumbar_pedicle_has_are_flagged(transverse, sagittal, unusual):
    screw = Screw("vertebrae_L3", "left", "planned", transverse_angle_deg=transverse, sagittal_angle_deg=sagittal)
    assert _unusual_angles(screw) == unusual


def test_segment_distance_on_hand_computed_cases():
    origin = np.zeros(3)
    assert segment_distance(origin, np.array([10.0, 0, 0]), np.array([5.0, 3, 0]), np.array([5.0, 3, 8])) == 3.0
    assert segment_distance(origin, np.array([10.0, 0, 0]), np.array([12.0, 0, 0]), np.array([20.0, 0, 0])) == 2.0
    crossing = segment_distance(np.array([0.0, -5, 0]), np.array([0.0, 5, 0]), np.array([-5.0, 0, 1]),
                                np.array([5.0, 0, 1]))
    assert crossing == pytest.approx(1.0)


def test_catalogue_rules_and_refusals(tmp_path):
    catalogue = load_screw_catalogue()
    assert catalogue.largest_diameter(0.8 * 9.0) == 7.0
    assert catalogue.largest_diameter(3.9) is None
    assert catalogue.longest_length(47.0) == 45
    own = tmp_path / "vendor.json"
    own.write_text(json.dumps({"diameters_mm": [5.5, 6.5], "lengths_mm": [40, 50]}))
    assert load_screw_catalogue(own) == ScrewCatalogue((5.5, 6.5), (40.0, 50.0), "vendor.json")
    own.write_text(json.dumps({"diameters_mm": [5.5, -1], "lengths_mm": [40]}))
    with pytest.raises(InputError, match="vendor.json.*diameters_mm"):
        load_screw_catalogue(own)


@pytest.fixture(scope="module")
def phantom_rows():
    return [row for seed in (970_000_000, 970_000_001) for row in screw_errors(seed)]


def test_phantom_screws_follow_the_true_pedicles(phantom_rows):
    summary = summarize(phantom_rows)
    # measured 2026-11-22 on these two phantoms: 18 planned, max 1.1 degrees, max 0.09 mm from the isthmus
    # centre, widths within 0.21 mm, 17 of 18 diameters as the rule applied to the true width, all grade A
    assert summary["planned"] >= 0.9 * (summary["screws"] - summary["cut_off_by_field_of_view"])
    assert summary["angle_deg_max"] <= 2.0
    assert summary["isthmus_distance_mm_max"] <= 0.5
    assert summary["grade_a"] == 1.0
    assert summary["width_error_mm_abs_max"] <= 0.3
    assert summary["diameter_as_rule"] >= 17 / 18


def test_screws_planned_on_the_shipped_networks_labels_follow_the_true_pedicles():
    # what `recon run` plans on a phantom's CT; measured 2026-12-06 on these two: 16 of the 18 screws in view
    # planned (the second one's L4 label encloses no canal), 2.1 and 3.2 degrees from the true axis (medians),
    # 8.6 at most, every screw's line within 1.3 mm of the true isthmus centre
    rows = [row for seed in (970_000_000, 970_000_001) for row in screw_errors(seed, load_model(None))]
    summary = summarize(rows)
    assert summary["screws"] == 18 and summary["planned"] >= 15
    assert summary["angle_deg_median"] <= 4.0 and summary["angle_deg_max"] <= 12.0
    assert summary["within_1_5_mm"] >= 0.9
    assert summary["grade_a"] >= 0.9


def test_a_pedicle_wider_than_tall_and_short_behind_its_isthmus_is_measured_whole():
    # this L5 (17.6 mm wide, 15.5 tall) was once measured 10.6 mm: the isthmus is near the back of the
    # pedicle, so the narrowest depth over the stretch made every chord look as if it ran into a process
    rows = [row for row in screw_errors(970_000_003) if row["screw"].startswith("L5")]
    assert [row["status"] for row in rows] == ["planned", "planned"]
    assert all(abs(row["width_mm"] - row["true_width_mm"]) <= 0.3 for row in rows)


def test_a_narrow_pedicle_is_not_plannable_and_says_why(phantom_rows):
    big_screws = ScrewCatalogue((12.0,), (40.0,), "test")
    from recon.phantom import make_phantom
    from recon.plan.accuracy import GRID_SHAPE, GRID_SPACING_MM

    phantom = make_phantom(970_000_000, shape=GRID_SHAPE, spacing_mm=GRID_SPACING_MM)
    plan = plan_spine(phantom.labels, catalogue=big_screws)
    narrow = [s for s in plan.screws if s.reason and "narrower than the smallest screw" in s.reason]
    assert narrow and all(s.status == "not_plannable" for s in narrow)
    assert all("field of view" in s.reason for s in plan.screws
               if s.status == "not_plannable" and s not in narrow and s.reason)


def test_real_l3_screws_cross_the_arch_at_the_isthmus():
    folder = shared_path("real/tptbox-l3")
    labels = read_label_map(folder / "sub-ct_seg-vert_label-22_msk.nii.gz", "verse")
    regions = read_label_map(folder / "sub-ct_seg-subreg_label-22_msk.nii.gz")
    plan = plan_spine(labels)
    l3 = [s for s in plan.screws if s.vertebra == "vertebrae_L3"]
    assert [s.status for s in l3] == ["planned", "planned"]
    for screw in l3:
        index = np.rint(regions.grid.lps_to_index(np.asarray(screw.isthmus_center_lps_mm))).astype(int)
        assert regions.labels[tuple(index)] == 41  # the vertebral arch (lamina and pedicles)
        assert screw.grade in ("A", "B")
    cut = [s for s in plan.screws if s.vertebra in ("vertebrae_L2", "vertebrae_L4")]
    assert all(s.status == "not_plannable" and "field of view" in s.reason for s in cut)


def test_real_lumbar_spine_at_3_mm_holds_its_measured_figures():
    labels = read_label_map(shared_path("real/totalseg-example/reference_v1"))
    plan = plan_spine(labels)
    lumbar = [s for s in plan.screws if s.level.startswith("L")]
    planned = [s for s in lumbar if s.status == "planned"]
    # measured 2026-11-22: all 10 lumbar screws planned and grade A, L4 left (6 mm) and L5 right (7.5 mm)
    # thinner than the isthmus rule's 8.5 mm, each with its warning; the issue asks at least 90% grade A
    assert len(planned) == 10
    assert all(s.grade in ("A", "B") for s in planned)
    assert sum(s.grade == "A" for s in planned) >= 9
    rule = load_screw_catalogue().largest_diameter
    downsized = [s for s in planned if s.diameter_mm < rule(0.8 * s.isthmus_width_mm)]
    assert all(any(w.startswith(f"{s.title}: {s.diameter_mm:g} mm rather than") for w in plan.warnings)
               for s in downsized)
    sliver = [s for s in plan.screws if s.vertebra == "vertebrae_T11"]
    assert all("field of view" in s.reason for s in sliver)


def test_plan_spine_command_writes_plan_files(tmp_path, capsys):
    folder = shared_path("real/tptbox-l3")
    out = tmp_path / "plan"
    assert main(["plan", "spine", str(folder / "sub-ct_seg-vert_label-22_msk.nii.gz"), "--label-map", "verse",
                 "-o", str(out)]) == 0
    data = json.loads((out / "plan.json").read_text())
    assert (data["coordinate_system"], data["units"]) == ("LPS", "mm")
    plan = SpinePlan.from_json(data)
    assert len(plan.planned) == 2
    markups = json.loads((out / "plan.mrk.json").read_text())
    assert "markups-schema-v1.0" in markups["@schema"]
    lines = markups["markups"]
    assert [line["name"] for line in lines] == [s.title for s in plan.planned]
    assert all(line["type"] == "Line" and line["coordinateSystem"] == "LPS" for line in lines)
    assert lines[0]["controlPoints"][0]["position"] == plan.planned[0].entry_lps_mm
    header = (out / "screws.stl").read_bytes()[:80]
    assert b"SPACE=LPS" in header
    screws = trimesh.load(out / "screws.stl")
    assert screws.is_watertight
    rows = (out / "plan.csv").read_text().splitlines()
    assert rows[0].startswith("vertebra,side,status") and len(rows) == 1 + len(plan.screws)
    assert "L3 left" in capsys.readouterr().out


def test_plan_spine_refuses_labels_without_vertebrae(tmp_path, capsys):
    labels = shared_path("real/tptbox-l3") / "sub-ct_seg-vert_label-22_msk.nii.gz"
    assert main(["plan", "spine", str(labels), "-o", str(tmp_path / "out")]) == 1
    assert "no vertebra T1-L5" in capsys.readouterr().err


def test_a_pedicle_section_with_a_zero_chord_has_no_outline_rather_than_failing():
    # a zero chord (seen on a small phantom's segmentation) must leave that pedicle unplanned, not stop the
    # whole study (it did: argmax of an empty sequence)
    assert _outline(None, (np.zeros(3), 0.0, 6.0), np.array([0.0, -1.0, 0.0]), None) is None


def box_vertebra(canal_y_mm: float) -> VertebraBone:
    """Body, pedicles, lamina and articular pillars drawn as boxes, the canal's front at y = 0 and its centre
    found at ``canal_y_mm``."""
    corner = np.array([-30.0, -35.0, -20.0])
    x, y, z = (corner[:, None, None, None] + SPACING * np.indices((81, 87, 67))).astype(np.float32)

    def box(x_range, y_range, z_range):
        return ((x_range[0] <= np.abs(x)) & (np.abs(x) <= x_range[1]) & (y_range[0] <= y) & (y <= y_range[1])
                & (z_range[0] <= z) & (z <= z_range[1]))

    occupancy = (box((0, 20), (-30, 0), (0, 12)) | box((8, 14), (0, 24), (0, 5)) | box((0, 14), (18, 24), (0, 5))
                 | box((8, 14), (4, 14), (5, 25))).astype(np.float32)
    return VertebraBone(np.zeros(3), np.eye(3), corner, SPACING, occupancy, np.array([0.0, canal_y_mm]), 0.0)


@pytest.mark.parametrize("canal_y_mm", [10.0, 1.0])
def test_the_first_guess_sits_in_the_pedicle_not_in_the_articular_process_above_it(canal_y_mm):
    # on network labels at 3 mm a superior articular process often stands on the pedicle in the view from above;
    # the first guess once took the middle height of both, above the pedicle, and the corridor ran off steeply.
    # A canal centre 1 mm behind its front is what a real L5 gave, its canal hidden from above by its arch: the
    # two rows in front of it were once too few to look for a pedicle in
    bone = box_vertebra(canal_y_mm)
    for side in (1.0, -1.0):
        start, axis = _first_axis(bone, side)
        assert abs(start[2] - 2.5) <= 1.0 and 8.0 <= side * start[0] <= 14.0  # mid-pedicle
        assert axis @ [0.0, -1.0, 0.0] >= 0.99


def test_a_slightly_deeper_corridor_tilted_30_degrees_does_not_win_over_a_level_one():
    # a level tube 4 mm in radius and one 4.3 mm tilted 30 degrees down, crossing where the first guess is, both
    # leading into the body: at 3 mm such a tie is what a voxel more or less makes; without the tilt's cost the
    # corridor tilted 19 degrees
    corner = np.array([-10.0, -45.0, -30.0])
    x, y, z = (corner[:, None, None, None] + SPACING * np.indices((41, 101, 81))).astype(np.float32)
    start = np.array([11.0, 12.0, 0.0])

    def tube(direction, radius):
        relative = np.stack([x - start[0], y - start[1], z - start[2]], axis=-1)
        off_axis = np.linalg.norm(relative - (relative @ direction)[..., None] * direction, axis=-1)
        return (off_axis <= radius) & (-1 <= y) & (y <= 24)

    tilt = np.radians(30)
    body = (np.abs(x - 11) <= 10) & (-35 <= y) & (y <= 0) & (np.abs(z) <= 14)
    occupancy = body | tube(np.array([0.0, -1.0, 0.0]), 4.0) | tube(np.array([0.0, -np.cos(tilt), -np.sin(tilt)]), 4.3)
    bone = VertebraBone(np.zeros(3), np.eye(3), corner, SPACING, occupancy.astype(np.float32), np.zeros(2), 0.0)
    _, axis = _widest_corridor(bone.distance_field(start - 20, start + 20), start, np.array([0.0, -1.0, 0.0]))
    assert abs(np.degrees(np.arcsin(axis[2]))) <= 3.0
