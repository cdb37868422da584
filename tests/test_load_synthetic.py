"""The DICOM loader on series written here, where every answer is known."""

import shutil
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid
from scipy.spatial.transform import Rotation

from recon.errors import (AmbiguousSeriesError, CorruptFileError, InputError, MissingDecoderError,
                          NoCTSeriesError, TooLargeError)
from recon.geometry import Grid
from recon.io.dicom_write import write_ct_series, write_ct_slices
from recon.io.loading import load_ct, read_ct
from recon.volume import Volume

OBLIQUE = Rotation.from_euler("xyz", [8, -5, 12], degrees=True).as_matrix()


def integer_volume(shape=(40, 32, 12), spacing=(0.8, 0.7, 2.5), direction=OBLIQUE, seed=0) -> Volume:
    hu = np.random.default_rng(seed).integers(-1000, 2000, shape).astype(np.float32)
    return Volume(Grid(shape, spacing, (-20.0, 15.0, -300.0), direction.ravel()), hu)


def set_series(paths, **attributes):
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def test_oblique_anisotropic_series_loads_exactly_whatever_the_file_names(tmp_path):
    volume = integer_volume()
    paths = write_ct_series(volume, tmp_path / "written")
    scrambled = tmp_path / "study" / "nested"
    scrambled.mkdir(parents=True)
    order = np.random.default_rng(1).permutation(len(paths))
    for name, k in enumerate(order):
        ds = pydicom.dcmread(paths[k])
        ds.InstanceNumber = len(paths) - k  # misleading on purpose
        ds.save_as(scrambled / f"IM{name}")  # no extension, names unrelated to position
    loaded = load_ct(tmp_path / "study")
    assert loaded.grid.same_as(volume.grid, tolerance_mm=1e-4)
    np.testing.assert_array_equal(loaded.hu, volume.hu)


def test_slices_written_in_reverse_normal_order_give_the_same_anatomy(tmp_path):
    volume = integer_volume()
    flipped_direction = OBLIQUE * [1, 1, -1]
    far = volume.grid.index_to_lps((0, 0, volume.grid.shape[2] - 1))
    reversed_volume = Volume(Grid(volume.grid.shape, volume.grid.spacing_mm, far, flipped_direction.ravel()),
                             volume.hu[:, :, ::-1])
    write_ct_series(reversed_volume, tmp_path)
    loaded = load_ct(tmp_path)
    assert loaded.grid.same_as(volume.grid, tolerance_mm=1e-4)
    np.testing.assert_array_equal(loaded.hu, volume.hu)


def test_a_missing_slice_is_reported_and_interpolated_in_place(tmp_path):
    volume = integer_volume()
    paths = write_ct_series(volume, tmp_path)
    paths[5].unlink()
    loaded = read_ct(tmp_path)
    assert any("1 slice(s) missing" in w for w in loaded.warnings)
    assert loaded.volume.grid.same_as(volume.grid, tolerance_mm=1e-4)
    kept = [k for k in range(volume.grid.shape[2]) if k != 5]
    np.testing.assert_allclose(loaded.volume.hu[:, :, kept], volume.hu[:, :, kept], atol=1e-3)
    np.testing.assert_allclose(loaded.volume.hu[:, :, 5], (volume.hu[:, :, 4] + volume.hu[:, :, 6]) / 2, atol=1e-3)


def test_uneven_slices_stay_within_half_a_voxel_of_their_true_position(tmp_path):
    rng = np.random.default_rng(3)
    heights = np.cumsum(np.r_[0, rng.uniform(1.0, 3.3, 14)])
    direction = np.eye(3)
    slices = [np.full((16, 12), 100.0 * k) for k in range(len(heights))]
    positions = [np.array([0.0, 0.0, h]) for h in heights]
    write_ct_slices(slices, positions, [1, 0, 0, 0, 1, 0], (0.9, 0.9), tmp_path)
    loaded = read_ct(tmp_path)
    assert any("uneven" in w for w in loaded.warnings)
    grid = loaded.volume.grid
    np.testing.assert_allclose(grid.direction_matrix, direction)
    planes = grid.index_to_lps(np.column_stack([np.zeros(grid.shape[2]), np.zeros(grid.shape[2]),
                                                np.arange(grid.shape[2])]))[:, 2]
    for k, height in enumerate(heights):
        nearest = int(np.argmin(np.abs(planes - height)))
        assert abs(planes[nearest] - height) <= grid.spacing_mm[2] / 2 + 1e-6
        # the grid plane nearest to the acquired slice holds (mostly) that slice's value
        assert abs(loaded.volume.hu[0, 0, nearest] - 100.0 * k) < 50.0 + 1e-3


def test_synthetic_gantry_tilt_puts_a_sphere_where_it_really_is(tmp_path):
    """Slices sampled from a sphere on tilted planes that advance along the table (patient S)."""
    tilt = np.radians(20.0)
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(tilt), -np.sin(tilt)])
    centre, radius = np.array([3.0, -4.0, 30.0]), 12.0
    spacing = 0.8
    i, j = np.meshgrid(np.arange(80), np.arange(80), indexing="ij")
    slices, positions = [], []
    for k in range(40):
        position = np.array([-32.0, -28.0, 12.0 + 1.5 * k])
        lps = position + (i[..., None] * row + j[..., None] * col) * spacing
        slices.append(np.where(np.linalg.norm(lps - centre, axis=-1) <= radius, 1000.0, 0.0))
        positions.append(position)
    write_ct_slices(slices, positions, np.r_[row, col], (spacing, spacing), tmp_path)
    loaded = read_ct(tmp_path)
    assert loaded.gantry_tilt_deg == pytest.approx(20.0, abs=0.01)
    volume = loaded.volume
    weights = np.clip(volume.hu, 0, None)
    ijk = np.argwhere(weights > 0)
    found = (volume.grid.index_to_lps(ijk) * weights[tuple(ijk.T)][:, None]).sum(0) / weights[tuple(ijk.T)].sum()
    np.testing.assert_allclose(found, centre, atol=0.5)
    bone = volume.grid.index_to_lps(np.argwhere(volume.hu > 500))
    extent = bone.max(0) - bone.min(0)
    np.testing.assert_allclose(extent, 2 * radius, atol=2.5)  # round, not sheared


def test_zip_and_dicomdir_inputs_load_like_the_folder(tmp_path):
    volume = integer_volume(shape=(16, 12, 6))
    paths = write_ct_series(volume, tmp_path / "series")
    with zipfile.ZipFile(tmp_path / "study.zip", "w") as archive:
        for path in paths:
            archive.write(path, f"export/{path.name}")
    fileset = FileSet()
    for path in paths:
        fileset.add(path)
    fileset.write(tmp_path / "media")
    for source in (tmp_path / "study.zip", tmp_path / "media" / "DICOMDIR", tmp_path / "media"):
        loaded = load_ct(source)
        assert loaded.grid.same_as(volume.grid, tolerance_mm=1e-4), source
        np.testing.assert_array_equal(loaded.hu, volume.hu)


def compress_series(paths, syntax):
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(path)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_series_decode_to_identical_hu(tmp_path, syntax):
    volume = integer_volume(shape=(64, 48, 4))  # OpenJPEG refuses very small images
    compress_series(write_ct_series(volume, tmp_path), syntax)
    assert pydicom.dcmread(next(tmp_path.iterdir())).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(load_ct(tmp_path).hu, volume.hu)


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    volume = integer_volume(shape=(8, 8, 3))
    paths = write_ct_series(volume, tmp_path)
    set_series(paths, RescaleSlope="2", RescaleIntercept="-2048")
    np.testing.assert_array_equal(load_ct(tmp_path).hu, np.clip(volume.hu, -1024, 3071) * 2)


def write_series(folder, shape, spacing=(0.8, 0.8, 2.0), direction=np.eye(3)):
    volume = Volume(Grid(shape, spacing, (0, 0, 0), direction.ravel()), np.zeros(shape, np.float32))
    return write_ct_series(volume, folder)


def test_selection_prefers_axial_then_more_slices_then_thinner(tmp_path):
    sagittal = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)
    write_series(tmp_path / "sagittal", (16, 16, 30), direction=sagittal)
    write_series(tmp_path / "axial_few", (16, 16, 8))
    write_series(tmp_path / "axial_thick", (16, 16, 10), spacing=(0.8, 0.8, 3.0))
    write_series(tmp_path / "axial_thin", (16, 16, 10), spacing=(0.8, 0.8, 1.0))
    loaded = read_ct(tmp_path)
    assert loaded.volume.grid.spacing_mm[2] == pytest.approx(1.0)
    reasons = sorted(s["skipped_reason"] for s in loaded.series if not s["selected"])
    assert any("not axial" in r for r in reasons)
    assert any("fewer slices" in r for r in reasons)
    assert any("thicker" in r for r in reasons)


def test_equal_candidates_are_refused_and_series_uid_chooses(tmp_path):
    first = write_series(tmp_path / "a", (16, 16, 6))
    write_series(tmp_path / "b", (16, 16, 6))
    with pytest.raises(AmbiguousSeriesError, match="series_uid="):
        load_ct(tmp_path)
    uid = pydicom.dcmread(first[0]).SeriesInstanceUID
    loaded = read_ct(tmp_path, series_uid=uid)
    assert [s["series_uid"] for s in loaded.series if s["selected"]] == [uid]
    with pytest.raises(InputError, match="no series with SeriesInstanceUID"):
        load_ct(tmp_path, series_uid="1.2.3.4")


def test_a_localizer_inside_the_series_is_split_off_and_skipped(tmp_path):
    paths = write_series(tmp_path, (16, 16, 6))
    scout = pydicom.dcmread(paths[0])
    scout.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    scout.SOPInstanceUID = generate_uid()
    scout.save_as(tmp_path / "scout.dcm")
    loaded = read_ct(tmp_path)
    assert loaded.volume.grid.shape == (16, 16, 6)
    assert any("orientation unlike the rest" in (s["skipped_reason"] or "") for s in loaded.series)


def test_mr_only_is_refused_as_not_ct(tmp_path):
    set_series(write_series(tmp_path, (8, 8, 3)), Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
    with pytest.raises(NoCTSeriesError, match="modality MR"):
        load_ct(tmp_path)


def test_no_dicom_at_all_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no DICOM files found"):
        load_ct(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        load_ct(tmp_path / "missing")


def test_truncated_pixel_data_names_the_file(tmp_path):
    paths = write_series(tmp_path, (32, 32, 4))
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 1000])
    with pytest.raises(CorruptFileError, match="file #3 "):  # by number: file names may hold patient names
        load_ct(tmp_path)


def test_a_garbage_file_beside_a_good_series_is_skipped(tmp_path):
    write_series(tmp_path, (16, 16, 4))
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    assert load_ct(tmp_path).grid.shape == (16, 16, 4)


def test_duplicate_positions_are_refused_with_advice(tmp_path):
    paths = write_series(tmp_path, (8, 8, 4))
    copy = pydicom.dcmread(paths[1])
    copy.SOPInstanceUID = generate_uid()
    copy.save_as(tmp_path / "second_phase.dcm")
    with pytest.raises(InputError, match="same position"):
        load_ct(tmp_path)


def test_an_absurd_matrix_is_refused_quickly_without_allocating(tmp_path):
    paths = write_series(tmp_path, (8, 8, 1))
    set_series(paths, Rows=65535, Columns=65535, NumberOfFrames=1000000,
               PerFrameFunctionalGroupsSequence=[], SOPClassUID="1.2.840.10008.5.1.4.1.1.2.1")
    with pytest.raises(NoCTSeriesError, match="65535x65535x1000000 voxels"):
        load_ct(tmp_path)


def test_an_absurd_classic_matrix_is_refused_as_too_large(tmp_path):
    paths = write_series(tmp_path, (8, 8, 3))
    set_series(paths, Rows=20000, Columns=20000)
    with pytest.raises(TooLargeError, match="voxels"):
        load_ct(tmp_path)


def test_a_missing_decoder_names_the_package_to_install(tmp_path, monkeypatch):
    compress_series(write_ct_series(integer_volume(shape=(64, 48, 2)), tmp_path), JPEG2000Lossless)

    class Unavailable:
        is_available = False
        UID = JPEG2000Lossless

    monkeypatch.setattr("recon.io.dicom.get_decoder", lambda syntax: Unavailable())
    with pytest.raises(MissingDecoderError, match="pip install pylibjpeg-openjpeg"):
        load_ct(tmp_path)


def test_a_single_file_of_a_series_loads_alone(tmp_path):
    paths = write_series(tmp_path, (8, 8, 4))
    loaded = read_ct(paths[2])
    assert loaded.volume.grid.shape == (8, 8, 1)
    assert any("single slice" in w for w in loaded.warnings)
    shutil.rmtree(tmp_path)


def test_stored_values_beyond_int16_with_a_large_intercept_stay_exact(tmp_path):
    paths = write_series(tmp_path, (8, 8, 2))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.BitsStored, ds.HighBit, ds.RescaleIntercept = 16, 15, -40000
        ds.PixelData = np.full((8, 8), 41000, np.uint16).tobytes()
        ds.save_as(path)
    volume = load_ct(tmp_path)
    assert volume.hu.dtype == np.int16
    assert np.all(volume.hu == 1000)


def test_a_slice_with_a_wild_position_is_refused_not_resampled(tmp_path):
    paths = write_series(tmp_path, (8, 8, 6))
    ds = pydicom.dcmread(paths[3])
    ds.ImagePositionPatient = [1e6, 0, float(ds.ImagePositionPatient[2])]
    ds.save_as(paths[3])
    with pytest.raises(InputError, match="inconsistent"):
        load_ct(tmp_path)


def test_a_bare_dataset_without_file_meta_loads(tmp_path):
    paths = write_series(tmp_path, (8, 8, 3), spacing=(1, 1, 1))
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.file_meta
        ds.preamble = None
        ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
        assert path.read_bytes()[:2] == b"\x08\x00"  # no preamble, no file meta
    assert load_ct(tmp_path).grid.shape == (8, 8, 3)
