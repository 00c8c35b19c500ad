"""Issue 6 end to end: never corrupt, never lose, always say why (``mrisr upscale``).

Every case of the reliability corpus (``docs/reliability.md``) goes through the
command line in-process (Typer's CliRunner, stdout and stderr separate) next
to a good input: the bad input fails alone with exit 1, ONE ``mrisr: error:``
line naming it and the reason, a JSON record with status ``failed`` and the
same reason; the good input is still written; no input is modified and no
temporary file is left behind. Inputs mrisr accepts with care (4D, scaled
integers, sheared or left-handed geometry, localizers...) are checked for the
values and geometry they produce. Writes interrupted by Ctrl-C or a full disk
leave the earlier output byte-identical, and bad settings exit 2 before
anything is created.

All files are tiny and made here; only the spline method runs (no network).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import mrisr.errors
import mrisr.io.checks
import mrisr.io.read
import mrisr.io.writer as writer
from helpers import nifti_header, write_dicom_slice
from mrisr.cli.app import app
from mrisr.geometry.grid import target_grid
from mrisr.geometry.resample import resample_to_grid
from mrisr.io.nifti import has_shear
from mrisr.io.read import load_volume
from mrisr.pipeline.upscale import upscale_volume

if "torch" in sys.modules:  # never more than one torch thread in tests
    sys.modules["torch"].set_num_threads(1)

BAD_SHAPE = (4, 5, 3)
# Oblique, anisotropic, right-handed: voxel sizes 2, 1, 1.2 mm.
OBLIQUE = np.array([[0.0, 0.0, 1.2, -30.0], [-2.0, 0.0, 0.0, 12.0], [0.0, 1.0, 0.0, -8.5], [0, 0, 0, 1.0]])
SHEARED = np.array([[0.9, 0.25, 0.0, -40.0], [0.0, 1.1, 0.3, 20.5], [0.1, 0.0, 2.0, -12.0], [0, 0, 0, 1.0]])
LEFT_HANDED = np.array([[-1.0, 0.0, 0.0, 5.0], [0.0, 1.2, 0.0, -7.0], [0.0, 0.0, 3.0, 9.0], [0, 0, 0, 1.0]])
UID_A, UID_B = "1.2.826.0.1.3680043.2.1125.6.1", "1.2.826.0.1.3680043.2.1125.6.2"
#: A file with the DICOM marker that holds no image (like a DICOMDIR or a corrupt export).
JUNK_DICM = b"\0" * 128 + b"DICM" + b"not a DICOM data set\n" * 3
RNG = np.random.default_rng(6)


# --------------------------------------------------------------------------- helpers


def upscale(*args, quiet: bool = True):
    """Run ``mrisr upscale ARGS --method spline --json [--quiet]`` in-process."""
    extra = ["--method", "spline", "--json"] + (["--quiet"] if quiet else [])
    return CliRunner().invoke(app, ["upscale", *map(str, args), *extra])


def records(result) -> dict[str, dict]:
    """The JSON records on stdout, by input file name."""
    recs = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {Path(r["input"]).name: r for r in recs}


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("mrisr: error:")]


def tree_hashes(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (inputs must never change)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def hidden_files(folder: Path) -> list[str]:
    """Temporary files of the writer are hidden (``.<stem>.tmp-...``)."""
    return sorted(p.name for p in folder.rglob(".*")) if folder.exists() else []


def header(shape=BAD_SHAPE, dtype=np.float32, affine=OBLIQUE, sform_code=1, qform_code=1) -> nib.Nifti1Header:
    return nifti_header(shape, dtype, affine, sform_code, qform_code)


def save_nifti(path: Path, data: np.ndarray, hdr: nib.Nifti1Header) -> Path:
    """Save with exactly this header (affine None: nibabel leaves sform/qform alone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, None, header=hdr), str(path))
    return path


def raw_nifti(path: Path, hdr: nib.Nifti1Header, payload: bytes) -> Path:
    """Header bytes + empty extension flag + payload, bypassing nibabel's checks and fixes."""
    hdr["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hdr.binaryblock + b"\0\0\0\0" + payload)
    return path


def noise(shape=BAD_SHAPE, dtype=np.float32) -> np.ndarray:
    return RNG.normal(100, 20, size=shape).astype(dtype)


def good_input(folder: Path, name: str = "good.nii.gz") -> Path:
    return save_nifti(folder / name, noise((6, 5, 4)), header((6, 5, 4), affine=np.diag([2.0, 2.0, 3.0, 1.0])))


# --------------------------------------------------------------------------- DICOM


def dicom_series(folder: Path, uid: str = UID_A, n_slices: int = 4, skip=(), prefix: str = "im",
                 description: str = "T2 test", step: float = 2.5) -> np.ndarray:
    """A tiny axial series, one file per slice; returns the stored data (x, y, z)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    data = RNG.integers(0, 500, size=(4, 5, n_slices)).astype(np.int16)
    for k in range(n_slices):
        if k in skip:
            continue
        img = sitk.GetImageFromArray(np.ascontiguousarray(data[:, :, k:k + 1].transpose(2, 1, 0)))
        img.SetSpacing((1.0, 1.25, step))
        img.SetOrigin((10.0, -20.0, 30.0 + k * step))
        write_dicom_slice(folder / f"{prefix}{k:03d}.dcm", img, uid, k + 1, description)
    return data




# --------------------------------------------------------------------------- the refused corpus


def _truncated_gz(folder: Path) -> Path:
    blob = save_nifti(folder / "tmp_full.nii.gz", noise((8, 8, 8)), header((8, 8, 8))).read_bytes()
    (folder / "tmp_full.nii.gz").unlink()
    path = folder / "truncated.nii.gz"
    path.write_bytes(blob[: len(blob) // 2])
    return path


def _not_gzip(folder: Path) -> Path:
    path = folder / "not_gzip.nii.gz"
    save_nifti(path, noise(), header())
    path.write_bytes(gzip.decompress(path.read_bytes()))  # plain NIfTI bytes under a .gz name
    return path


def _truncated_nii(folder: Path) -> Path:
    path = save_nifti(folder / "short.nii", noise(), header())
    path.write_bytes(path.read_bytes()[:-10])
    return path


def _zero_length(folder: Path) -> Path:
    path = folder / "empty.nii.gz"
    path.write_bytes(b"")
    return path


def _zero_sized_dim(folder: Path) -> Path:
    hdr = header()
    hdr["dim"][2] = 0
    return raw_nifti(folder / "zero_dim.nii", hdr, b"")


def _five_d(folder: Path) -> Path:
    data = np.zeros(BAD_SHAPE + (1, 2), np.float32)
    return save_nifti(folder / "five_d.nii.gz", data, header(data.shape))


def _vector(folder: Path) -> Path:
    hdr = header(BAD_SHAPE + (1, 3))
    hdr.set_intent("vector")
    return save_nifti(folder / "vector.nii.gz", np.zeros(BAD_SHAPE + (1, 3), np.float32), hdr)


def _nan_inf(folder: Path) -> Path:
    data = noise()
    data[0, 0, 0], data[1, 2, 0], data[3, 4, 2] = np.nan, np.inf, -np.inf
    return save_nifti(folder / "nan_inf.nii.gz", data, header())


def _rgb(folder: Path) -> Path:
    rgb = np.zeros(BAD_SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return save_nifti(folder / "rgb.nii.gz", rgb, header(dtype=rgb.dtype))


def _zero_sform(folder: Path) -> Path:
    hdr = header()
    for row in ("srow_x", "srow_y", "srow_z"):
        hdr[row] = 0
    return save_nifti(folder / "zero_sform.nii.gz", noise(), hdr)


def _singular(folder: Path) -> Path:
    singular = OBLIQUE.copy()
    singular[:3, 1] = singular[:3, 0] * 2  # parallel voxel axes
    return save_nifti(folder / "singular.nii.gz", noise(), header(affine=singular, qform_code=0))


def _zero_voxel_size(folder: Path) -> Path:
    flat = OBLIQUE.copy()
    flat[:3, 2] = 0
    return save_nifti(folder / "zero_voxel.nii", noise(), header(affine=flat, qform_code=0))


def _zero_pixdim(folder: Path) -> Path:
    hdr = header(sform_code=0)
    hdr["pixdim"][2] = 0  # the qform's voxel size; nibabel would silently make it 1
    return raw_nifti(folder / "zero_pixdim.nii", hdr, noise().tobytes("F"))


def _two_series(folder: Path) -> Path:
    dicom_series(folder / "two_series", uid=UID_A, description="T2 sag")
    dicom_series(folder / "two_series", uid=UID_B, prefix="b", description="T1 ax")
    return folder / "two_series"


def _missing_slice(folder: Path) -> Path:
    dicom_series(folder / "missing_slice", n_slices=6, skip=(3,))
    return folder / "missing_slice"


def _only_junk_folder(folder: Path) -> Path:
    """A DICOM-looking folder whose only 'DICOM' file holds no image."""
    junk = folder / "no_images"
    junk.mkdir(parents=True)
    (junk / "DICOMDIR").write_bytes(JUNK_DICM)
    return junk


#: name: (builder, fragments of the reason). Every one must fail with exit 1.
REFUSED: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "truncated .nii.gz": (_truncated_gz, ("truncated or corrupt gzip",)),
    ".nii.gz that is not gzip": (_not_gzip, ("not gzip-compressed", "rename it to .nii")),
    "truncated .nii": (_truncated_nii, ("truncated", "the header promises")),
    "zero-length file": (_zero_length, ("file is empty (0 bytes)",)),
    "zero-sized dimension": (_zero_sized_dim, ("zero-sized dimension", "(4, 0, 3)")),
    "5D image": (_five_d, ("5D image", "3D images and 4D time series only")),
    "vector image": (_vector, ("vector voxels", "scalar images only")),
    "NaN and Inf voxels": (_nan_inf, ("3 of 60 voxels are not finite (1 NaN, 2 Inf)", "--nan-to-num")),
    "RGB NIfTI": (_rgb, ("RGB",)),
    "sform_code with all-zero sform": (_zero_sform, ("sform matrix is all zeros (corrupt header)",)),
    "singular affine": (_singular, ("singular", "parallel")),
    "zero voxel size (sform)": (_zero_voxel_size, ("zero voxel size",)),
    "zero voxel size (pixdim)": (_zero_pixdim, ("zero voxel size",)),
    "DICOM folder with two series": (_two_series, ("holds 2 DICOM series", UID_A, UID_B, "--series",
                                                   "T2 sag", "T1 ax")),
    "DICOM missing slice": (_missing_slice, ("missing slices or uneven slice spacing", "expected gaps of 2.5 mm",
                                             "5 mm between slices 2 and 3", "--allow-uneven")),
    "DICOM folder without images": (_only_junk_folder, ("holds no DICOM image files",)),
}


def _one_line_reason(result, bad: Path) -> str:
    """The single error line must name ``bad``; returns its reason."""
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    prefix = f"mrisr: error: {bad}: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_input_fails_alone_with_one_line_and_a_record(tmp_path, case):
    build, fragments = REFUSED[case]
    src = tmp_path / "in"
    src.mkdir()
    bad, good = build(src), good_input(src)
    out = tmp_path / "out"
    before = tree_hashes(src)
    result = upscale(bad, good, "--spacing", "1.5", "--output-dir", out)
    assert result.exit_code == 1, result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr  # --quiet: the error line only
    reason = _one_line_reason(result, bad)
    for frag in fragments:
        assert frag in reason, reason
    recs = records(result)
    assert recs[bad.name]["status"] == "failed"
    assert " ".join(recs[bad.name]["error"].split()) == reason  # same reason, JSON keeps line breaks
    assert recs[good.name]["status"] == "ok" and recs[good.name]["error"] is None
    assert nib.load(out / "good_sr.nii.gz").shape == (8, 7, 8)
    assert sorted(p.name for p in out.iterdir()) == ["dataset_description.json", "good_sr.json", "good_sr.nii.gz"]
    assert hidden_files(out) == []
    assert tree_hashes(src) == before


def _deny_reading(monkeypatch, path: Path) -> None:
    """Make ``path`` unreadable: chmod 000, or (as root, who reads anything) refuse its opening."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    real_open = open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(mrisr.io.checks, "open", guarded, raising=False)


def test_unreadable_file_fails_alone(tmp_path, monkeypatch):
    bad = save_nifti(tmp_path / "in" / "locked.nii.gz", noise(), header())
    good = good_input(tmp_path / "in")
    _deny_reading(monkeypatch, bad)
    try:
        result = upscale(bad, good, "--spacing", "1.5", "--output-dir", tmp_path / "out")
    finally:
        bad.chmod(0o644)
    assert result.exit_code == 1, result.output
    assert "permission denied" in _one_line_reason(result, bad)
    recs = records(result)
    assert recs["locked.nii.gz"]["status"] == "failed" and "permission denied" in recs["locked.nii.gz"]["error"]
    assert recs["good.nii.gz"]["status"] == "ok" and (tmp_path / "out" / "good_sr.nii.gz").exists()


def test_whole_corpus_in_one_batch_leaves_every_input_untouched(tmp_path):
    """All refused inputs and one good one in a single run, with the progress display on."""
    src = tmp_path / "in"
    src.mkdir()
    bad = [build(src) for build, _ in REFUSED.values()]
    good = good_input(src)
    before = tree_hashes(src)
    result = upscale(*bad, good, "--spacing", "1.5", "--output-dir", tmp_path / "out", quiet=False)
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == len(bad)
    for path in bad:
        assert sum(line.startswith(f"mrisr: error: {path}: ") for line in lines) == 1, path
    recs = records(result)
    assert [recs[p.name]["status"] for p in bad] == ["failed"] * len(bad)
    assert recs["good.nii.gz"]["status"] == "ok"
    assert (tmp_path / "out" / "good_sr.nii.gz").exists() and hidden_files(tmp_path / "out") == []
    assert tree_hashes(src) == before


def test_header_geometry_matches_the_reader_and_refuses_like_it(tmp_path, caplog):
    from mrisr.io.nifti import read_nifti_geometry

    src = tmp_path / "in"
    for path in (good_input(src), save_nifti(src / "bold.nii", noise((4, 5, 3, 2)), header((4, 5, 3, 2)))):
        affine, shape = read_nifti_geometry(path)
        vol = load_volume(path)
        np.testing.assert_array_equal(affine, vol.affine)
        assert shape == vol.data.shape
    with caplog.at_level("DEBUG"):
        for build, words in ((_zero_sform, "sform matrix is all zeros"), (_zero_pixdim, "zero voxel size"),
                             (_five_d, "5D image"), (_not_gzip, "not gzip-compressed")):
            path = build(src)
            with pytest.raises(mrisr.errors.InputError, match=words) as err:
                read_nifti_geometry(path)
            assert str(path) in str(err.value)
    assert caplog.records == []  # no nibabel "fixing" messages on stderr


def test_preflight_refuses_a_too_large_grid_and_leaves_bad_headers_to_the_reader(tmp_path):
    from mrisr.errors import GeometryError, GridTooLargeError
    from mrisr.pipeline.batch import preflight
    from mrisr.pipeline.jobs import Job
    from mrisr.pipeline.settings import BatchSettings

    good, zero = good_input(tmp_path), _zero_sform(tmp_path)
    jobs = [Job(zero, tmp_path / "z_sr.nii.gz"), Job(good, tmp_path / "g_sr.nii.gz")]
    preflight(jobs, BatchSettings(spacing=1.0))
    assert [(j.status, j.error) for j in jobs] == [("pending", None)] * 2  # the reader will explain zero_sform
    with pytest.raises(GridTooLargeError, match=r"shape \(12, 10, 12\) \(1,440 voxels") as err:
        preflight(jobs, BatchSettings(spacing=1.0, max_voxels=1000))
    assert str(err.value).startswith(f"{good}: ") and isinstance(err.value, GeometryError)


# --------------------------------------------------------------------------- accepted with care


def test_4d_processes_each_volume_and_keeps_t_and_tr(tmp_path):
    data = noise((4, 4, 3, 5))
    hdr = header(data.shape, affine=np.diag([2.0, 2.0, 3.0, 1.0]))
    hdr.set_zooms((2.0, 2.0, 3.0, 2.5))
    hdr.set_xyzt_units("mm", "sec")
    src = save_nifti(tmp_path / "bold.nii.gz", data, hdr)
    before = tree_hashes(src)
    result = upscale(src, "--factor", "2")
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "bold_sr.nii.gz")
    assert out.shape == (8, 8, 6, 5)
    assert out.header.get_zooms()[3] == pytest.approx(2.5) and out.header.get_xyzt_units() == ("mm", "sec")
    rec = records(result)["bold.nii.gz"]
    assert rec["status"] == "ok" and rec["n_volumes"] == 5 and rec["output_shape"] == [8, 8, 6, 5]
    grid = target_grid(hdr.get_sform(), data.shape, (1.0, 1.0, 1.5))
    for t in (0, 4):  # each volume on its own, exactly as a 3D image
        np.testing.assert_allclose(np.asarray(out.dataobj)[..., t], resample_to_grid(data[..., t], grid), atol=1e-3)
    # Progress is reported per volume, reaching each whole volume in order.
    calls: list[tuple[float, int]] = []
    upscale_volume(load_volume(src), factor=2, method="spline", progress=lambda d, n: calls.append((d, n)))
    assert {n for _, n in calls} == {5}
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert {1.0, 2.0, 3.0, 4.0, 5.0} <= {d for d, _ in calls}
    assert tree_hashes(src) == before


def test_nan_to_num_replaces_with_one_warning(tmp_path):
    src = _nan_inf(tmp_path)
    result = upscale(src, "--spacing", "1", "--nan-to-num", quiet=False)
    assert result.exit_code == 0, result.output
    assert error_lines(result) == []
    warnings = [line for line in result.stderr.splitlines() if line.startswith("mrisr: warning:")]
    assert len(warnings) == 1 and str(src) in warnings[0] and "replaced with 0 (--nan-to-num)" in warnings[0]
    rec = records(result)["nan_inf.nii.gz"]
    assert rec["status"] == "ok" and any("3 of 60 voxels are not finite" in w for w in rec["warnings"])
    assert np.isfinite(nib.load(tmp_path / "nan_inf_sr.nii.gz").get_fdata()).all()


def test_scl_slope_and_inter_are_honoured_in_the_output(tmp_path):
    raw = RNG.integers(-300, 300, size=(5, 4, 3)).astype(np.int16)
    img = nib.Nifti1Image(raw, None, header=header(raw.shape, dtype=np.int16))
    img.header.set_slope_inter(0.5, 10.0)  # after construction: nibabel resets the scaling there
    src = tmp_path / "scaled.nii"
    nib.save(img, str(src))
    expected = raw.astype(np.float32) * np.float32(0.5) + np.float32(10.0)
    # Factor 1: the output grid is the input grid, so the values come out unchanged.
    result = upscale(src, "--factor", "1")
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "scaled_sr.nii.gz")
    assert out.get_data_dtype() == np.float32
    np.testing.assert_allclose(out.get_fdata(), expected, atol=1e-4)
    # --dtype input: int16 on disk again, with the same scaling.
    result = upscale(src, "--factor", "1", "-o", tmp_path / "as_input.nii", "--dtype", "input")
    assert result.exit_code == 0, result.output
    back = nib.load(tmp_path / "as_input.nii")
    assert back.get_data_dtype() == np.int16 and (back.dataobj.slope, back.dataobj.inter) == (0.5, 10.0)
    np.testing.assert_allclose(back.get_fdata(), expected, atol=1e-4)
    # And on a finer grid the spline runs on the scaled values.
    result = upscale(src, "--spacing", "1", "-o", tmp_path / "fine.nii.gz")
    grid = target_grid(OBLIQUE, raw.shape, 1.0)
    np.testing.assert_allclose(nib.load(tmp_path / "fine.nii.gz").get_fdata(), resample_to_grid(expected, grid),
                               atol=1e-3)


def test_qform_sform_disagreement_uses_the_sform_and_warns_once(tmp_path):
    hdr = header()
    shifted = OBLIQUE.copy()
    shifted[:3, 3] += [2.0, 0.0, 0.0]
    hdr.set_qform(shifted, code=1)
    src = save_nifti(tmp_path / "qs.nii.gz", noise(), hdr)
    result = upscale(src, "--spacing", "1", quiet=False)
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "qform and sform disagree" in line]
    assert len(warned) == 1 and str(src) in warned[0] and "using the sform" in warned[0]
    grid = target_grid(OBLIQUE, BAD_SHAPE, 1.0)
    out = load_volume(tmp_path / "qs_sr.nii.gz")
    np.testing.assert_allclose(out.affine, grid.affine, atol=1e-5)
    assert out.warnings == []  # the output's qform and sform agree


@pytest.mark.parametrize("name,affine", [("sheared", SHEARED), ("left_handed", LEFT_HANDED)])
def test_sheared_and_left_handed_geometry_is_exact(tmp_path, name, affine):
    src = save_nifti(tmp_path / f"{name}.nii.gz", noise(), header(affine=affine))
    result = upscale(src, "--spacing", "0.8", "1", "1.5")
    assert result.exit_code == 0, result.output
    grid = target_grid(affine, BAD_SHAPE, (0.8, 1.0, 1.5))
    rec = records(result)[f"{name}.nii.gz"]
    np.testing.assert_allclose(rec["output_affine"], grid.affine, atol=1e-12)
    out = nib.load(tmp_path / f"{name}_sr.nii.gz")
    assert out.shape == grid.shape
    hdr = out.header
    np.testing.assert_allclose(hdr.get_sform(), grid.affine, atol=1e-5)  # exact (float32 storage)
    qform = hdr.get_qform()
    assert not has_shear(qform, tol=1e-5)  # the closest rigid (plus scaling) form
    np.testing.assert_allclose(np.linalg.norm(qform[:3, :3], axis=0), grid.spacing, rtol=1e-5)
    sign = np.sign(np.linalg.det(affine[:3, :3]))
    assert np.sign(np.linalg.det(hdr.get_sform()[:3, :3])) == sign
    assert np.sign(np.linalg.det(qform[:3, :3])) == sign
    if name == "left_handed":
        assert hdr["pixdim"][0] == -1
        np.testing.assert_allclose(qform, grid.affine, atol=1e-5)
    else:
        assert has_shear(hdr.get_sform())
    back = load_volume(tmp_path / f"{name}_sr.nii.gz")
    np.testing.assert_allclose(back.affine, grid.affine, atol=1e-5)
    assert back.warnings == []  # a rigid qform next to a sheared sform is expected, not a disagreement


# --------------------------------------------------------------------------- DICOM accepted


def test_dicom_two_series_pick_one_with_series(tmp_path):
    folder = _two_series(tmp_path)
    result = upscale(folder, "--spacing", "2", "--series", UID_B)
    assert result.exit_code == 0, result.output
    rec = records(result)["two_series"]
    assert rec["status"] == "ok" and rec["input_shape"] == [4, 5, 4]


def test_dicom_localizers_and_non_image_files_are_left_out(tmp_path):
    import SimpleITK as sitk

    folder = tmp_path / "series"
    data = dicom_series(folder)
    (folder / "notes.txt").write_text("not an image")
    (folder / "DICOMDIR").write_bytes(JUNK_DICM)
    loc = sitk.GetImageFromArray(np.zeros((1, 5, 4), np.int16))
    loc.SetDirection((0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))  # sagittal, unlike the axial slices
    write_dicom_slice(folder / "loc1.dcm", loc, UID_A, 90)
    flagged = sitk.GetImageFromArray(np.zeros((1, 5, 4), np.int16))
    flagged.SetSpacing((1.0, 1.25, 2.5))
    flagged.SetOrigin((10.0, -20.0, 31.0))
    write_dicom_slice(folder / "loc2.dcm", flagged, UID_A, 91, image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    result = upscale(folder, "--factor", "1", "--dtype", "input")
    assert result.exit_code == 0, result.output
    rec = records(result)["series"]
    assert rec["status"] == "ok" and rec["input_shape"] == [4, 5, 4]
    assert len(rec["warnings"]) == 1 and "dropped 2 localizer" in rec["warnings"][0]
    assert "loc1.dcm" in rec["warnings"][0] and "loc2.dcm" in rec["warnings"][0]
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "series_sr.nii.gz").dataobj), data)


def test_dicom_missing_slice_resampled_with_allow_uneven(tmp_path):
    folder = _missing_slice(tmp_path)
    result = upscale(folder, "--factor", "1", "--allow-uneven")
    assert result.exit_code == 0, result.output
    rec = records(result)["missing_slice"]
    assert rec["status"] == "ok" and rec["input_shape"] == [4, 5, 6]
    assert any("resampled onto 6 regular slices 2.5 mm apart" in w for w in rec["warnings"])


# --------------------------------------------------------------------------- outputs


def test_existing_output_is_skipped_unless_force(tmp_path):
    src = good_input(tmp_path)
    assert upscale(src, "--spacing", "1.5").exit_code == 0
    out, sidecar = tmp_path / "good_sr.nii.gz", tmp_path / "good_sr.json"
    before = (out.read_bytes(), sidecar.read_bytes())
    again = upscale(src, "--spacing", "1.5")
    assert again.exit_code == 0 and again.stderr == ""
    rec = records(again)["good.nii.gz"]
    assert rec["status"] == "skipped" and "--force" in rec["error"]
    assert (out.read_bytes(), sidecar.read_bytes()) == before
    # #19: another spacing is refused (exit 1), not skipped, and the output is left alone.
    changed = upscale(src, "--spacing", "1")
    assert changed.exit_code == 1 and "spacing: 1.5 1.5 1.5 -> 1 1 1" in changed.stderr
    assert (out.read_bytes(), sidecar.read_bytes()) == before
    forced = upscale(src, "--spacing", "1", "--force")
    assert forced.exit_code == 0 and records(forced)["good.nii.gz"]["status"] == "ok"
    assert nib.load(out).shape == (12, 10, 12)


def test_output_equal_to_an_input_is_refused(tmp_path):
    src = good_input(tmp_path)
    before = tree_hashes(tmp_path)
    for extra in ([], ["--force"]):
        result = upscale(src, "--spacing", "1", "-o", src, *extra)
        assert result.exit_code == 2, result.output
        assert len(error_lines(result)) == 1 and "is an input" in error_lines(result)[0]
    assert tree_hashes(tmp_path) == before
    # A hard link to the input, reached through another name, is the input too.
    link = tmp_path / "link.nii.gz"
    os.link(src, link)
    before = tree_hashes(tmp_path)
    result = upscale(src, "--spacing", "1", "-o", link, "--force")
    assert result.exit_code == 1, result.output
    assert "is also an input" in _one_line_reason(result, src)
    assert tree_hashes(tmp_path) == before and hidden_files(tmp_path) == []


def test_output_dir_that_cannot_be_created_is_a_usage_error(tmp_path):
    src = good_input(tmp_path / "in")
    (tmp_path / "a_file").write_text("x")
    result = upscale(src, "--spacing", "1", "--output-dir", tmp_path / "a_file" / "out")
    assert result.exit_code == 2, result.output
    assert len(error_lines(result)) == 1 and "cannot create the output folder" in error_lines(result)[0]
    assert result.stdout == ""


def _deny_writing(monkeypatch, folder: Path) -> None:
    """Make ``folder`` unwritable: chmod 555, or (as root) have os.access say so."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_unwritable_output_folder_fails_before_reading(tmp_path, monkeypatch):
    src = good_input(tmp_path / "in")
    other = good_input(tmp_path / "other", "other.nii.gz")
    reads: list[Path] = []
    real_load = mrisr.io.read.load_volume
    monkeypatch.setattr(mrisr.io.read, "load_volume", lambda p, **kw: reads.append(Path(p)) or real_load(p, **kw))
    _deny_writing(monkeypatch, tmp_path / "in")
    try:
        # Outputs next to the inputs: the job in the read-only folder fails (before any reading), the other runs.
        result = upscale(src, other, "--spacing", "1.5")
        assert result.exit_code == 1, result.output
        assert "is not writable" in _one_line_reason(result, src)
        assert records(result)["good.nii.gz"]["status"] == "failed"
        assert records(result)["other.nii.gz"]["status"] == "ok"
        assert reads == [other]
        # --output-dir that exists but is not writable: refused up front, nothing runs.
        result = upscale(src, other, "--spacing", "1.5", "--output-dir", tmp_path / "in")
        assert result.exit_code == 2, result.output
        assert len(error_lines(result)) == 1 and "not writable" in error_lines(result)[0]
    finally:
        (tmp_path / "in").chmod(0o755)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["good.nii.gz"]


def _failing_write(exc: BaseException, first_only: bool = False):
    """A replacement for the writer's NIfTI encoder: writes some bytes, then fails."""
    real = writer._write_nifti
    calls: list[int] = []

    def write(img, f, gz):
        calls.append(1)
        if first_only and len(calls) > 1:
            return real(img, f, gz)
        f.write(b"\x1f\x8b partial data")
        raise exc

    return write


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_failed_write_keeps_the_earlier_output_and_leaves_no_temp(tmp_path, monkeypatch, exc):
    src = good_input(tmp_path / "in")
    out_dir = tmp_path / "out"
    assert upscale(src, "--spacing", "1.5", "--output-dir", out_dir).exit_code == 0
    out, sidecar = out_dir / "good_sr.nii.gz", out_dir / "good_sr.json"
    before = (out.read_bytes(), sidecar.read_bytes())
    listing = sorted(os.listdir(out_dir))
    inputs = tree_hashes(tmp_path / "in")
    monkeypatch.setattr(writer, "_write_nifti", _failing_write(exc))
    result = upscale(src, "--spacing", "1", "--output-dir", out_dir, "--force")
    if isinstance(exc, KeyboardInterrupt):
        assert result.exit_code == 130  # interrupted (SIGINT convention)
    else:
        assert result.exit_code == 1, result.output
        reason = _one_line_reason(result, src)
        assert f"{out}: writing failed: No space left on device" in reason
        rec = records(result)["good.nii.gz"]
        assert rec["status"] == "failed" and "No space left on device" in rec["error"]
    assert (out.read_bytes(), sidecar.read_bytes()) == before
    assert sorted(os.listdir(out_dir)) == listing  # no temporary or partial file
    assert tree_hashes(tmp_path / "in") == inputs


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_failed_first_write_leaves_nothing_under_the_final_name(tmp_path, monkeypatch, exc):
    src_a, src_b = good_input(tmp_path / "in", "a.nii.gz"), good_input(tmp_path / "in", "b.nii.gz")
    out_dir = tmp_path / "out"
    monkeypatch.setattr(writer, "_write_nifti", _failing_write(exc, first_only=True))  # a (sorted first) fails
    result = upscale(src_a, src_b, "--spacing", "1.5", "--output-dir", out_dir)
    names = sorted(os.listdir(out_dir))
    assert "a_sr.nii.gz" not in names and "a_sr.json" not in names
    assert not any(n.startswith(".") for n in names)
    if isinstance(exc, KeyboardInterrupt):
        assert result.exit_code == 130 and "b_sr.nii.gz" not in names  # the batch stops
    else:  # a disk-full on one output does not stop the batch
        assert result.exit_code == 1
        assert "No space left on device" in _one_line_reason(result, src_a)
        assert records(result)["b.nii.gz"]["status"] == "ok" and "b_sr.nii.gz" in names


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("spacing,words", [
    ("0", ["--spacing", "finite and > 0"]),
    ("-1", ["--spacing", "finite and > 0"]),
    ("nan", ["--spacing", "finite and > 0"]),
    ("abc", ["--spacing", "1 or 3 numbers"]),
    ("0.0001", ["{src}", "would give an output of shape (120000, 100000, 120000)", "voxels", "GB as float32",
                "above the limit", "choose a larger spacing"]),
])
def test_bad_spacing_exits_2_before_any_work(tmp_path, monkeypatch, spacing, words):
    src = good_input(tmp_path / "in")
    reads: list[Path] = []
    monkeypatch.setattr(mrisr.io.read, "load_volume", lambda p, **kw: reads.append(p))
    before = tree_hashes(tmp_path)
    result = upscale(src, "--spacing", spacing, "--output-dir", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and result.stdout == ""
    for w in words:
        assert w.format(src=src) in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and tree_hashes(tmp_path) == before and hidden_files(tmp_path) == []
    assert reads == []
