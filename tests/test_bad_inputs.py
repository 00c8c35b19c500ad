"""The bad-input corpus: every file mrisr must refuse (or repair on request), and unsafe writes.

Each case is a tiny file made here; each refusal must be an InputError /
OutputError naming the file and saying what is wrong.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

import mrisr.io.writer as writer
from helpers import nifti_header
from mrisr.errors import InputError, OutputError
from mrisr.io.read import load_volume
from mrisr.io.writer import save_volume

SHAPE = (4, 5, 3)
AFFINE = np.array([[0.0, 0.0, 2.0, -30.0], [-1.0, 0.0, 0.0, 12.0], [0.0, 1.2, 0.0, -8.5], [0, 0, 0, 1.0]])


def _data(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def _header(shape=SHAPE, dtype=np.float32, affine=AFFINE, sform_code=1, qform_code=1) -> nib.Nifti1Header:
    return nifti_header(shape, dtype, affine, sform_code, qform_code)


def _save(path, data, hdr):
    """Save with exactly this header (affine None: nibabel leaves the forms alone)."""
    nib.save(nib.Nifti1Image(data, None, header=hdr), str(path))
    return path


def _raw_nifti(path, hdr, payload: bytes):
    """Write header bytes + extension flag + payload, bypassing nibabel's checks."""
    hdr["vox_offset"] = 352
    path.write_bytes(hdr.binaryblock + b"\0\0\0\0" + payload)
    return path


def _refused(path, *fragments, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        load_volume(path, **kwargs)
    msg = str(err.value)
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


# --------------------------------------------------------------------------- files and compression


def test_truncated_nii_gz(tmp_path):
    good = save_volume(np.random.default_rng(1).normal(size=(8, 8, 8)), AFFINE, tmp_path / "good.nii.gz")
    blob = good.read_bytes()
    for cut in (len(blob) // 2, len(blob) - 4, 30):
        bad = tmp_path / f"cut{cut}.nii.gz"
        bad.write_bytes(blob[:cut])
        _refused(bad, "truncated or corrupt gzip")


def test_corrupt_gzip_data(tmp_path):
    blob = bytearray(save_volume(_data(), AFFINE, tmp_path / "g.nii.gz").read_bytes())
    blob[-8] ^= 0xFF  # CRC
    (tmp_path / "crc.nii.gz").write_bytes(bytes(blob))
    _refused(tmp_path / "crc.nii.gz", "corrupt gzip")


def test_nii_gz_that_is_not_gzip(tmp_path):
    plain = save_volume(_data(), AFFINE, tmp_path / "plain.nii")
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(plain.read_bytes())
    _refused(fake, "not gzip-compressed", "rename it to .nii")
    text = tmp_path / "text.nii.gz"
    text.write_text("hello world")
    _refused(text, "not gzip-compressed", "b'hell'")


@pytest.mark.parametrize("name", ["empty.nii.gz", "empty.nii", "empty.nrrd", "empty.dcm"])
def test_zero_length_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    _refused(tmp_path / name, "file is empty (0 bytes)")


def test_truncated_uncompressed_nii(tmp_path):
    blob = save_volume(_data(), AFFINE, tmp_path / "g.nii").read_bytes()
    (tmp_path / "short.nii").write_bytes(blob[:-10])
    _refused(tmp_path / "short.nii", "truncated", f"promises {len(blob):,} bytes")
    (tmp_path / "head.nii").write_bytes(blob[:200])
    _refused(tmp_path / "head.nii", "truncated", "shorter than a NIfTI header")


def test_not_a_nifti(tmp_path):
    (tmp_path / "junk.nii").write_bytes(os.urandom(400))
    _refused(tmp_path / "junk.nii", "not a NIfTI file")
    (tmp_path / "junk.bin").write_bytes(b"just some text, not an image\n" * 20)
    _refused(tmp_path / "junk.bin", "not a recognised image format")


def test_nifti_pair_header_in_a_nii(tmp_path):
    hdr = _header()
    hdr["magic"] = b"ni1"
    _refused(_raw_nifti(tmp_path / "pair.nii", hdr, _data().tobytes("F")), "NIfTI pair")


def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.nii.gz", "no such file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files with mode 000")
def test_unreadable_file(tmp_path):
    f = save_volume(_data(), AFFINE, tmp_path / "locked.nii.gz")
    f.chmod(0)
    try:
        _refused(f, "permission denied")
    finally:
        f.chmod(0o644)


# --------------------------------------------------------------------------- shapes and voxel types


def test_zero_sized_dimension(tmp_path):
    hdr = _header()
    hdr["dim"][2] = 0
    _refused(_raw_nifti(tmp_path / "zero.nii", hdr, b""), "zero-sized dimension", "(4, 0, 3)")


def test_5d_and_vector_images(tmp_path):
    data = np.zeros(SHAPE + (1, 2), np.float32)
    _refused(_save(tmp_path / "5d.nii.gz", data, _header(data.shape)), "5D image", "3D images and 4D")
    hdr = _header(SHAPE + (1, 3))
    hdr.set_intent("vector")
    _refused(_save(tmp_path / "vec.nii.gz", np.zeros(SHAPE + (1, 3), np.float32), hdr), "vector voxels")
    # 5D with singleton extra axes is just a 3D image
    ok = np.ones(SHAPE + (1, 1), np.float32)
    assert load_volume(_save(tmp_path / "ok.nii", ok, _header(ok.shape))).data.shape == SHAPE


def test_rgb_and_complex_nifti(tmp_path):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    _refused(_save(tmp_path / "rgb.nii.gz", rgb, _header(dtype=rgb.dtype)), "RGB")
    cplx = np.zeros(SHAPE, np.complex64)
    _refused(_save(tmp_path / "c.nii.gz", cplx, _header(dtype=np.complex64)), "complex voxels")


def test_nan_and_inf_refused_or_replaced(tmp_path):
    data = _data()
    data[0, 0, 0], data[1, 2, 0], data[3, 4, 2] = np.nan, np.inf, -np.inf
    path = _save(tmp_path / "nan.nii.gz", data, _header())
    _refused(path, "3 of 60 voxels are not finite (1 NaN, 2 Inf)", "--nan-to-num")
    vol = load_volume(path, nan_to_num=True)
    assert vol.data[0, 0, 0] == 0 and vol.data[1, 2, 0] == 0 and vol.data[3, 4, 2] == 0
    assert np.isfinite(vol.data).all()
    np.testing.assert_array_equal(vol.data[2], data[2])
    assert len(vol.warnings) == 1 and "replaced with 0" in vol.warnings[0]


# --------------------------------------------------------------------------- geometry


def test_qform_sform_disagreement_uses_sform_with_one_warning(tmp_path):
    hdr = _header()
    shifted = AFFINE.copy()
    shifted[:3, 3] += [2.0, 0.0, 0.0]
    hdr.set_qform(shifted, code=1)
    vol = load_volume(_save(tmp_path / "qs.nii.gz", _data(), hdr))
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
    assert len(vol.warnings) == 1
    assert "qform and sform disagree" in vol.warnings[0] and "2 mm" in vol.warnings[0]
    # tiny float32 noise is not a disagreement
    hdr.set_qform(AFFINE + np.pad(np.full((3, 1), 2e-5), ((0, 1), (3, 0))), code=1)
    assert load_volume(_save(tmp_path / "close.nii.gz", _data(), hdr)).warnings == []


def test_sform_code_with_all_zero_matrix(tmp_path):
    hdr = _header()
    for row in ("srow_x", "srow_y", "srow_z"):
        hdr[row] = 0
    _refused(_save(tmp_path / "zero_sform.nii.gz", _data(), hdr), "sform matrix is all zeros")


def test_singular_affine(tmp_path):
    singular = AFFINE.copy()
    singular[:3, 1] = singular[:3, 0] * 2  # parallel voxel axes
    _refused(_save(tmp_path / "sing.nii.gz", _data(), _header(affine=singular, qform_code=0)), "singular")


def test_zero_voxel_size(tmp_path):
    flat = AFFINE.copy()
    flat[:3, 2] = 0
    _refused(_save(tmp_path / "zs.nii", _data(), _header(affine=flat, qform_code=0)), "zero voxel size")
    hdr = _header(sform_code=0)
    hdr["pixdim"][2] = 0  # qform voxel size (nibabel would silently make it 1)
    _refused(_raw_nifti(tmp_path / "zq.nii", hdr, _data().tobytes("F")), "zero voxel size")


def test_nan_in_affine(tmp_path):
    hdr = _header()
    hdr["srow_x"][3] = np.nan
    _refused(_save(tmp_path / "nanaff.nii", _data(), hdr), "NaN or Inf")


# --------------------------------------------------------------------------- writing


def _listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_existing_output_refused_without_force(tmp_path):
    out = save_volume(_data(0), AFFINE, tmp_path / "o.nii.gz")
    before = out.read_bytes()
    with pytest.raises(OutputError, match=r"o\.nii\.gz already exists; use --force"):
        save_volume(_data(1), AFFINE, out)
    assert out.read_bytes() == before
    save_volume(_data(1), AFFINE, out, force=True)
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), _data(1))
    assert _listing(tmp_path) == ["o.nii.gz"]


def test_output_equal_to_input_refused(tmp_path):
    src = save_volume(_data(), AFFINE, tmp_path / "in.nii.gz")
    before = src.read_bytes()
    (tmp_path / "sub").mkdir()
    link = tmp_path / "hardlink.nii.gz"
    os.link(src, link)
    for spelling in (src, tmp_path / "sub" / ".." / "in.nii.gz", link):
        with pytest.raises(OutputError, match="is also an input"):
            save_volume(_data(1), AFFINE, spelling, force=True, inputs=[src])
    assert src.read_bytes() == before


def test_missing_or_unwritable_folder(tmp_path, monkeypatch):
    with pytest.raises(OutputError, match="does not exist"):
        save_volume(_data(), AFFINE, tmp_path / "nope" / "o.nii.gz")
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is not a folder"):
        save_volume(_data(), AFFINE, tmp_path / "f" / "o.nii.gz")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(OutputError, match="not writable"):
                save_volume(_data(), AFFINE, ro / "o.nii.gz")
        finally:
            ro.chmod(0o755)

    def deny(*args, **kwargs):  # as root: the folder check passes, creating the file fails
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(writer.tempfile, "mkstemp", deny)
    with pytest.raises(OutputError, match="cannot create a file in .*Permission denied"):
        save_volume(_data(), AFFINE, tmp_path / "o.nii.gz")
    assert not any(name.startswith(".") for name in _listing(tmp_path))  # no temporary file left


def _partial_write(exc):
    def fake(img, f, gz):
        f.write(b"\x1f\x8b partial data")
        raise exc
    return fake


def _raiser(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt(), RuntimeError("boom")],
                         ids=["disk-full", "ctrl-c", "bug"])
@pytest.mark.parametrize("step", ["write", "fsync", "verify", "rename"])
def test_failure_mid_write_leaves_no_temp_and_keeps_old_output(tmp_path, monkeypatch, exc, step):
    out = save_volume(_data(0), AFFINE, tmp_path / "o.nii.gz")
    before = out.read_bytes()
    if step == "write":
        monkeypatch.setattr(writer, "_write_nifti", _partial_write(exc))
    elif step == "fsync":
        monkeypatch.setattr(writer.os, "fsync", _raiser(exc))
    else:
        monkeypatch.setattr(writer, "_verify_nifti" if step == "verify" else "_publish", _raiser(exc))
    if isinstance(exc, KeyboardInterrupt):
        expected = KeyboardInterrupt
    elif isinstance(exc, OSError) or step == "verify":
        expected = OutputError
    else:
        expected = RuntimeError
    with pytest.raises(expected):
        save_volume(_data(1), AFFINE, out, force=True)
    assert _listing(tmp_path) == ["o.nii.gz"]
    assert out.read_bytes() == before


def test_failed_new_output_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_write_nifti", _partial_write(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_volume(_data(), AFFINE, tmp_path / "new.nii.gz")
    assert _listing(tmp_path) == []



def test_truncated_mgz_and_nrrd(tmp_path):
    nib.save(nib.MGHImage(np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32), AFFINE),
             str(tmp_path / "a.mgz"))
    blob = (tmp_path / "a.mgz").read_bytes()
    (tmp_path / "cut.mgz").write_bytes(blob[: len(blob) // 2])
    _refused(tmp_path / "cut.mgz", "truncated or corrupt gzip")
    (tmp_path / "bad.nrrd").write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n1234")
    _refused(tmp_path / "bad.nrrd", "SimpleITK cannot read it")
