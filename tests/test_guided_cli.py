"""Guided super-resolution end to end: ``mrisr upscale --reference [--register rigid]`` and
``mrisr.upscale(..., reference=...)`` with a tiny guided model, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import mrisr
from mrisr.cli.app import app
from mrisr.errors import InputError, ModelError, MrisrError
from mrisr.geometry.grid import target_grid
from mrisr.geometry.resample import resample_to_grid
from mrisr.trust.registration import read_transform
from mrisr.volume import Volume

TRAINING = {"data": "none", "licence": "none", "degradations": [], "input_spacing_mm": [1.0, 6.0],
            "factor": [1.0, 6.0]}


def phantom(points: np.ndarray) -> np.ndarray:
    """A smooth head-like object (world mm) with some structure for the registration."""
    out = np.zeros(points.shape[:-1])
    for centre, radii, weight in (((0, 0, 0), (14, 12, 13), 100.0), ((5, 3, 2), (4, 3, 4), 60.0),
                                  ((-6, -3, 4), (3, 5, 3), -40.0)):
        d = np.sqrt((((points - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1))
        out += weight / (1 + np.exp((d - 1) * 6))
    return out


def image(linear, shape, centre=(0.0, 0.0, 0.0), world_map=None) -> nib.Nifti1Image:
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = np.asarray(centre) - np.asarray(linear) @ ((np.asarray(shape) - 1) / 2.0)
    m = a if world_map is None else world_map @ a
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    img = nib.Nifti1Image(phantom(idx @ m[:3, :3].T + m[:3, 3]).astype(np.float32), a)
    img.set_qform(a, code=1)
    img.set_sform(a, code=1)
    return img


@pytest.fixture
def scans(tmp_path) -> tuple[Path, Path]:
    """A thick-slice 2 x 2 x 4 mm input and a 1 mm reference stored LPS, both of one head."""
    lr = tmp_path / "t2.nii.gz"
    ref = tmp_path / "t1.nii.gz"
    nib.save(image(np.diag([2.0, 2.0, 4.0]), (16, 16, 8), centre=(0.5, -0.5, 1.0)), lr)
    nib.save(image(np.diag([-1.0, -1.0, 1.0]), (36, 36, 36)), ref)
    return lr, ref


def _tiny(folder: Path, in_channels: int, name: str) -> Path:
    import torch
    from torch import nn

    from mrisr.archs.recnn import ReCNN
    from mrisr.inference.model_card import save_model

    torch.manual_seed(0)
    net = ReCNN(3, 4, in_channels=in_channels)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.bias.uniform_(-0.3, 0.3)
    save_model(net, folder / name, name=name, training=TRAINING)
    return folder / name


@pytest.fixture
def guided(tmp_path) -> Path:
    return _tiny(tmp_path / "models", 2, "tiny-guided")


@pytest.fixture
def single(tmp_path) -> Path:
    return _tiny(tmp_path / "models", 1, "tiny-single")


def run(*args):
    return CliRunner().invoke(app, ["upscale", *map(str, args)])


def expected_output(lr: Path, ref: Path, model: Path, spacing: float = 1.0, transform=None) -> np.ndarray:
    """Spline, reference on the output grid, network: computed step by step."""
    from mrisr.inference.engine import enhance
    from mrisr.inference.registry import load_model
    from mrisr.trust.reference import resample_reference

    vol, ref_vol = mrisr.load_volume(lr), mrisr.load_volume(ref)
    grid = target_grid(vol.affine, vol.data.shape, spacing)
    spline = resample_to_grid(vol.data, grid)
    guide = resample_reference(ref_vol, grid, transform=transform).data
    factors = tuple(1.0 / r for r in grid.ratios)
    out, _ = enhance(spline, load_model(model), device="cpu", precision="fp32", factors=factors, reference=guide)
    return out


def test_cli_reference_end_to_end(scans, guided, tmp_path):
    lr, ref = scans
    out = tmp_path / "t2_sr.nii.gz"
    result = run(lr, "--spacing", "1", "--reference", ref, "--model", guided, "--precision", "fp32", "--device",
                 "cpu", "-o", out, "--json", "--no-consistency")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["model"] == "tiny-guided"
    info = record["reference"]
    assert info["path"] == str(ref) and info["spacing"] == [1.0, 1.0, 1.0] and info["shape"] == [36, 36, 36]
    assert info["register"] == "none" and info["transform_ras"] is None and info["overlap"] > 0.99
    assert json.loads((tmp_path / "t2_sr.json").read_text())["reference"] == info
    assert not list(tmp_path.glob("*.tfm"))
    written = nib.load(out)
    np.testing.assert_allclose(written.get_fdata(), expected_output(lr, ref, guided), atol=1e-3)


def test_cli_register_rigid_writes_the_transform_beside_the_output(scans, guided, tmp_path):
    lr, ref = scans
    out = tmp_path / "t2_sr.nii.gz"
    result = run(lr, "--spacing", "1", "--reference", ref, "--register", "rigid", "--model", guided,
                 "--precision", "fp32", "--device", "cpu", "-o", out, "--json", "--no-consistency")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)["reference"]
    tfm = tmp_path / "t2_sr_reference_rigid.tfm"
    assert info["register"] == "rigid" and info["transform_file"] == str(tfm)
    matrix = np.asarray(info["transform_ras"])
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(read_transform(tfm), matrix, atol=1e-6)
    assert info["rotation_deg"] < 2 and info["translation_mm"] < 1  # the scans were aligned already
    assert json.loads((tmp_path / "t2_sr.json").read_text())["reference"]["transform_file"] == str(tfm)
    np.testing.assert_allclose(nib.load(out).get_fdata(), expected_output(lr, ref, guided, transform=matrix),
                               atol=1e-3)
    again = run(lr, "--spacing", "1", "--reference", ref, "--register", "rigid", "--model", guided, "-o", out,
                "--json", "--no-consistency")
    assert again.exit_code == 0 and json.loads(again.stdout)["status"] == "skipped"


def test_python_api_matches_the_cli(scans, guided, tmp_path):
    lr, ref = scans
    img = mrisr.upscale(str(lr), spacing=1, reference=str(ref), model=guided, device="cpu", precision="fp32",
                        consistency=False)
    report = img.extra["mrisr_report"]
    assert report.method == "cnn" and report.reference["path"] == str(ref) and "reference" in report.timings
    np.testing.assert_allclose(img.get_fdata(), expected_output(lr, ref, guided), atol=1e-3)
    # In-memory images work too, and registration is recorded (no file: nothing is written).
    img2 = mrisr.upscale(nib.load(lr), spacing=1, reference=nib.load(ref), register="rigid", model=guided,
                         device="cpu", precision="fp32")
    info = img2.extra["mrisr_report"].reference
    assert info["path"] is None and np.asarray(info["transform_ras"]).shape == (4, 4)
    assert info["transform_file"] is None


@pytest.mark.parametrize("extra, words", [
    (["--register", "rigid"], "--register rigid aligns the reference to the input: give --reference"),
    (["--register", "rigd", "--reference", "{ref}"], "unknown --register value 'rigd'; valid: none, rigid. "
                                                     "Did you mean 'rigid'?"),
    (["--reference", "{tmp}/missing.nii.gz"], "missing.nii.gz: no such file or folder"),
    (["--reference", "{ref}", "--method", "spline"], "--method is spline"),
    (["--reference", "{ref}", "--model", "{guided}", "--uncertainty"], "flip ensemble"),
    (["--reference", "{ref}", "--model", "{guided}", "--ensemble", "median"],
     "the flip ensemble (uncertainty, ensemble) does not take a reference yet"),
    (["--reference", "{ref}", "--model", "{guided}", "--adapt"],
     "--adapt does not take a reference yet: the internal pairs are made from the input alone"),
    (["--reference", "{ref}", "--model", "{single}"], "model 'tiny-single' is not guided"),
    (["--model", "{guided}"], "model 'tiny-guided' is guided (2 input channels)"),
])
def test_usage_errors_exit_2_and_write_nothing(scans, guided, single, tmp_path, extra, words):
    lr, ref = scans
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(ref=ref, tmp=tmp_path, guided=guided, single=single) for a in extra]
    result = run(lr, "--spacing", "1", *args)
    assert result.exit_code == 2, result.output
    assert "mrisr: error:" in result.stderr and words in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_one_reference_for_several_inputs_is_refused(scans, guided, tmp_path):
    lr, ref = scans
    other = tmp_path / "other.nii.gz"
    nib.save(nib.load(lr), other)
    result = run(lr, other, "--spacing", "1", "--reference", ref, "--model", guided)
    assert result.exit_code == 2
    assert "--reference guides one input, but 2 inputs were given" in " ".join(result.stderr.split())


def test_reference_without_model_transfers_and_cnn_uses_the_shipped_guided_model(scans, guided, tmp_path,
                                                                                 monkeypatch):
    lr, ref = scans
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr("mrisr.inference.registry.models_dir", lambda: shipped)
    result = run(lr, "--spacing", "1", "--reference", ref, "--method", "cnn")
    assert result.exit_code == 2
    assert "no guided model ships with this installation; pass --model" in " ".join(result.stderr.split())
    # no --method: the reference's detail (mrisr.inference.transfer), here with no network to score beside it
    result = run(lr, "--spacing", "1", "--reference", ref, "--json", "-o", tmp_path / "t.nii.gz")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["method"], record["model"], record["transfer"]["network"]) == ("transfer", None, False)
    assert record["transfer"]["internal_test"]["pairs"] == ["2x2x4 gaussian"]  # every axis coarse: its factors again
    (shipped / "tiny-guided").symlink_to(guided, target_is_directory=True)
    result = run(lr, "--spacing", "1", "--reference", ref, "--method", "cnn", "--json", "-o", tmp_path / "out.nii.gz")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "tiny-guided"


def test_coarse_or_distant_references_fail_the_input_naming_the_reference(scans, guided, tmp_path):
    lr, _ = scans
    coarse = tmp_path / "t1_3mm.nii.gz"
    nib.save(image(np.diag([1.0, 1.0, 3.0]), (36, 36, 12)), coarse)
    result = run(lr, "--spacing", "1", "--reference", coarse, "--model", guided, "--json")
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error.startswith(f"{coarse}: the reference's voxels (1 x 1 x 3 mm) are coarser than the output spacing")
    distant = tmp_path / "t1_far.nii.gz"
    nib.save(image(np.eye(3), (36, 36, 36), centre=(30.0, 0.0, 0.0)), distant)
    result = run(lr, "--spacing", "1", "--reference", distant, "--model", guided, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"].startswith(f"{distant}: the reference covers ")
    assert not (tmp_path / "t2_sr.nii.gz").exists()


def test_pipeline_refusals_in_python(guided):
    vol = Volume(np.ones((8, 8, 4), np.float32), np.diag([2.0, 2.0, 4.0, 1.0]))
    ref4d = Volume(np.ones((16, 16, 16, 2), np.float32), np.eye(4), path="bold.nii.gz")
    from mrisr.pipeline.upscale import upscale_volume

    with pytest.raises(InputError, match="^bold.nii.gz: the reference must be one 3D volume"):
        upscale_volume(vol, spacing=1, reference=ref4d, model=guided, device="cpu")
    with pytest.raises(MrisrError, match="method is 'spline'"):
        upscale_volume(vol, spacing=1, reference=ref4d, method="spline")
    with pytest.raises(MrisrError, match="unknown register 'affine'; valid: none, rigid"):
        upscale_volume(vol, spacing=1, reference=ref4d, model=guided, register="affine")
    with pytest.raises(ModelError, match="is guided"):
        upscale_volume(vol, spacing=1, model=guided, device="cpu")


@pytest.mark.parametrize("kw, words", [({"ensemble": "median"}, "flip ensemble"),
                                       ({"uncertainty": True}, "flip ensemble"),
                                       ({"adapt": 30}, "--adapt does not take a reference yet")])
def test_python_api_refuses_a_reference_with_the_ensemble_or_adapt(scans, guided, kw, words):
    lr, ref = scans
    with pytest.raises(MrisrError, match=words):
        mrisr.upscale(nib.load(lr), spacing=1.0, model=guided, reference=nib.load(ref), device="cpu", **kw)
