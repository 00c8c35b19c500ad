"""Corrupt and extreme NIfTI files: every datatype, scalings, huge dimensions, gzip oddities, data offsets,
values near the float32 limit and integers float32 cannot hold.

Files are built byte by byte where nibabel would refuse or fix them. The
end-to-end cases run ``mrisr upscale BAD GOOD`` in-process and check the
documented outcome: one ``mrisr: error: BAD: ...`` line, exit 1, GOOD written.
"""

from __future__ import annotations

import gzip
import json
import struct
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.nifti1 import data_type_codes
from typer.testing import CliRunner

from mrisr.cli.app import app
from mrisr.errors import InputError
from mrisr.io.checks import MAX_ABS_VALUE
from mrisr.io.nifti import read_nifti_geometry
from mrisr.io.read import load_volume

SHAPE = (3, 4, 2)
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
RNG = np.random.default_rng(2020)
# Byte offsets of NIfTI-1 header fields.
SCL_SLOPE, SCL_INTER, VOX_OFFSET, DATATYPE = 112, 116, 108, 70


def raw_file(path: Path, header: nib.Nifti1Header, payload: bytes) -> Path:
    """Header + empty extension flag + payload, exactly as given (no nibabel checks or fixes)."""
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\0\0\0\0" + payload)
    return path


def patch(path: Path, offset: int, fmt: str, value) -> Path:
    blob = bytearray(path.read_bytes())
    struct.pack_into(fmt, blob, offset, value)
    path.write_bytes(bytes(blob))
    return path


def saved(path: Path, data: np.ndarray, slope=None, inter=None) -> Path:
    img = nib.Nifti1Image(data, AFFINE, dtype=data.dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return path


def reason(path: Path) -> str:
    """The InputError reason load_volume gives for ``path``."""
    with pytest.raises(InputError) as info:
        load_volume(path)
    assert info.value.path == path
    return info.value.reason


def upscale(*args):
    return CliRunner().invoke(app, ["upscale", *map(str, args), "--method", "spline", "--json", "--quiet"])


def fails_alone(tmp_path: Path, bad: Path, *fragments: str) -> None:
    """``mrisr upscale BAD GOOD``: exit 1, one error line naming BAD with ``fragments``, GOOD written."""
    good = saved(tmp_path / "good.nii.gz", RNG.normal(100, 10, (6, 5, 4)).astype(np.float32))
    out = tmp_path / "out"
    result = upscale(bad, good, "--spacing", "1.5", "--output-dir", out)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mrisr: error: {bad}: "), result.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]
    recs = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert recs[bad.name]["status"] == "failed" and recs["good.nii.gz"]["status"] == "ok"
    assert nib.load(out / "good_sr.nii.gz").shape == (8, 7, 8)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- every datatype

READABLE = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


@pytest.mark.parametrize("name", READABLE)
def test_every_scalar_datatype_reads_its_exact_values(tmp_path, name):
    dtype = np.dtype(name)
    hi = 100 if dtype.kind in "iu" else 1e3
    lo = 0 if dtype.kind == "u" else -hi
    data = RNG.uniform(lo, hi, SHAPE).astype(dtype)
    vol = load_volume(saved(tmp_path / f"{name}.nii", data))
    assert vol.source_dtype == dtype and vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, data.astype(np.float32))
    assert vol.warnings == []


#: Codes NIfTI defines that mrisr refuses, and words of the reason.
REFUSED_CODES = {0: "none (NIfTI datatype 0)", 1: "binary (NIfTI datatype 1)", 255: "all (NIfTI datatype 255)",
                 1536: "float128 (NIfTI datatype 1536)", 2048: "complex256 (NIfTI datatype 2048)",
                 32: "complex voxels", 1792: "complex voxels", 128: "RGB / structured voxels",
                 2304: "RGB / structured voxels"}


@pytest.mark.parametrize("code", sorted(REFUSED_CODES))
def test_datatypes_mrisr_cannot_process_are_named(tmp_path, code):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(SHAPE)
    bad = raw_file(tmp_path / f"code{code}.nii", hdr, b"\1" * 24 * 32)
    patch(bad, DATATYPE, "<h", code)
    assert REFUSED_CODES[code] in reason(bad)


def test_unknown_datatype_code_lists_the_valid_ones(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(SHAPE)
    bad = patch(raw_file(tmp_path / "code9999.nii", hdr, b"\0" * 96), DATATYPE, "<h", 9999)
    text = reason(bad)
    assert "unknown datatype code 9999" in text
    assert all(f"{c} {data_type_codes.label[c]}" in text for c in (2, 4, 16, 64, 512))
    fails_alone(tmp_path, bad, "unknown datatype code 9999")


# --------------------------------------------------------------------------- scl_slope / scl_inter


@pytest.mark.parametrize("slope", [0.0, float("nan")], ids=["zero", "nan"])
def test_scl_slope_zero_or_nan_means_no_scaling(tmp_path, slope):
    data = RNG.integers(-300, 300, SHAPE).astype(np.int16)
    src = patch(patch(saved(tmp_path / "s.nii", data), SCL_SLOPE, "<f", slope), SCL_INTER, "<f", 50.0)
    np.testing.assert_array_equal(load_volume(src).data, data.astype(np.float32))


def test_scl_slope_scaling_is_exact_in_float64(tmp_path):
    data = np.full(SHAPE, 30000, np.int16)
    data.flat[:3] = [-32768, 1, 7]
    vol = load_volume(saved(tmp_path / "s.nii", data, slope=1e25, inter=-5e24))
    np.testing.assert_array_equal(vol.data, (data.astype(np.float64) * np.float32(1e25) + np.float32(-5e24))
                                  .astype(np.float32))
    assert np.isfinite(vol.data).all()


@pytest.mark.parametrize("slope", [float("inf"), float("-inf")], ids=["inf", "-inf"])
def test_infinite_scl_slope_is_a_corrupt_header(tmp_path, slope):
    bad = patch(saved(tmp_path / "s.nii", np.ones(SHAPE, np.int16)), SCL_SLOPE, "<f", slope)
    assert reason(bad) == f"corrupt NIfTI header: scl_slope is {slope} (0 or NaN means no scaling)"


def test_non_finite_scl_inter_with_a_slope_is_a_corrupt_header(tmp_path):
    bad = patch(saved(tmp_path / "s.nii", np.ones(SHAPE, np.int16), slope=2.0, inter=0.0), SCL_INTER, "<f",
                float("nan"))
    assert reason(bad) == "corrupt NIfTI header: scl_inter is nan with scl_slope 2"


def test_huge_scl_slope_is_refused_with_advice_that_helps(tmp_path):
    bad = saved(tmp_path / "huge_slope.nii.gz", np.full(SHAPE, 1000, np.int16), slope=1e38, inter=0.0)
    text = reason(bad)
    assert text.startswith("scl_slope 1e+38 and scl_inter 0 scale the stored values up to 1e+41, above the 1e+30")
    assert "fix scl_slope" in text and "--nan-to-num would not help" in text
    fails_alone(tmp_path, bad, "fix scl_slope")


# --------------------------------------------------------------------------- values near the float32 limit


def test_float32_values_near_the_limit_are_refused_not_written_as_inf(tmp_path):
    data = RNG.normal(0, 1, (6, 5, 4)).astype(np.float32)
    data[::2] = 3e38
    data[1::2] = -3e38
    bad = saved(tmp_path / "near_limit.nii.gz", data)
    text = reason(bad)
    assert text.startswith("values reach 3e+38, above the 1e+30 mrisr accepts") and "rescale" in text
    fails_alone(tmp_path, bad, "overflow to Inf")


@pytest.mark.parametrize("method", ["spline", "cnn"])
def test_values_at_the_limit_upscale_to_finite_values_without_overflow(tmp_path, method):
    data = np.where(RNG.random((12, 10, 8)) < 0.5, MAX_ABS_VALUE, -MAX_ABS_VALUE).astype(np.float32)
    src = saved(tmp_path / "edge.nii.gz", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow anywhere on the way
        result = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "0.7", "--order", "5", "--method",
                                          method, "--device", "cpu", "-o", str(tmp_path / "o.nii.gz"), "--quiet"])
    assert result.exit_code == 0, result.output
    out = np.asarray(nib.load(tmp_path / "o.nii.gz").dataobj)
    assert np.isfinite(out).all() and np.abs(out).max() > MAX_ABS_VALUE


def test_float64_values_beyond_float32_are_refused_not_called_infinite(tmp_path):
    data = np.ones(SHAPE)
    data[0, 0, 0] = 1e300
    text = reason(saved(tmp_path / "f64.nii", data))
    assert text.startswith("values reach 1e+300") and "not finite" not in text


def test_a_float_output_with_inf_is_never_written(tmp_path):
    from mrisr.errors import OutputError
    from mrisr.io.writer import save_volume

    data = np.ones((2, 2, 2), np.float32)
    data[1, 1, 1] = np.inf
    with pytest.raises(OutputError, match="1 voxels that are not finite"):
        save_volume(data, AFFINE, tmp_path / "o.nii.gz")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- integers above 2^24


def test_int32_above_2_24_warns_and_dtype_input_keeps_what_float32_holds(tmp_path):
    data = np.zeros((6, 5, 4), np.int32)
    data[0, 0, 0] = 2 ** 24 + 1  # rounds to 2^24 in float32
    data[1, 0, 0] = 100_000_003
    src = saved(tmp_path / "labels.nii.gz", data)
    result = upscale(src, "--factor", "1", "--dtype", "input", "--order", "0", "-o", tmp_path / "o.nii.gz")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert len(rec["warnings"]) == 1 and "at or above 2^24" in rec["warnings"][0]
    assert "multiples of up to 8" in rec["warnings"][0]
    out = np.asarray(nib.load(tmp_path / "o.nii.gz").dataobj)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, data.astype(np.float32).astype(np.int32))


def test_small_integers_get_no_warning(tmp_path):
    assert load_volume(saved(tmp_path / "i.nii", np.full(SHAPE, 2 ** 24 - 1, np.int32))).warnings == []


# --------------------------------------------------------------------------- dimensions and offsets


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_huge_declared_dimensions_fail_that_input_before_planning(tmp_path, suffix):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((32767, 32767, 32767))
    hdr.set_sform(AFFINE, code=1)
    blob = hdr.binaryblock[:VOX_OFFSET] + struct.pack("<f", 352) + hdr.binaryblock[VOX_OFFSET + 4:]
    blob += b"\0" * 4 + b"\0" * 4096
    bad = tmp_path / f"huge{suffix}"
    bad.write_bytes(gzip.compress(blob) if suffix.endswith(".gz") else blob)
    need = 352 + 32767 ** 3 * 4
    with pytest.raises(InputError, match=f"truncated: the header promises {need:,} bytes"):
        read_nifti_geometry(bad)
    fails_alone(tmp_path, bad, "truncated: the header promises", "(shape (32767, 32767, 32767), float32)")


def test_vox_offset_past_the_end_is_truncated(tmp_path):
    bad = patch(saved(tmp_path / "far.nii", np.ones(SHAPE, np.float32)), VOX_OFFSET, "<f", 1e6)
    assert reason(bad) == ("truncated: the header promises 1,000,096 bytes (shape (3, 4, 2), float32), "
                           "the file holds 448")


@pytest.mark.parametrize("offset,words", [(100.0, "data offset 100 lies inside the header"),
                                          (float("nan"), "vox_offset is nan")])
def test_vox_offset_inside_the_header_or_nan_is_corrupt(tmp_path, offset, words):
    bad = patch(saved(tmp_path / "off.nii", np.ones(SHAPE, np.float32)), VOX_OFFSET, "<f", offset)
    assert reason(bad) == f"corrupt NIfTI header: {words}"


# --------------------------------------------------------------------------- gzip oddities


def test_multi_member_gzip_reads_like_one_stream(tmp_path):
    data = RNG.normal(0, 1, SHAPE).astype(np.float32)
    blob = saved(tmp_path / "plain.nii", data).read_bytes()
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(blob[:200]) + gzip.compress(blob[200:300]) + gzip.compress(blob[300:]))
    np.testing.assert_array_equal(load_volume(multi).data, data)


def test_trailing_zero_padding_after_gzip_is_accepted(tmp_path):
    data = RNG.normal(0, 1, SHAPE).astype(np.float32)
    padded = tmp_path / "padded.nii.gz"
    padded.write_bytes(gzip.compress(saved(tmp_path / "plain.nii", data).read_bytes()) + b"\0" * 512)
    np.testing.assert_array_equal(load_volume(padded).data, data)


def test_trailing_garbage_after_gzip_is_named(tmp_path):
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(gzip.compress(saved(tmp_path / "plain.nii", np.ones(SHAPE, np.float32)).read_bytes())
                    + b"appended by mistake")
    assert "trailing garbage" in reason(bad)
    fails_alone(tmp_path, bad, "bytes after the end of its gzip data", "re-compress")
