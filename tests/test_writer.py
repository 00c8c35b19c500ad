"""The writer: atomic, verified, never clobbering; JSON sidecars."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

import mrisr.io.writer as writer
from mrisr.errors import MrisrError, OutputError
from mrisr.io.writer import check_output_path, encode_data, save_json_atomic, save_volume

SHAPE = (4, 5, 3)
AFFINE = np.array([[0.0, 0.0, 2.0, -30.0], [-1.0, 0.0, 0.0, 12.0], [0.0, 1.2, 0.0, -8.5], [0, 0, 0, 1.0]])


def _data(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def _listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_writes_gz_and_plain_nifti(tmp_path):
    for name in ("a.nii.gz", "b.nii"):
        out = save_volume(_data(), AFFINE, tmp_path / name)
        img = nib.load(out)
        np.testing.assert_array_equal(np.asarray(img.dataobj), _data())
        np.testing.assert_allclose(img.header.get_sform(), AFFINE, atol=1e-6)
    assert (tmp_path / "a.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "b.nii").read_bytes()[344:348] == b"n+1\x00"
    assert _listing(tmp_path) == ["a.nii.gz", "b.nii"]


def test_output_is_deterministic(tmp_path):
    a = save_volume(_data(), AFFINE, tmp_path / "a.nii.gz")
    b = save_volume(_data(), AFFINE, tmp_path / "b.nii.gz")
    assert a.read_bytes() == b.read_bytes()  # no time stamp or temp name in the gzip header


@pytest.mark.parametrize("name", ["out.nrrd", "out.nii.gz.bak", "out", ".nii.gz"])
def test_refuses_other_suffixes(tmp_path, name):
    with pytest.raises(OutputError, match="must end in .nii.gz or .nii"):
        save_volume(_data(), AFFINE, tmp_path / name)


def test_temporary_file_is_hidden_in_the_destination_folder(tmp_path, monkeypatch):
    seen = []
    real_verify = writer._verify_nifti

    def spy(tmp, raw, affine):
        seen.append((tmp, _listing(tmp_path)))
        real_verify(tmp, raw, affine)

    monkeypatch.setattr(writer, "_verify_nifti", spy)
    save_volume(_data(), AFFINE, tmp_path / "sub-01_T2w.nii.gz")
    tmp, listing = seen[0]
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".sub-01_T2w.tmp-") and tmp.name.endswith(".nii.gz")
    assert listing == [tmp.name]
    assert _listing(tmp_path) == ["sub-01_T2w.nii.gz"]


def test_verification_catches_a_bad_file(tmp_path, monkeypatch):
    def corrupt(img, f, gz):
        f.write(b"not a nifti at all")

    monkeypatch.setattr(writer, "_write_nifti", corrupt)
    with pytest.raises(OutputError, match="failed its check"):
        save_volume(_data(), AFFINE, tmp_path / "o.nii")
    assert _listing(tmp_path) == []


def test_output_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        out = save_volume(_data(), AFFINE, tmp_path / "o.nii")
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o640


def test_output_created_meanwhile_is_not_clobbered(tmp_path, monkeypatch):
    out = tmp_path / "o.nii"
    real_verify = writer._verify_nifti

    def racer(tmp, raw, affine):
        real_verify(tmp, raw, affine)
        out.write_bytes(b"someone else's file")

    monkeypatch.setattr(writer, "_verify_nifti", racer)
    with pytest.raises(OutputError, match="already exists"):
        save_volume(_data(), AFFINE, out)
    assert out.read_bytes() == b"someone else's file"
    assert _listing(tmp_path) == ["o.nii"]


def test_bad_data_and_affine(tmp_path):
    with pytest.raises(OutputError, match="3D or 4D"):
        save_volume(np.zeros((3, 3)), AFFINE, tmp_path / "o.nii")
    with pytest.raises(ValueError, match="singular"):
        parallel = np.array([[1.0, 2.0, 0, 0], [1.0, 2.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
        save_volume(_data(), parallel, tmp_path / "o.nii")
    with pytest.raises(MrisrError, match="unknown dtype"):
        save_volume(_data(), AFFINE, tmp_path / "o.nii", dtype="float16")
    with pytest.raises(MrisrError, match="needs the input volume"):
        save_volume(_data(), AFFINE, tmp_path / "o.nii", dtype="input")
    assert _listing(tmp_path) == []


def test_encode_data_integer_types():
    vals = np.array([[[-0.5, 0.5, 1.5, 254.6, 300.0, -7.0, np.nan]]], np.float32)
    raw, slope, inter = encode_data(vals, "uint8")
    assert raw.dtype == np.uint8 and (slope, inter) == (None, None)
    assert raw.ravel().tolist() == [0, 0, 2, 255, 255, 0, 0]
    big = np.array([[[3e9, -3e9, 12.5]]])
    assert encode_data(big, "int32")[0].ravel().tolist() == [2**31 - 1, -(2**31), 12]


def test_check_output_path_before_work(tmp_path):
    assert check_output_path(tmp_path / "x.nii.gz") == tmp_path / "x.nii.gz"
    (tmp_path / "x.nii.gz").write_bytes(b"")
    with pytest.raises(OutputError, match="use --force"):
        check_output_path(tmp_path / "x.nii.gz")


# --------------------------------------------------------------------------- JSON sidecars


def test_save_json_atomic(tmp_path):
    obj = {"psnr": np.float32(31.5), "shape": np.array([2, 3]), "path": tmp_path, "bad": float("nan"),
           "n": np.int64(3), "t": (1, 2)}
    out = save_json_atomic(obj, tmp_path / "o.json")
    assert json.loads(out.read_text()) == {"psnr": 31.5, "shape": [2, 3], "path": str(tmp_path), "bad": None,
                                           "n": 3, "t": [1, 2]}
    with pytest.raises(OutputError, match="use --force"):
        save_json_atomic({"a": 1}, out)
    save_json_atomic({"a": 1}, out, force=True)
    assert json.loads(out.read_text()) == {"a": 1}
    assert _listing(tmp_path) == ["o.json"]


def test_save_json_atomic_failure_keeps_old_file(tmp_path, monkeypatch):
    out = save_json_atomic({"a": 1}, tmp_path / "o.json")
    before = out.read_bytes()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_publish", fail)
    with pytest.raises(KeyboardInterrupt):
        save_json_atomic({"a": 2}, out, force=True)
    assert out.read_bytes() == before and _listing(tmp_path) == ["o.json"]
    with pytest.raises(TypeError):
        save_json_atomic({"a": object()}, tmp_path / "p.json")
    assert _listing(tmp_path) == ["o.json"]


def test_nifti_image_in_memory_follows_the_same_policy(tmp_path):
    import mrisr.io.read as mio

    src = tmp_path / "in.nii"
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(SHAPE)
    hdr.set_data_dtype(np.int16)
    hdr.set_sform(AFFINE, code=3)
    hdr.set_qform(AFFINE, code=1)
    hdr.set_xyzt_units("mm", "msec")
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), None, header=hdr), str(src))
    vol = mio.load_volume(src)
    img = writer.nifti_image(_data() * 10, AFFINE, template=vol, dtype="input")
    assert (int(img.header["sform_code"]), int(img.header["qform_code"])) == (3, 1)
    assert img.get_data_dtype() == np.int16 and img.header.get_xyzt_units() == ("mm", "msec")
    np.testing.assert_array_equal(img.affine, AFFINE)
    nib.save(img, str(tmp_path / "mem.nii"))
    written = save_volume(_data() * 10, AFFINE, tmp_path / "disk.nii", template=vol, dtype="input")
    assert (tmp_path / "mem.nii").read_bytes() == written.read_bytes()
