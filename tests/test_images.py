"""NIfTI, NRRD and MHA: the header decides the frame; RAS turns into LPS in one place."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from recon.errors import InputError, TooLargeError
from recon.geometry import Grid
from recon.io.images import read_image, write_image
from recon.io.loading import load_ct

OBLIQUE_GRID = Grid((12, 10, 6), (0.7, 1.1, 2.5), (-30.0, 12.5, 80.0),
                    Rotation.from_euler("zyx", [25, -10, 5], degrees=True).as_matrix().ravel())


def nifti(tmp_path, affine, *, sform_code=1, qform_code=1, qform=None, name="ct.nii.gz"):
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), None)
    image.header.set_sform(affine, code=sform_code)
    image.header.set_qform(affine if qform is None else qform, code=qform_code)
    path = tmp_path / name
    image.to_filename(path)
    return path


def test_ras_identity_becomes_lps_with_x_and_y_flipped(tmp_path):
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    volume = load_ct(nifti(tmp_path, affine))
    np.testing.assert_allclose(volume.grid.direction_matrix, np.diag([-1, -1, 1]))
    np.testing.assert_allclose(volume.grid.origin_lps_mm, [-10, -20, 30])
    np.testing.assert_allclose(volume.grid.spacing_mm, [2, 3, 4])
    assert volume.hu[1, 2, 3] == 23


def test_sform_wins_over_qform_when_both_are_set(tmp_path):
    sform = np.diag([1.0, 1.0, 1.0, 1.0])
    qform = np.diag([1.0, 1.0, 1.0, 1.0])
    qform[:3, 3] = [5, 5, 5]
    volume = load_ct(nifti(tmp_path, sform, qform=qform))
    np.testing.assert_allclose(volume.grid.origin_lps_mm, [0, 0, 0])


def test_qform_is_used_when_the_sform_code_is_zero(tmp_path):
    qform = np.diag([1.0, 1.0, 1.0, 1.0])
    qform[:3, 3] = [5, 6, 7]
    volume = load_ct(nifti(tmp_path, np.eye(4) * 9, sform_code=0, qform=qform))
    np.testing.assert_allclose(volume.grid.origin_lps_mm, [-5, -6, 7])


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_oblique_grid_round_trips_through_every_format(tmp_path, suffix):
    values = np.random.default_rng(0).normal(0, 300, OBLIQUE_GRID.shape).astype(np.float32)
    write_image(values, OBLIQUE_GRID, tmp_path / f"image{suffix}")
    image = read_image(tmp_path / f"image{suffix}")
    assert image.grid.same_as(OBLIQUE_GRID, tolerance_mm=1e-4)
    np.testing.assert_array_equal(image.array, values)


def test_nifti_output_has_equal_qform_and_sform_with_code_one(tmp_path):
    write_image(np.zeros(OBLIQUE_GRID.shape, np.float32), OBLIQUE_GRID, tmp_path / "out.nii.gz")
    header = nib.load(tmp_path / "out.nii.gz").header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-4)


def test_nrrd_output_states_its_lps_frame(tmp_path):
    write_image(np.zeros((4, 4, 4), np.float32), OBLIQUE_GRID.__class__((4, 4, 4), (1, 1, 1), (0, 0, 0)),
                tmp_path / "out.nrrd")
    header = (tmp_path / "out.nrrd").read_bytes().split(b"\n\n")[0]
    assert b"space: left-posterior-superior" in header


def test_integer_valued_ct_is_stored_compactly(tmp_path):
    write_image(np.full((4, 4, 4), -1000.0, np.float32), Grid((4, 4, 4), (1, 1, 1), (0, 0, 0)), tmp_path / "a.nii.gz")
    assert nib.load(tmp_path / "a.nii.gz").get_data_dtype() == np.int16


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"previous")
    with pytest.raises(nib.spatialimages.HeaderDataError):  # nibabel refuses object voxels mid-write
        write_image(np.zeros((3, 3, 3), object), Grid((3, 3, 3), (1, 1, 1), (0, 0, 0)), target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_unreadable_and_oversized_images_are_clear_errors(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="broken.nii.gz"):
        load_ct(broken)
    huge = nib.Nifti1Header()
    huge.set_data_shape((4000, 4000, 4000))
    huge.set_data_dtype(np.int16)
    path = tmp_path / "huge.nii"
    with open(path, "wb") as handle:
        handle.write(huge.binaryblock + b"\0" * 4)
    with pytest.raises(TooLargeError):
        load_ct(path)


def test_a_truncated_nifti_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.nii.gz"
    write_image(np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32), Grid((40, 40, 40), (1, 1, 1), (0, 0, 0)), path)
    path.write_bytes(path.read_bytes()[:20000])
    with pytest.raises(InputError, match="cut.nii.gz"):
        load_ct(path)


def test_four_dimensional_images_are_refused(tmp_path):
    nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.int16), np.eye(4)).to_filename(tmp_path / "t.nii.gz")
    with pytest.raises(InputError, match="4-D"):
        load_ct(tmp_path / "t.nii.gz")


def test_a_two_dimensional_mha_becomes_one_slice(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((5, 7), np.int16)), str(tmp_path / "slice.mha"))
    assert load_ct(tmp_path / "slice.mha").grid.shape == (7, 5, 1)


def test_a_sheared_affine_is_refused(tmp_path):
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(InputError, match="sheared"):
        load_ct(nifti(tmp_path, affine))


def test_a_five_dimensional_mha_with_trailing_unit_axes_loads(tmp_path):
    image = sitk.Image([4, 3, 2, 1, 1], sitk.sitkInt16)
    sitk.WriteImage(image, str(tmp_path / "five.mha"))
    assert load_ct(tmp_path / "five.mha").grid.shape == (4, 3, 2)
