"""Reading volumes (NIfTI, MGH, NRRD, MetaImage) and NIfTI round trips through the writer."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from helpers import sitk_image
from mrisr.io.nifti import has_shear, nifti_affine
from mrisr.io.read import load_volume
from mrisr.io.sitk import lps_to_ras, sitk_to_ras
from mrisr.io.writer import save_volume
from mrisr.volume import Volume

SHAPE = (5, 6, 4)


def _rigid(angles_deg, spacing, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix() * np.asarray(spacing)
    a[:3, 3] = origin
    return a


OBLIQUE = _rigid([25, -10, 40], [0.9, 1.1, 2.5], [-60.25, 12.5, 33.0])
SHEARED = np.array([[0.9, 0.25, 0.0, -40.0], [0.0, 1.1, 0.3, 20.5], [0.1, 0.0, 2.0, -12.0], [0, 0, 0, 1.0]])
LEFT_HANDED = _rigid([0, 20, 0], [1.0, 1.2, 3.0], [5.0, -7.0, 9.0]) @ np.diag([-1.0, 1, 1, 1])
AFFINES = {"oblique": OBLIQUE, "sheared": SHEARED, "left-handed": LEFT_HANDED}


def _data(shape=SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, size=shape).astype(np.float32)


def _write_nifti(path, data, affine, sform_code=1, qform_code=1, klass=nib.Nifti1Image, units=("mm", "sec"),
                 tr=None):
    hdr = klass.header_class()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(data.dtype)
    hdr.set_sform(affine, code=sform_code)
    hdr.set_qform(affine, code=qform_code)
    hdr.set_xyzt_units(*units)
    if tr is not None:
        hdr["pixdim"][4] = tr
    nib.save(klass(data, None, header=hdr), str(path))  # affine None: keep the header's forms and codes
    return path


@pytest.mark.parametrize("name", list(AFFINES))
def test_nifti_round_trip_keeps_data_affine_and_codes(tmp_path, name):
    affine, data = AFFINES[name], _data()
    src = _write_nifti(tmp_path / "in.nii.gz", data, affine, sform_code=1, qform_code=2, units=("mm", "msec"))
    vol = load_volume(src)
    assert vol.data.dtype == np.float32 and vol.data.shape == SHAPE
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    assert vol.meta["sform_code"] == 1 and vol.meta["qform_code"] == 2
    assert vol.warnings == []  # even sheared: the qform is the expected rigid fit

    out = save_volume(vol.data, vol.affine, tmp_path / "out.nii.gz", template=vol, inputs=[src])
    back = nib.load(out)
    hdr = back.header
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (1, 2)
    assert hdr.get_xyzt_units() == ("mm", "msec")
    np.testing.assert_allclose(hdr.get_sform(), affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    assert back.get_data_dtype() == np.float32
    assert (back.dataobj.slope, back.dataobj.inter) == (1.0, 0.0)  # no scaling
    again = load_volume(out)
    np.testing.assert_allclose(again.affine, affine, atol=1e-6)
    assert again.warnings == []


def test_left_handed_affine_stays_left_handed(tmp_path):
    out = save_volume(_data(), LEFT_HANDED, tmp_path / "lh.nii")
    hdr = nib.load(out).header
    assert np.linalg.det(LEFT_HANDED[:3, :3]) < 0
    assert hdr["pixdim"][0] == -1  # qfac
    np.testing.assert_allclose(hdr.get_qform(), LEFT_HANDED, atol=1e-5)
    np.testing.assert_allclose(hdr.get_sform(), LEFT_HANDED, atol=1e-6)


def test_sheared_output_has_exact_sform_and_rigid_qform_readable_by_itk(tmp_path):
    assert has_shear(SHEARED) and not has_shear(OBLIQUE)
    out = save_volume(_data(), SHEARED, tmp_path / "sheared.nii.gz")
    hdr = nib.load(out).header
    np.testing.assert_allclose(hdr.get_sform(), SHEARED, atol=1e-6)
    qform = hdr.get_qform()
    assert not has_shear(qform, tol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(qform[:3, :3], axis=0), np.linalg.norm(SHEARED[:3, :3], axis=0),
                               rtol=1e-5)
    np.testing.assert_allclose(qform[:3, 3], SHEARED[:3, 3], atol=1e-4)
    assert sitk.ReadImage(str(out)).GetSize() == SHAPE  # ITK needs an orthogonal form


def test_sheared_affine_with_qform_only_template_switches_sform_on(tmp_path):
    src = _write_nifti(tmp_path / "q.nii", _data(), OBLIQUE, sform_code=0, qform_code=1)
    vol = load_volume(src)
    assert vol.meta["affine_source"] == "qform"
    out = save_volume(vol.data, SHEARED, tmp_path / "o.nii", template=vol)
    hdr = nib.load(out).header
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (1, 1)
    np.testing.assert_allclose(load_volume(out).affine, SHEARED, atol=1e-6)


def test_4d_keeps_tr_and_units(tmp_path):
    data = _data(SHAPE + (3,))
    src = _write_nifti(tmp_path / "bold.nii.gz", data, OBLIQUE, tr=2.5, units=("mm", "sec"))
    vol = load_volume(src)
    assert vol.data.shape == SHAPE + (3,) and vol.n_volumes == 3
    assert vol.meta["tr"] == 2.5 and vol.meta["time_units"] == "sec"
    np.testing.assert_array_equal(vol.data, data)
    out = save_volume(vol.data[:, :, :, :2], vol.affine, tmp_path / "o.nii.gz", template=vol)
    hdr = nib.load(out).header
    assert hdr.get_data_shape() == SHAPE + (2,)
    assert hdr["pixdim"][4] == pytest.approx(2.5)
    assert hdr.get_xyzt_units() == ("mm", "sec")


def test_4d_with_one_volume_is_read_as_3d(tmp_path):
    src = _write_nifti(tmp_path / "one.nii", _data(SHAPE + (1,)), OBLIQUE)
    assert load_volume(src).data.shape == SHAPE


def test_scl_slope_and_inter_are_honoured(tmp_path):
    raw = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) - 50
    img = nib.Nifti1Image(raw, OBLIQUE)
    img.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "s.nii"))
    vol = load_volume(tmp_path / "s.nii")
    assert vol.source_dtype == np.int16
    np.testing.assert_array_equal(vol.data, raw.astype(np.float32) * np.float32(0.5) + np.float32(10))


def test_dtype_input_rounds_and_clips(tmp_path):
    raw = np.zeros(SHAPE, dtype=np.int16)
    src = tmp_path / "i16.nii.gz"
    nib.save(nib.Nifti1Image(raw, OBLIQUE, dtype=np.int16), str(src))
    vol = load_volume(src)
    vals = np.zeros(SHAPE, np.float32)
    vals.flat[:7] = [1.5, 2.5, -1.4, 40000.0, -40000.0, np.nan, 7.6]
    out = save_volume(vals, vol.affine, tmp_path / "o.nii.gz", template=vol, dtype="input")
    back = nib.load(out)
    assert back.get_data_dtype() == np.int16
    assert (back.dataobj.slope, back.dataobj.inter) == (1.0, 0.0)
    assert np.asarray(back.dataobj).flat[:7].tolist() == [2, 2, -1, 32767, -32768, 0, 8]


def test_dtype_input_reuses_the_input_scaling(tmp_path):
    src = tmp_path / "scaled.nii"
    img = nib.Nifti1Image(np.zeros(SHAPE, np.int16), OBLIQUE, dtype=np.int16)
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(src))
    vol = load_volume(src)
    vals = np.full(SHAPE, 10.0, np.float32)
    vals.flat[:4] = [10.5, 11.2, 1e9, -1e9]
    out = save_volume(vals, vol.affine, tmp_path / "o.nii", template=vol, dtype="input")
    back = nib.load(out)
    assert (back.dataobj.slope, back.dataobj.inter) == (0.5, 10.0)  # nibabel moves scaling to the proxy
    assert back.dataobj.get_unscaled().flat[:4].tolist() == [1, 2, 32767, -32768]
    np.testing.assert_allclose(load_volume(out).data.flat[:4], [10.5, 11.0, 10 + 0.5 * 32767, 10 - 0.5 * 32768])


def test_nifti2_round_trip(tmp_path):
    data = _data()
    src = _write_nifti(tmp_path / "n2.nii.gz", data, OBLIQUE, klass=nib.Nifti2Image)
    vol = load_volume(src)
    assert vol.meta["format"] == "nifti2"
    out = save_volume(vol.data, vol.affine, tmp_path / "o.nii.gz", template=vol)
    back = nib.load(out)
    assert isinstance(back, nib.Nifti2Image)
    np.testing.assert_allclose(back.header.get_sform(), OBLIQUE, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)


def test_affine_choice_sform_then_qform_then_base():
    h = nib.Nifti1Header()
    h.set_data_shape(SHAPE)
    h.set_qform(OBLIQUE, code=1)
    h.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]), code=0)
    a, src, warn = nifti_affine(h)
    assert src == "qform" and warn == []
    np.testing.assert_allclose(a, OBLIQUE, atol=1e-5)
    h["qform_code"] = 0
    h.set_zooms((2.0, 3.0, 4.0))
    a, src, warn = nifti_affine(h)
    assert src == "base" and len(warn) == 1 and "orientation unknown" in warn[0]
    np.testing.assert_allclose(np.abs(np.diag(a)[:3]), [2, 3, 4])


def test_no_orientation_input_gives_aligned_codes(tmp_path):
    src = _write_nifti(tmp_path / "bare.nii", _data(), OBLIQUE, sform_code=0, qform_code=0)
    vol = load_volume(src)
    assert vol.meta["affine_source"] == "base"
    out = save_volume(vol.data, vol.affine, tmp_path / "o.nii", template=vol)
    hdr = nib.load(out).header
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (2, 2)
    np.testing.assert_allclose(load_volume(out).affine, vol.affine, atol=1e-6)


def test_template_without_nifti_header_gets_scanner_codes_and_units(tmp_path):
    tmpl = Volume(data=_data(SHAPE + (2,)), affine=OBLIQUE, meta={"tr": 3.0})
    out = save_volume(tmpl.data, tmpl.affine, tmp_path / "o.nii.gz", template=tmpl)
    hdr = nib.load(out).header
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (1, 1)
    assert hdr.get_xyzt_units() == ("mm", "sec")
    assert hdr["pixdim"][4] == pytest.approx(3.0)


# --------------------------------------------------------------------------- SimpleITK / MGH




def test_sitk_to_ras_orders_axes_and_flips_lps():
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    img = sitk_image(data, OBLIQUE)
    arr, aff = sitk_to_ras(img)
    np.testing.assert_array_equal(arr, data)
    np.testing.assert_allclose(aff, OBLIQUE, atol=1e-12)
    # voxel (1, 2, 3) lands where ITK says, once LPS is flipped to RAS
    lps_point = np.array(img.TransformIndexToPhysicalPoint((1, 2, 3)))
    np.testing.assert_allclose((aff @ [1, 2, 3, 1])[:3], lps_point * [-1, -1, 1], atol=1e-9)
    np.testing.assert_allclose(lps_to_ras(np.eye(4)), np.diag([-1.0, -1, 1, 1]))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_sitk_formats_read_with_ras_geometry(tmp_path, suffix):
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    path = tmp_path / f"img{suffix}"
    sitk.WriteImage(sitk_image(data, OBLIQUE), str(path))
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, OBLIQUE, atol=1e-6)
    assert vol.source_dtype == np.int16 and vol.header is None


def test_mgz_read_through_nibabel(tmp_path):
    data = _data()
    nib.save(nib.MGHImage(data, OBLIQUE), str(tmp_path / "a.mgz"))
    vol = load_volume(tmp_path / "a.mgz")
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, OBLIQUE, atol=1e-5)


def test_nifti_and_sitk_paths_agree(tmp_path):
    data = _data()
    _write_nifti(tmp_path / "a.nii", data, OBLIQUE)
    sitk.WriteImage(sitk_image(data, OBLIQUE), str(tmp_path / "a.nrrd"))
    a, b = load_volume(tmp_path / "a.nii"), load_volume(tmp_path / "a.nrrd")
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)


def test_input_file_is_not_modified(tmp_path):
    src = _write_nifti(tmp_path / "in.nii.gz", _data(), OBLIQUE)
    before = (src.read_bytes(), src.stat().st_mtime_ns)
    load_volume(src)
    assert (src.read_bytes(), src.stat().st_mtime_ns) == before


def test_series_option_is_ignored_with_a_warning_for_files(tmp_path):
    src = _write_nifti(tmp_path / "in.nii", _data(), OBLIQUE)
    vol = load_volume(src, series="1.2.3")
    assert len(vol.warnings) == 1 and "1.2.3" in vol.warnings[0]


def test_big_endian_nifti(tmp_path):
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_shape(SHAPE)
    hdr.set_data_dtype(np.int16)
    hdr.set_sform(OBLIQUE, code=1)
    nib.save(nib.Nifti1Image(data, None, header=hdr), str(tmp_path / "be.nii"))
    assert (tmp_path / "be.nii").read_bytes()[:4] == b"\x00\x00\x01\x5c"
    vol = load_volume(tmp_path / "be.nii")
    np.testing.assert_array_equal(vol.data, data)
    assert vol.source_dtype == np.dtype("int16") and vol.source_dtype.byteorder in "=|"
    out = save_volume(vol.data, vol.affine, tmp_path / "o.nii", template=vol, dtype="input")
    np.testing.assert_array_equal(load_volume(out).data, data)


def test_unusual_spatial_units_are_kept_and_flagged(tmp_path):
    src = _write_nifti(tmp_path / "um.nii", _data(), OBLIQUE, units=("micron", "sec"))
    vol = load_volume(src)
    assert len(vol.warnings) == 1 and "micron" in vol.warnings[0]
    np.testing.assert_allclose(vol.affine, OBLIQUE, atol=1e-6)  # numbers unchanged
    out = save_volume(vol.data, vol.affine, tmp_path / "o.nii", template=vol)
    assert nib.load(out).header.get_xyzt_units() == ("micron", "sec")
