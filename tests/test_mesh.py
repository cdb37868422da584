"""Bone meshes: analytic shapes on oblique anisotropic grids, orientation through files, real bones."""

import json

import numpy as np
import pytest
import slicerio
import trimesh
from scipy.spatial.transform import Rotation
from scipy.special import ellipeinc, ellipkinc

from recon.cli import main
from recon.errors import InputError
from recon.geometry import Grid
from recon.io.labels import read_label_map, write_label_map
from recon.io.mesh_files import LPS_MM_TO_GLTF_M, write_glb_scene, write_mesh, write_mesh_set
from recon.io.slicer import write_segmentation
from recon.mesh import mesh_labels
from recon.volume import LabelMap
from tests.conftest import shared_path

OBLIQUE = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
SPACING = (0.7, 0.9, 2.0)
CENTRE = np.array([5.0, -12.0, 40.0])
RADII = np.array([30.0, 25.0, 18.0])
AXES = Rotation.from_euler("zyx", [30, 10, -20], degrees=True).as_matrix()


def ellipsoid_area(a, b, c):
    """Exact surface area of an ellipsoid with semi-axes a >= b >= c (Legendre's elliptic-integral form)."""
    phi = np.arccos(c / a)
    k2 = (a**2 * (b**2 - c**2)) / (b**2 * (a**2 - c**2))
    return 2 * np.pi * c**2 + 2 * np.pi * a * b / np.sin(phi) * (
        ellipeinc(phi, k2) * np.sin(phi) ** 2 + ellipkinc(phi, k2) * np.cos(phi) ** 2)


def oblique_labels(shape=(120, 100, 40)):
    half = OBLIQUE @ (np.multiply(SPACING, np.subtract(shape, 1)) / 2)
    grid = Grid(shape, SPACING, CENTRE - half, OBLIQUE)
    lps = grid.index_to_lps(np.indices(shape).transpose(1, 2, 3, 0))
    inside = np.sum((((lps - CENTRE) @ AXES) / RADII) ** 2, axis=-1) <= 1.0
    return LabelMap(grid, inside.astype(np.uint8), {1: "vertebrae_L3"})


@pytest.fixture(scope="module")
def ellipsoid_mesh():
    return mesh_labels(oblique_labels())["vertebrae_L3"]


def test_an_oblique_anisotropic_ellipsoid_has_the_true_volume_area_and_centre(ellipsoid_mesh):
    surface = ellipsoid_mesh.to_trimesh()
    assert surface.volume == pytest.approx(4 / 3 * np.pi * np.prod(RADII), rel=0.01)
    assert surface.area == pytest.approx(ellipsoid_area(*RADII), rel=0.02)
    centre_in_voxels = np.abs((surface.center_mass - CENTRE) @ OBLIQUE) / SPACING
    assert np.all(centre_in_voxels < 0.1)


def test_every_mesh_is_closed_outward_and_clean(ellipsoid_mesh):
    quality = ellipsoid_mesh.quality
    assert quality.watertight and quality.winding_consistent and quality.outward
    assert (quality.components, quality.degenerate_faces, quality.duplicate_faces) == (1, 0, 0)
    assert abs(quality.smoothing_volume_change_pct) < 1.0
    assert quality.distance_to_label_max_mm < max(SPACING)
    surface = ellipsoid_mesh.to_trimesh()
    outward = np.einsum("ij,ij->i", surface.vertex_normals, surface.vertices - CENTRE)
    assert np.mean(outward > 0) > 0.99


def test_decimation_reaches_the_budget_and_stays_closed():
    mesh = mesh_labels(oblique_labels(), target_faces=2000)["vertebrae_L3"]
    assert mesh.quality.faces <= 2000 and mesh.quality.watertight and mesh.quality.winding_consistent
    assert abs(mesh.quality.volume_error_pct) < 1.0


def test_a_label_touching_the_border_and_a_single_voxel_still_close():
    grid = Grid((10, 10, 10), (1.0, 1.0, 2.0), (0, 0, 0))
    array = np.zeros(grid.shape, np.uint8)
    array[:4, :, :3] = 1  # touches five faces of the array
    array[7, 7, 7] = 2
    meshes = mesh_labels(LabelMap(grid, array, {1: "sacrum", 2: "label_2"}))
    for mesh in meshes.values():
        assert mesh.quality.watertight and mesh.quality.outward and mesh.quality.components == 1, mesh.name
    assert meshes["sacrum"].quality.volume_ml == pytest.approx(4 * 10 * 3 * 2 / 1000, rel=0.01)
    assert meshes["label_2"].quality.faces >= 8  # a single voxel: a small closed solid, its volume reported


def test_voxels_meeting_only_along_edges_still_give_a_closed_surface():
    grid = Grid((14, 14, 14), (1.0, 1.0, 1.0), (0, 0, 0))
    scattered = np.random.default_rng(0).uniform(size=grid.shape) > 0.6  # many edge-only contacts
    array = np.pad(scattered[1:-1, 1:-1, 1:-1], 1).astype(np.uint8)
    mesh = mesh_labels(LabelMap(grid, array, {1: "hip_left"}), smoothing=0)["hip_left"]
    assert mesh.quality.watertight and mesh.quality.winding_consistent and mesh.quality.duplicate_faces == 0
    assert mesh.quality.volume_ml == pytest.approx(mesh.quality.label_volume_ml, rel=0.05)


def test_pieces_are_counted_or_reduced_to_the_largest():
    grid = Grid((20, 20, 20), (1.0, 1.0, 1.0), (0, 0, 0))
    array = np.zeros(grid.shape, np.uint8)
    array[2:8, 2:8, 2:8] = 1
    array[12:15, 12:15, 12:15] = 1
    labels = LabelMap(grid, array, {1: "femur_left"})
    assert mesh_labels(labels)["femur_left"].quality.components == 2
    largest = mesh_labels(labels, largest_only=True)["femur_left"]
    assert largest.quality.components == 1 and largest.quality.label_volume_ml == pytest.approx(0.216)


def test_unknown_names_and_bad_settings_are_refused():
    labels = oblique_labels((20, 20, 10))
    with pytest.raises(InputError, match="no label named"):
        mesh_labels(labels, names=["femur_right"])
    with pytest.raises(InputError, match="smoothing"):
        mesh_labels(labels, smoothing=-1)


def test_an_stl_read_back_lies_where_the_label_lies_and_a_flipped_axis_mirrors_it(tmp_path, ellipsoid_mesh):
    labels = oblique_labels()
    write_mesh(ellipsoid_mesh.vertices_lps_mm, ellipsoid_mesh.faces, tmp_path / "bone.stl", name="bone")
    assert (tmp_path / "bone.stl").read_bytes()[:9] == b"SPACE=LPS"
    read = trimesh.load(tmp_path / "bone.stl")
    label_centre = labels.grid.index_to_lps(np.argwhere(labels.labels).mean(axis=0))
    assert np.linalg.norm(read.center_mass - label_centre) < 0.1 * min(SPACING)

    flipped = LabelMap(labels.grid, np.ascontiguousarray(labels.labels[::-1]), labels.names)
    mirrored = mesh_labels(flipped)["vertebrae_L3"].to_trimesh()
    # reversing index i mirrors patient space in the plane through the grid centre normal to axis i
    axis_i = labels.grid.direction_matrix[:, 0]
    grid_centre = labels.grid.index_to_lps((np.array(labels.grid.shape) - 1) / 2)
    expected = read.center_mass - 2 * np.dot(read.center_mass - grid_centre, axis_i) * axis_i
    assert np.linalg.norm(mirrored.center_mass - expected) < 0.1 * min(SPACING)
    assert mirrored.volume == pytest.approx(read.volume, rel=1e-3)


def test_the_glb_scene_is_in_metres_with_y_up_and_named_parts(tmp_path, ellipsoid_mesh):
    write_glb_scene({"vertebrae_L3": (ellipsoid_mesh.vertices_lps_mm, ellipsoid_mesh.faces)}, tmp_path / "s.glb")
    scene = trimesh.load(tmp_path / "s.glb")
    assert list(scene.geometry) == ["vertebrae_L3"]
    part = scene.geometry["vertebrae_L3"]
    back_to_lps = part.center_mass @ np.linalg.inv(LPS_MM_TO_GLTF_M).T
    assert np.linalg.norm(back_to_lps - CENTRE) < 0.2
    assert part.center_mass[1] == pytest.approx(CENTRE[2] / 1000, abs=2e-4)  # superior is +Y, in metres
    assert part.volume > 0


def test_the_slicer_segmentation_keeps_names_colours_and_geometry(tmp_path):
    labels = oblique_labels((30, 30, 12))
    write_segmentation(labels, tmp_path / "labels.seg.nrrd")
    segmentation = slicerio.read_segmentation(str(tmp_path / "labels.seg.nrrd"))
    assert [(s["name"], s["labelValue"]) for s in segmentation["segments"]] == [("vertebrae_L3", 1)]
    np.testing.assert_allclose(segmentation["ijkToLPS"], labels.grid.affine_lps, atol=1e-6)
    assert np.array_equal(segmentation["voxels"], labels.labels)


def test_real_totalsegmentator_bones_mesh_closed_with_their_voxel_volume():
    labels = read_label_map(shared_path("real/totalseg-example/reference_v1"))
    meshes = mesh_labels(labels)
    assert len(meshes) == 12
    for name, mesh in meshes.items():
        assert mesh.quality.watertight and mesh.quality.outward, name
        assert abs(mesh.quality.volume_error_pct) < 3.0, name


def test_recon_mesh_writes_a_file_per_bone_and_the_quality_record(tmp_path, capsys):
    labels = oblique_labels((40, 40, 16))
    array = labels.labels.copy()
    array[:3, :3, :3] = 2
    source = tmp_path / "in" / "labels.nii.gz"
    write_label_map(LabelMap(labels.grid, array, {1: "vertebrae_L3", 2: "odd/name"}), source)
    out = tmp_path / "out"
    assert main(["mesh", str(source), "-o", str(out), "--format", "stl,obj,glb", "--faces", "800"]) == 0
    assert {p.name for p in out.iterdir()} >= {"vertebrae_L3.stl", "vertebrae_L3.obj", "odd_name.stl",
                                              "scene.glb", "meshes.json", "segmentation.seg.nrrd"}
    record = json.loads((out / "meshes.json").read_text())
    assert record["meshes"]["vertebrae_L3"]["watertight"] is True
    assert record["meshes"]["vertebrae_L3"]["faces"] <= 800
    assert "LPS" in record["frame"]


def test_a_thin_label_is_meshed_with_a_warning_and_clashing_file_names_are_refused(tmp_path):
    grid = Grid((12, 12, 12), (1.0, 1.0, 1.0), (0, 0, 0))
    array = np.zeros(grid.shape, np.uint8)
    array[2:10, 5, 5] = 1  # a rod one voxel thick
    array[2:8, 2:8, 8:11] = 2
    meshes = mesh_labels(LabelMap(grid, array, {1: "a b", 2: "a_b"}))
    assert meshes["a b"].quality.watertight and meshes["a b"].quality.warnings
    with pytest.raises(InputError, match="same file name"):
        write_mesh_set(meshes, tmp_path / "out")
