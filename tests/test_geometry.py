import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from recon.errors import GeometryError
from recon.geometry import Grid, angle_between_deg, nearest_orthonormal

finite = st.floats(-500, 500, allow_nan=False)
spacings = st.tuples(*[st.floats(0.2, 5.0)] * 3)
shapes = st.tuples(*[st.integers(1, 600)] * 3)
quaternions = st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda q: np.linalg.norm(q) > 0.1)
flips = st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3)


@st.composite
def grids(draw):
    rotation = Rotation.from_quat(draw(quaternions)).as_matrix() * np.asarray(draw(flips))
    return Grid(draw(shapes), draw(spacings), draw(st.tuples(finite, finite, finite)), rotation.ravel())


@settings(max_examples=200, deadline=None)
@given(grids(), st.tuples(finite, finite, finite))
def test_index_lps_round_trip_on_oblique_anisotropic_grids(grid, ijk):
    lps = grid.index_to_lps(np.array(ijk))
    np.testing.assert_allclose(grid.lps_to_index(lps), ijk, atol=1e-7)
    np.testing.assert_allclose(grid.index_to_lps(grid.lps_to_index(lps)), lps, atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(grids())
def test_one_index_step_moves_one_spacing_along_its_direction(grid):
    origin = grid.index_to_lps(np.zeros(3))
    np.testing.assert_allclose(origin, grid.origin_lps_mm, atol=1e-9)
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = 1
        moved = grid.index_to_lps(step) - origin
        np.testing.assert_allclose(np.linalg.norm(moved), grid.spacing_mm[axis], rtol=1e-9)
        np.testing.assert_allclose(moved / grid.spacing_mm[axis], grid.direction_matrix[:, axis], atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(grids(), st.integers(0, 2))
def test_flipping_an_axis_keeps_every_voxel_in_place(grid, axis):
    """A grid flipped along one axis (origin moved to the far end) maps voxel n-1-i to where i was."""
    direction = grid.direction_matrix.copy()
    direction[:, axis] *= -1
    far = np.zeros(3)
    far[axis] = grid.shape[axis] - 1
    flipped = Grid(grid.shape, grid.spacing_mm, grid.index_to_lps(far), direction.ravel())
    ijk = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [5.5, 0.25, 7.0]])
    mirrored = ijk.copy()
    mirrored[:, axis] = grid.shape[axis] - 1 - ijk[:, axis]
    np.testing.assert_allclose(flipped.index_to_lps(mirrored), grid.index_to_lps(ijk), atol=1e-7)


@settings(max_examples=50, deadline=None)
@given(grids())
def test_affine_matches_index_to_lps(grid):
    ijk = np.array([3.0, -2.0, 7.5])
    np.testing.assert_allclose((grid.affine_lps @ np.append(ijk, 1))[:3], grid.index_to_lps(ijk), atol=1e-9)


OBLIQUE = Grid((64, 48, 20), (0.7, 0.9, 2.5), (-100.0, 50.0, 20.0),
               Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix().ravel())


def test_same_as_is_true_for_an_equal_grid_and_within_tolerance():
    assert OBLIQUE.same_as(dataclasses.replace(OBLIQUE))
    nudged = dataclasses.replace(OBLIQUE, origin_lps_mm=tuple(np.add(OBLIQUE.origin_lps_mm, 1e-6)))
    assert OBLIQUE.same_as(nudged)


@pytest.mark.parametrize("field, value", [
    ("shape", (64, 48, 21)),
    ("shape", (48, 64, 20)),
    ("spacing_mm", (0.7, 0.9, 2.6)),
    ("spacing_mm", (0.71, 0.9, 2.5)),
    ("origin_lps_mm", (-100.0, 50.0, 20.01)),
    ("origin_lps_mm", (-100.01, 50.0, 20.0)),
    ("direction", Rotation.from_euler("xyz", [10, -20, 31], degrees=True).as_matrix().ravel()),
    ("direction", (OBLIQUE.direction_matrix * [1, 1, -1]).ravel()),
])
def test_same_as_is_false_when_any_single_field_differs(field, value):
    other = dataclasses.replace(OBLIQUE, **{field: value})
    assert not OBLIQUE.same_as(other)
    assert not other.same_as(OBLIQUE)


@pytest.mark.parametrize("kwargs", [
    {"shape": (0, 4, 4)},
    {"shape": (4, 4)},
    {"spacing_mm": (1.0, 0.0, 1.0)},
    {"spacing_mm": (1.0, float("nan"), 1.0)},
    {"origin_lps_mm": (0.0, float("inf"), 0.0)},
    {"direction": (1, 0, 0, 1, 0, 0, 0, 0, 1)},
    {"direction": (2, 0, 0, 0, 1, 0, 0, 0, 1)},
])
def test_invalid_grids_are_refused(kwargs):
    fields = {"shape": (4, 4, 4), "spacing_mm": (1, 1, 1), "origin_lps_mm": (0, 0, 0)} | kwargs
    with pytest.raises(GeometryError):
        Grid(**fields)


def test_nearest_orthonormal_repairs_a_small_shear():
    sheared = np.eye(3)
    sheared[0, 1] = 0.01
    repaired = nearest_orthonormal(sheared)
    np.testing.assert_allclose(repaired.T @ repaired, np.eye(3), atol=1e-12)
    assert angle_between_deg(repaired[:, 0], [1, 0, 0]) < 1


def test_corners_span_the_grid():
    corners = OBLIQUE.corners_lps()
    assert corners.shape == (8, 3)
    far = OBLIQUE.index_to_lps(np.asarray(OBLIQUE.shape) - 1)
    assert np.any(np.all(np.isclose(corners, far), axis=1))
