"""The loader on real studies from ../shared/data (see its README for provenance and licences)."""

import numpy as np
import pytest

from recon.errors import NoCTSeriesError
from recon.io.images import read_image
from recon.io.loading import describe_ct, load_ct, read_ct
from tests.conftest import shared_path

WG04 = "dicom-edge/transfer-syntaxes-wg04"
LOSSLESS = ["RLE/{}_RLE", "JPLL/{}_JPLL", "JLSL/{}_JLSL", "J2KR/{}_J2KR"]
LOSSY = ["JLSN/{}_JLSN", "J2KI/{}_J2KI"]
TOTALSEG_T12 = 32
TOTALSEG_LIVER, TOTALSEG_SPLEEN = 5, 1


def test_totalsegmentator_jpeg2000_series_loads_on_its_grid():
    volume = load_ct(shared_path("real/totalseg-example/dicom"))
    assert volume.grid.shape == (512, 512, 20)
    np.testing.assert_allclose(volume.grid.spacing_mm, (0.9765625, 0.9765625, 2.0), atol=1e-6)
    assert -1100 < volume.hu.min() < -900 and volume.hu.max() > 1000


def _lps_of_label(path, label):
    image = read_image(path)
    ijk = np.argwhere(image.array == label)
    return image.grid.index_to_lps(ijk)


def test_reference_segmentation_with_flipped_affine_overlaps_the_dicom_in_physical_space():
    ct = load_ct(shared_path("real/totalseg-example/dicom"))
    seg_path = shared_path("real/totalseg-example/dicom_reference_seg_v2.nii.gz")
    seg = read_image(seg_path)
    assert not np.allclose(seg.grid.direction, ct.grid.direction), "the test needs the flipped affine"
    t12_lps = _lps_of_label(seg_path, TOTALSEG_T12)
    ijk = np.round(ct.grid.lps_to_index(t12_lps)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < ct.grid.shape), axis=1)
    assert inside.mean() > 0.99
    hu = ct.hu[tuple(ijk[inside].T)]
    assert np.median(hu) > 150, "the vertebra mask must lie on bone"
    centroid_hu = ct.hu[tuple(np.round(ct.grid.lps_to_index(t12_lps.mean(axis=0))).astype(int))]
    assert centroid_hu > 100
    # patient left is +L: the liver lies to the right of the spine, the spleen to its left
    liver_l = _lps_of_label(seg_path, TOTALSEG_LIVER)[:, 0].mean()
    spleen_l = _lps_of_label(seg_path, TOTALSEG_SPLEEN)[:, 0].mean()
    assert liver_l < t12_lps[:, 0].mean() < spleen_l


@pytest.mark.parametrize("image", ["CT1", "CT2"])
@pytest.mark.parametrize("syntax", LOSSLESS + LOSSY)
def test_transfer_syntaxes_decode_like_the_uncompressed_reference(image, syntax):
    """Lossless syntaxes give identical Hounsfield units; lossy ones stay close."""
    reference = load_ct(shared_path(f"{WG04}/REF/{image}_UNC"))
    compressed = load_ct(shared_path(f"{WG04}/{syntax.format(image)}"))
    assert compressed.grid.same_as(reference.grid)
    if syntax in LOSSLESS:
        np.testing.assert_array_equal(compressed.hu, reference.hu)
    else:
        assert np.corrcoef(compressed.hu.ravel(), reference.hu.ravel())[0, 1] > 0.99


def test_philips_study_chooses_the_axial_series_and_says_why_it_skipped_the_rest():
    loaded = read_ct(shared_path("dicom-edge/philips-mixed-study"))
    selected = [s for s in loaded.series if s["selected"]]
    assert len(selected) == 1 and selected[0]["n_files"] == 28
    assert loaded.volume.grid.shape == (512, 512, 28)
    skipped = {s["description"]: s["skipped_reason"] for s in loaded.series if not s["selected"]}
    assert any("localizer" in reason.lower() for reason in skipped.values())
    assert "secondary capture" in skipped["Exam Summary"]


def test_gantry_tilt_is_reported_and_corrected():
    loaded = read_ct(shared_path("dicom-edge/gantry-tilt-ge"))
    assert loaded.gantry_tilt_deg == pytest.approx(18.5, abs=0.05)
    warnings = " ".join(loaded.warnings)
    assert "tilt" in warnings and "uneven" in warnings


def test_gantry_tilt_correction_keeps_each_acquired_slice_at_its_true_position():
    """Sample the corrected volume where each acquired pixel really was: it must match that pixel there,
    and not where a loader that ignores the tilt would have put it (without the in-plane shift)."""
    import pydicom
    from scipy import ndimage

    folder = shared_path("dicom-edge/gantry-tilt-ge")
    volume = load_ct(folder)
    first = np.asarray(pydicom.dcmread(folder / "01.dcm", stop_before_pixels=True).ImagePositionPatient, float)
    errors, untilted_errors = [], []
    for name in ("05.dcm", "14.dcm", "15.dcm", "22.dcm"):
        ds = pydicom.dcmread(folder / name)
        acquired = ds.pixel_array.astype(np.float32).T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        row = np.asarray(ds.ImageOrientationPatient[:3], float)
        col = np.asarray(ds.ImageOrientationPatient[3:], float)
        position = np.asarray(ds.ImagePositionPatient, float)
        i, j = np.meshgrid(np.arange(100, 400, 4), np.arange(100, 400, 4), indexing="ij")
        lps = position + i[..., None] * float(ds.PixelSpacing[1]) * row + j[..., None] * float(ds.PixelSpacing[0]) * col
        expected = acquired[i, j].ravel()

        def error_at(points):
            indices = volume.grid.lps_to_index(points).reshape(-1, 3).T
            return float(np.median(np.abs(ndimage.map_coordinates(volume.hu, indices, order=1) - expected)))

        errors.append(error_at(lps))
        untilted_errors.append(error_at(lps - ((position - first) @ col) * col))
    assert max(errors) < 10, errors
    assert min(untilted_errors) > 3 * max(errors), (errors, untilted_errors)


def test_spacing_comes_from_positions_and_seg_objects_are_skipped():
    loaded = read_ct(shared_path("dicom-edge/dcmqi-ct3-seg"))
    assert loaded.volume.grid.spacing_mm[2] == pytest.approx(1.0, abs=1e-4)
    assert loaded.volume.grid.shape == (512, 512, 3)
    reasons = [s["skipped_reason"] for s in loaded.series if not s["selected"]]
    assert len(reasons) == 2 and all("SEG" in reason for reason in reasons)


def test_enhanced_multiframe_ct_loads_its_frames_in_space():
    volume = load_ct(shared_path("dicom-edge/pydicom-samples/eCT_Supplemental.dcm"))
    assert volume.grid.shape == (512, 512, 2)
    assert volume.grid.spacing_mm[2] == pytest.approx(10.0)
    np.testing.assert_allclose(volume.grid.direction_matrix[:, 0], [-1, 0, 0])


def test_jpeg2000_with_bits_stored_mismatch_matches_its_uncompressed_twin():
    reference = load_ct(shared_path("dicom-edge/pydicom-samples/693_UNCR.dcm"))
    compressed = load_ct(shared_path("dicom-edge/pydicom-samples/693_J2KR.dcm"))
    np.testing.assert_array_equal(compressed.hu, reference.hu)


@pytest.mark.parametrize("name, word", [("rtstruct.dcm", "RT structure"), ("liver.dcm", "SEG")])
def test_non_image_objects_alone_are_refused_with_the_reason(name, word):
    with pytest.raises(NoCTSeriesError, match=word):
        load_ct(shared_path(f"dicom-edge/pydicom-samples/{name}"))


ROUND_TRIPS = [(study, suffix) for study in ("dicom-edge/philips-mixed-study", "dicom-edge/pydicom-samples/eCT_Supplemental.dcm")
               for suffix in (".nii.gz", ".nrrd", ".mha")] + [("dicom-edge/gantry-tilt-ge", ".mha")]


@pytest.mark.parametrize("relative, suffix", ROUND_TRIPS)
def test_round_trip_through_image_formats_keeps_grid_and_values(tmp_path, relative, suffix):
    from recon.io.loading import convert_ct

    original = load_ct(shared_path(relative))
    target = convert_ct(shared_path(relative), tmp_path / f"ct{suffix}")
    reloaded = load_ct(target)
    assert reloaded.grid.same_as(original.grid, tolerance_mm=1e-4)
    np.testing.assert_array_equal(reloaded.hu, original.hu)


def test_describe_reports_every_field_the_cli_promises():
    description = describe_ct(shared_path("dicom-edge/philips-mixed-study"))
    assert set(description["series"][0]) >= {"series_uid", "n_files", "modality", "description", "selected",
                                              "skipped_reason"}
    assert set(description["volume"]) >= {"shape_ijk", "spacing_mm", "origin_lps_mm", "direction", "hu_min",
                                          "hu_max", "gantry_tilt_deg", "warnings"}
    assert len(description["volume"]["direction"]) == 9
