import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.geometry import Grid
from recon.resample import antialiasing_sigma_mm, canonical_grid, resample_volume, zoomed_grid
from recon.volume import Volume


def _noise_volume(spacing_mm, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    grid = Grid((160, 160, 120), spacing_mm, (0.0, 0.0, 0.0), direction)
    hu = np.random.default_rng(0).normal(40.0, 50.0, grid.shape).astype(np.float32)
    return Volume(grid, hu)


def test_downsampling_a_ct_averages_it_like_a_coarser_voxel_would():
    volume = _noise_volume((0.7, 0.7, 1.0))
    coarse = resample_volume(volume, canonical_grid(volume.grid, 3.0))[4:-4, 4:-4, 4:-4]
    fine_voxels_per_coarse = 3.0**3 / (0.7 * 0.7 * 1.0)
    assert abs(float(coarse.mean()) - 40.0) < 1.0
    assert float(coarse.std()) == pytest.approx(50.0 / np.sqrt(fine_voxels_per_coarse), rel=0.25)


def test_resampling_onto_an_as_fine_grid_does_not_smooth():
    volume = _noise_volume((3.0, 3.0, 3.0))
    assert antialiasing_sigma_mm(volume.grid, volume.grid) == (0.0, 0.0, 0.0)
    assert np.array_equal(resample_volume(volume, volume.grid), volume.hu)


def test_the_smoothing_follows_each_source_axis_on_a_rotated_grid():
    rotated = Rotation.from_euler("z", 90, degrees=True).as_matrix().ravel()
    volume = _noise_volume((0.5, 3.0, 3.0), rotated)
    sigma = antialiasing_sigma_mm(volume.grid, Grid((10, 10, 10), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0)))
    assert sigma[0] == pytest.approx(np.sqrt((9.0 - 0.25) / 12)) and sigma[1:] == (0.0, 0.0)


@pytest.mark.parametrize("zoom", [1.1, 0.9, 1.0])
def test_a_zoomed_grid_is_centred_on_its_grid_and_reaches_no_further_than_its_voxel_centres(zoom):
    grid = Grid((86, 70, 101), (3.0, 3.0, 3.0), (-120.0, 40.0, 300.0))
    zoomed = zoomed_grid(grid, zoom)
    assert zoomed.spacing_mm == pytest.approx((3.0 / zoom,) * 3)
    low, high = grid.corners_lps().min(axis=0), grid.corners_lps().max(axis=0)
    inner_low, inner_high = zoomed.corners_lps().min(axis=0), zoomed.corners_lps().max(axis=0)
    assert np.all(inner_low >= low - 1e-6) and np.all(inner_high <= high + 1e-6)
    assert np.all(high - inner_high < 3.0 / zoom)  # as many voxels as fit
    assert np.allclose(inner_low - low, high - inner_high)
    if zoom == 1.0:
        assert zoomed.shape == grid.shape and np.allclose(zoomed.origin_lps_mm, grid.origin_lps_mm)
