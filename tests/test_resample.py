import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.geometry import Grid
from recon.resample import antialiasing_sigma_mm, canonical_grid, resample_volume
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
