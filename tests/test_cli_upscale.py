"""``mrisr upscale`` and ``mrisr info`` through Typer's CliRunner (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli.app import app
from mrisr.cli.common import join_multi_values, parse_numbers
from mrisr.geometry.grid import target_grid
from mrisr.geometry.resample import resample_to_grid

RNG = np.random.default_rng(3)


def _save(path: Path, shape=(6, 5, 4), zooms=(2.0, 2.0, 3.0), tr: float | None = None) -> nib.Nifti1Image:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    img = nib.Nifti1Image(RNG.normal(100, 20, size=shape).astype(np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if tr is not None:
        img.header.set_zooms(tuple(zooms) + (tr,))
        img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return img


def run(*args: str):
    return CliRunner().invoke(app, ["upscale", *map(str, args), "--method", "spline"])


def records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def batch(tmp_path):
    folder = tmp_path / "in"
    imgs = {name: _save(folder / name) for name in ("a.nii.gz", "c.nii")}
    (folder / "b.nii.gz").write_bytes(b"this is not a nifti file")
    return folder, imgs


def test_bad_file_fails_alone_and_good_outputs_are_correct(batch):
    folder, imgs = batch
    result = run(folder, "--spacing", "1", "--json")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "b.nii.gz" in errors[0]
    recs = {Path(r["input"]).name: r for r in records(result)}
    assert [recs[n]["status"] for n in ("a.nii.gz", "b.nii.gz", "c.nii")] == ["ok", "failed", "ok"]
    assert recs["b.nii.gz"]["error"] and recs["a.nii.gz"]["error"] is None
    for name, stem in (("a.nii.gz", "a"), ("c.nii", "c")):
        out = nib.load(folder / f"{stem}_sr.nii.gz")
        grid = target_grid(imgs[name].affine, imgs[name].shape, 1.0)
        assert out.shape == grid.shape == (12, 10, 12)
        np.testing.assert_allclose(out.affine, grid.affine, atol=1e-6)
        np.testing.assert_allclose(out.get_fdata(), resample_to_grid(imgs[name].get_fdata(), grid), atol=1e-3)
        sidecar = json.loads((folder / f"{stem}_sr.json").read_text())
        assert sidecar["status"] == "ok" and sidecar["input_sha256"] and sidecar["mrisr_version"]
        assert sidecar["output_shape"] == [12, 10, 12] and sidecar["method"] == "spline"
    assert not (folder / "b_sr.nii.gz").exists()


def test_existing_outputs_are_skipped_unless_force(tmp_path):
    src = tmp_path / "x.nii.gz"
    _save(src)
    assert run(src, "--factor", "2").exit_code == 0
    out = tmp_path / "x_sr.nii.gz"
    before = out.read_bytes()
    again = run(src, "--factor", "2", "--json")
    assert again.exit_code == 0
    assert records(again)[0]["status"] == "skipped"
    assert out.read_bytes() == before
    # #19: other settings no longer "skip": the stale output is refused and left alone.
    changed = run(src, "--factor", "2", "--json", "--order", "1")
    assert changed.exit_code == 1
    assert records(changed)[0]["status"] == "failed" and "order: 3 -> 1" in records(changed)[0]["error"]
    assert out.read_bytes() == before
    forced = run(src, "--factor", "2", "--json", "--order", "1", "--force")
    assert forced.exit_code == 0 and records(forced)[0]["status"] == "ok"
    assert records(forced)[0]["order"] == 1 and out.read_bytes() != before


def test_json_has_one_record_per_input_with_report_fields(batch):
    folder, _ = batch
    recs = records(run(folder, "--spacing", "1", "--json", "--quiet"))
    assert len(recs) == 3
    keys = {"status", "error", "input", "output", "input_sha256", "mrisr_version", "input_shape", "input_spacing",
            "output_shape", "output_spacing", "method", "order", "model", "model_sha256", "device", "precision",
            "patch_size", "batch_size", "patches_run", "patches_skipped", "timings", "warnings"}
    for r in recs:
        assert keys <= set(r)
    ok = [r for r in recs if r["status"] == "ok"]
    assert ok[0]["input_spacing"] == [2.0, 2.0, 3.0] and ok[0]["timings"]["write"] > 0


@pytest.mark.parametrize("spacing,shape,zooms", [
    (["1", "1", "3"], (12, 10, 4), (1.0, 1.0, 3.0)),
    (["2"], (6, 5, 6), (2.0, 2.0, 2.0)),
    (["1,1,1.5"], (12, 10, 8), (1.0, 1.0, 1.5)),
    (["1x2x3"], (12, 5, 4), (1.0, 2.0, 3.0)),
])
def test_spacing_forms(tmp_path, spacing, shape, zooms):
    src = tmp_path / "x.nii.gz"
    _save(src)
    result = run("--spacing", *spacing, src)  # numbers first, then the input
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "x_sr.nii.gz")
    assert out.shape == shape
    np.testing.assert_allclose(out.header.get_zooms(), zooms, rtol=1e-6)


@pytest.mark.parametrize("args,words", [
    (["--spacing", "0"], "--spacing"),
    (["--spacing", "1", "nan", "1"], "finite"),
    (["--spacing", "-1"], "finite and > 0"),
    (["--spacing", "1", "2"], "1 or 3 numbers"),
    (["--spacing", "abc"], "1 or 3 numbers"),
    (["--factor", "0", "2", "2"], "--factor"),
    ([], "--spacing"),
    (["--spacing", "1", "--factor", "2"], "not both"),
    (["--spacing", "1", "--shard", "2/2"], "--shard"),
    (["--spacing", "1", "-o", "out.mgz"], ".nii"),
])
def test_usage_errors_exit_2_and_touch_nothing(tmp_path, args, words):
    src = tmp_path / "x.nii.gz"
    _save(src)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run(src, *args)
    assert result.exit_code == 2, result.output
    assert words in result.stderr and "mrisr: error:" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_output_with_two_inputs_is_a_usage_error(tmp_path):
    _save(tmp_path / "a.nii.gz")
    _save(tmp_path / "b.nii.gz")
    result = run(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", "--spacing", "1", "-o", tmp_path / "o.nii.gz")
    assert result.exit_code == 2 and "--output-dir" in result.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_missing_input_and_no_input_are_usage_errors(tmp_path):
    assert run(tmp_path / "nope.nii.gz", "--spacing", "1").exit_code == 2
    assert CliRunner().invoke(app, ["upscale", "--spacing", "1"]).exit_code == 2


def test_single_output_path(tmp_path):
    src = tmp_path / "x.nii"
    _save(src)
    result = run(src, "--spacing", "1", "1", "3", "-o", tmp_path / "out" / "y.nii")
    assert result.exit_code == 0, result.output
    assert nib.load(tmp_path / "out" / "y.nii").shape == (12, 10, 4)
    assert (tmp_path / "out" / "y.json").exists()


def test_4d_keeps_volumes_and_tr(tmp_path):
    src = tmp_path / "bold.nii.gz"
    _save(src, shape=(4, 4, 3, 5), tr=2.0)
    result = run(src, "--factor", "2", "--json")
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "bold_sr.nii.gz")
    assert out.shape == (8, 8, 6, 5)
    assert out.header.get_zooms()[3] == pytest.approx(2.0)
    assert records(result)[0]["n_volumes"] == 5


def test_bids_names_and_dataset_description(tmp_path):
    src = tmp_path / "bids" / "sub-01" / "anat" / "sub-01_ses-1_acq-tse_T2w.nii.gz"
    _save(src)
    out_dir = tmp_path / "derivatives" / "mrisr"
    result = run(src, "--spacing", "1", "--output-dir", out_dir)
    assert result.exit_code == 0, result.output
    assert (out_dir / "sub-01_ses-1_acq-tse_desc-mrisr_T2w.nii.gz").exists()
    assert (out_dir / "sub-01_ses-1_acq-tse_desc-mrisr_T2w.json").exists()
    desc = json.loads((out_dir / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "mrisr"


def test_shards_split_the_sorted_inputs(tmp_path):
    for name in ("c.nii.gz", "a.nii.gz", "b.nii.gz"):
        _save(tmp_path / name)
    first = records(run(tmp_path, "--factor", "2", "--json", "--shard", "0/2"))
    second = records(run(tmp_path, "--factor", "2", "--json", "--shard", "1/2"))
    assert [Path(r["input"]).name for r in first] == ["a.nii.gz", "c.nii.gz"]
    assert [Path(r["input"]).name for r in second] == ["b.nii.gz"]
    assert all(r["status"] == "ok" for r in first + second)
    # Re-running the whole folder ignores earlier *_sr outputs and skips everything.
    again = records(run(tmp_path, "--factor", "2", "--json"))
    assert [r["status"] for r in again] == ["skipped"] * 3


def test_quiet_prints_nothing_on_success(tmp_path):
    src = tmp_path / "x.nii.gz"
    _save(src)
    result = run(src, "--factor", "2", "--quiet")
    assert result.exit_code == 0 and result.stderr == "" and result.stdout == ""


def test_info_reports_geometry_and_output_grid(tmp_path):
    src = tmp_path / "bold.nii.gz"
    _save(src, shape=(6, 5, 4, 3), tr=2.0)
    result = CliRunner().invoke(app, ["info", str(src), "--spacing", "1", "1", "1.5", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["shape"] == [6, 5, 4, 3] and info["spacing"] == [2.0, 2.0, 3.0]
    assert info["orientation"] == "RAS" and info["handedness"] == "right-handed"
    assert info["qform_code"] == 1 and info["volumes"]["count"] == 3 and info["volumes"]["tr"] == 2.0
    assert info["output"]["shape"] == [12, 10, 8, 3] and info["output"]["spacing"] == [1.0, 1.0, 1.5]
    text = CliRunner().invoke(app, ["info", str(src)])
    assert text.exit_code == 0 and "RAS" in text.stdout and "qform" in text.stdout
    assert CliRunner().invoke(app, ["info", str(src), "--spacing", "0"]).exit_code == 2


def test_join_multi_values_and_parse_numbers():
    assert join_multi_values(["a", "--spacing", "1", "1", "3", "b"]) == ["a", "--spacing", "1,1,3", "b"]
    assert join_multi_values(["--factor", "2", "x.nii"]) == ["--factor", "2", "x.nii"]
    assert join_multi_values(["--", "--spacing", "1", "2"]) == ["--", "--spacing", "1", "2"]
    assert parse_numbers("1 1 3", "--spacing") == (1.0, 1.0, 3.0)


def _dicom_series(folder: Path, uid: str, shape=(4, 5, 3), spacing=(1.0, 1.0, 3.0)) -> None:
    """Write a tiny axial series, one DICOM file per slice (SimpleITK/GDCM fills in the geometry)."""
    sitk = pytest.importorskip("SimpleITK")
    folder.mkdir(parents=True)
    data = RNG.integers(0, 500, size=shape[::-1]).astype(np.int16)  # SimpleITK arrays are (z, y, x)
    volume = sitk.GetImageFromArray(data)
    volume.SetSpacing(spacing)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(shape[2]):
        s = volume[:, :, k:k + 1]
        for tag, value in {"0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0020|000d": "1.2.3",
                           "0020|000e": uid, "0008|0018": f"{uid}.{k + 1}", "0020|0013": str(k + 1),
                           "0008|103e": folder.name}.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:02d}.dcm"))
        writer.Execute(s)


def test_folder_of_dicom_series_gives_one_input_each(tmp_path):
    study = tmp_path / "study"
    _dicom_series(study / "T2_AX", "1.2.826.0.1.3680043.2.1125.9.1")
    _dicom_series(study / "T1_AX", "1.2.826.0.1.3680043.2.1125.9.2")
    result = run(study, "--spacing", "1", "--json", "--dtype", "input")
    assert result.exit_code == 0, result.output
    recs = records(result)
    assert [Path(r["input"]).name for r in recs] == ["T1_AX", "T2_AX"]
    assert all(r["input_spacing"] == [1.0, 1.0, 3.0] and r["input_sha256"] for r in recs)
    for name in ("T1_AX", "T2_AX"):
        out = nib.load(study / f"{name}_sr.nii.gz")  # next to the series folder
        assert out.shape == (4, 5, 9) and out.get_data_dtype() == np.int16
        np.testing.assert_allclose(out.header.get_zooms(), (1.0, 1.0, 1.0), rtol=1e-6)
