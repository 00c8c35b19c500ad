"""DICOM series: same geometry as NIfTI, series selection, localizers, gaps."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from helpers import sitk_image, write_dicom_slice
from mrisr.errors import InputError
from mrisr.io.dicom import SeriesInfo, is_dicom_file, is_dicom_folder, list_series
from mrisr.io.read import load_volume
from mrisr.io.writer import save_volume

SHAPE = (5, 6, 4)  # columns, rows, slices
# Sagittal-oblique: first axis runs anterior-posterior-ish, slices step along left-right.
# Right-handed: the slices step along row x column, the order the reader sorts them in.
AFFINE = np.eye(4)
AFFINE[:3, :3] = Rotation.from_euler("zyx", [80, 15, -10], degrees=True).as_matrix() @ np.diag([0.9, 1.1, 2.5])
AFFINE[:3, 3] = [20.5, -31.25, 14.0]
UID_A, UID_B = "1.2.826.0.1.3680043.2.1125.1.1", "1.2.826.0.1.3680043.2.1125.1.2"


def _data(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-100, 1000, size=SHAPE).astype(np.int16)






def _write_series(folder, data=None, affine=AFFINE, uid=UID_A, skip=(), prefix="im", description="T2 test"):
    data = _data() if data is None else data
    folder.mkdir(exist_ok=True)
    img = sitk_image(data, affine)
    # Files written in reverse order with shuffled names: the reader must sort by position.
    for k in reversed(range(data.shape[2])):
        if k not in skip:
            write_dicom_slice(folder / f"{prefix}{(7 * k) % 11:03d}.dcm", img[:, :, k:k + 1], uid, k + 1, description)
    return data


def test_series_reads_with_the_same_geometry_and_data_as_nifti(tmp_path):
    data = _write_series(tmp_path / "dcm")
    (tmp_path / "dcm" / "README.txt").write_text("not an image")
    (tmp_path / "dcm" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 20)
    vol = load_volume(tmp_path / "dcm")
    save_volume(data.astype(np.float32), AFFINE, tmp_path / "ref.nii.gz")
    ref = load_volume(tmp_path / "ref.nii.gz")
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-4)
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-4)
    np.testing.assert_array_equal(vol.data, ref.data)
    assert vol.warnings == []
    assert vol.source_dtype == np.int16
    assert vol.meta["series_uid"] == UID_A and vol.meta["n_slices"] == SHAPE[2]
    # world position of a voxel agrees with ITK's (LPS) view of the slice file
    corner = (vol.affine @ [2, 3, 1, 1])[:3]
    itk_point = sitk_image(data, AFFINE).TransformIndexToPhysicalPoint((2, 3, 1))
    np.testing.assert_allclose(corner, np.array(itk_point) * [-1, -1, 1], atol=1e-4)


def test_left_handed_stack_is_read_in_normal_order_same_world(tmp_path):
    flip = np.diag([1.0, 1.0, -1.0, 1.0])
    flip[2, 3] = SHAPE[2] - 1  # k -> n - 1 - k
    left = AFFINE @ flip
    data = _write_series(tmp_path / "dcm", affine=left)
    vol = load_volume(tmp_path / "dcm")
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-4)  # = left @ flip: same voxels in space
    np.testing.assert_array_equal(vol.data, data[:, :, ::-1])


def test_dicom_output_gets_scanner_codes(tmp_path):
    _write_series(tmp_path / "dcm")
    vol = load_volume(tmp_path / "dcm")
    out = save_volume(vol.data, vol.affine, tmp_path / "o.nii.gz", template=vol, dtype="input")
    hdr = nib.load(out).header
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (1, 1)
    assert hdr.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), vol.data)


def test_list_series_and_helpers(tmp_path):
    _write_series(tmp_path / "dcm", uid=UID_A, description="T2 sag")
    _write_series(tmp_path / "dcm", uid=UID_B, prefix="b", description="T1 ax")
    (tmp_path / "dcm" / "notes.txt").write_text("hello")
    series = list_series(tmp_path / "dcm")
    assert [(s.uid, s.description, s.n_slices) for s in series] == [(UID_A, "T2 sag", 4), (UID_B, "T1 ax", 4)]
    assert isinstance(series[0], SeriesInfo) and len(series[0].files) == 4
    assert all(is_dicom_file(f) for s in series for f in s.files)
    assert not is_dicom_file(tmp_path / "dcm" / "notes.txt")
    assert is_dicom_folder(tmp_path / "dcm") and not is_dicom_folder(tmp_path)
    with pytest.raises(AttributeError):
        series[0].uid = "x"  # frozen


def test_several_series_are_refused_listing_them(tmp_path):
    _write_series(tmp_path / "dcm", uid=UID_A, description="T2 sag")
    data_b = _write_series(tmp_path / "dcm", data=_data(1), uid=UID_B, prefix="b", description="T1 ax")
    with pytest.raises(InputError) as err:
        load_volume(tmp_path / "dcm")
    msg = str(err.value)
    assert UID_A in msg and UID_B in msg and "--series" in msg
    assert "T2 sag" in msg and "T1 ax" in msg and "4 slices" in msg
    vol = load_volume(tmp_path / "dcm", series=UID_B)
    np.testing.assert_array_equal(vol.data, data_b)
    with pytest.raises(InputError, match="no series with UID '9.9'"):
        load_volume(tmp_path / "dcm", series="9.9")


def test_localizers_are_dropped_with_a_warning(tmp_path):
    data = _write_series(tmp_path / "dcm")
    axial = sitk_image(_data(2)[:, :, :1], np.diag([1.0, 1.0, 1.0, 1.0]))
    write_dicom_slice(tmp_path / "dcm" / "loc1.dcm", axial, UID_A, 90)  # other orientation
    tilted = sitk_image(data[:, :, :1], AFFINE)
    write_dicom_slice(tmp_path / "dcm" / "loc2.dcm", tilted, UID_A, 91, image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    vol = load_volume(tmp_path / "dcm")
    assert len(vol.warnings) == 1
    assert "dropped 2 localizer" in vol.warnings[0] and "loc1.dcm" in vol.warnings[0]
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-4)


def test_missing_slice_is_refused_with_the_gap(tmp_path):
    _write_series(tmp_path / "dcm", data=_data().repeat(2, axis=2)[:, :, :6], skip=(3,))
    with pytest.raises(InputError) as err:
        load_volume(tmp_path / "dcm")
    msg = str(err.value)
    assert "missing slices or uneven slice spacing" in msg
    assert "expected gaps of 2.5 mm" in msg and "5 mm between slices 2 and 3" in msg
    assert "--allow-uneven" in msg


def test_allow_uneven_resamples_onto_a_regular_grid(tmp_path):
    # A linear ramp along the slices: linear interpolation restores the missing slice exactly.
    ramp = (np.arange(6, dtype=np.int16) * 100)[None, None, :] + np.zeros(SHAPE[:2] + (6,), np.int16)
    ramp[0, 0, :] += 7
    _write_series(tmp_path / "dcm", data=ramp, skip=(3,))
    vol = load_volume(tmp_path / "dcm", allow_uneven=True)
    assert vol.data.shape == SHAPE[:2] + (6,)
    np.testing.assert_allclose(vol.data, ramp, atol=1e-3)
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-4)
    assert len(vol.warnings) == 1 and "resampled onto 6 regular slices 2.5 mm apart" in vol.warnings[0]


def test_single_dicom_file(tmp_path):
    data = _write_series(tmp_path / "dcm")
    first = sorted(list_series(tmp_path / "dcm")[0].files)[0]
    vol = load_volume(first)
    assert vol.data.shape == SHAPE[:2] + (1,)
    k = int(round(np.linalg.solve(AFFINE, np.r_[vol.affine[:3, 3], 1])[2]))
    np.testing.assert_array_equal(vol.data[:, :, 0], data[:, :, k])
    np.testing.assert_allclose(vol.affine[:3, :2], AFFINE[:3, :2], atol=1e-5)


def test_empty_and_non_dicom_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    with pytest.raises(InputError, match="holds no DICOM image files"):
        load_volume(tmp_path / "a")


def test_gantry_tilt_gives_a_sheared_affine(tmp_path):
    # Slice origins step along the normal AND sideways (tilted gantry): the stack is sheared.
    data = _data()
    img = sitk_image(data, AFFINE)
    tilt = np.array([0.3, -0.2, 0.1])  # mm per slice, RAS
    folder = tmp_path / "dcm"
    folder.mkdir()
    for k in range(SHAPE[2]):
        sl = img[:, :, k:k + 1]
        origin_ras = AFFINE[:3, 3] + k * (AFFINE[:3, 2] + tilt)
        sl.SetOrigin((origin_ras * [-1, -1, 1]).tolist())
        write_dicom_slice(folder / f"s{k}.dcm", sl, UID_A, k + 1)
    vol = load_volume(folder)
    expected = AFFINE.copy()
    expected[:3, 2] += tilt
    np.testing.assert_allclose(vol.affine, expected, atol=1e-4)
    np.testing.assert_array_equal(vol.data, data)
