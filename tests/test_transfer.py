"""Reference detail transfer (``method="transfer"``, :mod:`mrisr.inference.transfer`): the acquisition operator
against :func:`mrisr.acquisition.degrade.degrade`, the fit's equivariances, the internal test's choice, and the
pipeline (sidecar, 4D series, refusals)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

import mrisr
from mrisr.acquisition.degrade import degrade
from mrisr.cli.app import app
from mrisr.errors import MrisrError
from mrisr.geometry.grid import target_grid
from mrisr.geometry.resample import resample_to_grid
from mrisr.inference.transfer import (
    CANDIDATES,
    Candidate,
    ReferenceTransfer,
    acquire,
    detail,
    option_label,
)
from mrisr.trust.consistency import input_grid  # the inverse of the contract's map that the transfer uses
from mrisr.volume import Volume


def texture(shape, seed=0, sigma=1.5) -> np.ndarray:
    """A smooth random positive volume with structure along every axis (a stand-in for anatomy)."""
    noise = np.random.default_rng(seed).normal(size=shape)
    return (ndimage.gaussian_filter(noise, sigma) * 8 + 2).astype(np.float32)


def thick(truth: np.ndarray, factor: int = 4):
    """``truth`` (1 mm voxels) in ``factor`` mm slices along axis 2: ``(lr, affine, grid back onto truth)``."""
    lr_shape = truth.shape[:2] + (truth.shape[2] // factor,)
    affine = np.diag([1.0, 1.0, float(factor), 1.0])
    grid = target_grid(affine, lr_shape, 1.0)
    assert grid.shape == truth.shape
    return acquire(truth, grid, lr_shape, "slice"), affine, grid


@pytest.mark.parametrize("psf", ["box", "gaussian", "slice"])
def test_acquire_is_degrade_on_the_contract_grid(psf):
    hr = texture((12, 10, 16))
    lr, lr_affine = degrade(hr, np.eye(4), [1.0, 2.0, 4.0], psf=psf)
    grid = target_grid(lr_affine, lr.shape, 1.0)  # the output grid that takes lr back onto hr's grid
    assert grid.shape == hr.shape
    np.testing.assert_allclose(acquire(hr, grid, lr.shape, psf), lr, rtol=1e-5, atol=1e-5)


def test_input_grid_inverts_the_contract():
    grid = target_grid(np.diag([2.4, 0.9, 3.0, 1.0]), (7, 11, 5), (0.86, 0.86, 1.0))
    inv = input_grid(grid, (7, 11, 5))
    for axis in range(3):
        i = np.arange(inv.shape[axis])
        np.testing.assert_allclose(grid.offsets[axis] + grid.ratios[axis] * inv.positions(axis), i, atol=1e-9)


def test_detail_is_equivariant_to_the_input_scale_and_blind_to_the_reference_scale():
    truth = texture((16, 16, 24))
    lr, _, grid = thick(truth)
    spline = resample_to_grid(lr, grid)
    rt = ReferenceTransfer(truth, grid, lr.shape)
    c = Candidate(5, 0.03)
    base = detail(spline, truth, rt.degraded(), c)
    assert np.abs(base).max() > 0.1
    for a in (0.01, 100.0):
        np.testing.assert_allclose(detail(a * spline, truth, rt.degraded(), c), a * base, rtol=1e-4,
                                   atol=1e-4 * a * np.abs(base).max())
        np.testing.assert_allclose(detail(spline, a * truth, a * rt.degraded(), c), base, rtol=1e-4,
                                   atol=1e-4 * np.abs(base).max())


@pytest.mark.parametrize("contrast", ["same", "inverted"])
def test_a_matching_reference_is_transferred_and_brings_the_detail_back(contrast):
    truth = texture((24, 24, 32), seed=1)
    lr, _, grid = thick(truth)
    reference = truth * 3 if contrast == "same" else 30.0 - truth * 2  # another contrast of the same anatomy
    rt = ReferenceTransfer(reference, grid, lr.shape)
    choice = rt.choose(lr)
    assert choice.candidate is not None and not choice.network
    spline = resample_to_grid(lr, grid)
    out = rt.apply(spline, spline, choice)
    assert np.abs(out - truth).mean() < 0.3 * np.abs(spline - truth).mean()
    table = choice.table
    assert table["pairs"] == ["4x1x1 slice", "1x4x1 slice"]
    assert set(table["db"]) == {"spline"} | {option_label(False, c) for c in CANDIDATES}
    assert table["gain_over_spline_db"] > 3 and table["chosen"] == choice.label


def test_an_unrelated_reference_leaves_the_spline():
    truth = texture((24, 24, 32), seed=1)
    lr, _, grid = thick(truth)
    rt = ReferenceTransfer(texture((24, 24, 32), seed=2), grid, lr.shape)  # another head altogether
    choice = rt.choose(lr)
    assert choice.candidate is None and choice.label == "spline"
    spline = resample_to_grid(lr, grid)
    np.testing.assert_array_equal(rt.apply(spline, spline, choice), spline)


def test_the_internal_test_scores_the_network_on_its_own_factors():
    truth = texture((24, 24, 32), seed=1)
    lr, _, grid = thick(truth)
    calls = []

    def refine(x, factors):  # a "network" that makes the spline worse
        calls.append((x.shape, factors))
        return x + 1.0

    unrelated = ReferenceTransfer(texture((24, 24, 32), seed=2), grid, lr.shape)
    choice = unrelated.choose(lr, refine)
    assert calls == [(lr.shape, (4.0, 1.0, 1.0)), (lr.shape, (1.0, 4.0, 1.0))]
    assert choice.table["db"]["network"] < choice.table["db"]["spline"] - 1
    assert not choice.network  # anything beats this network by the margin
    # a network as good as the spline: without helpful detail, the run gives what it gives without a reference
    choice = unrelated.choose(lr, lambda x, factors: x)
    assert choice.label == "network" and choice.table["chosen"] == "network"
    matching = ReferenceTransfer(truth, grid, lr.shape)
    assert matching.choose(lr, lambda x, factors: x).candidate is not None


def _no_models(monkeypatch, tmp_path):
    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setattr("mrisr.inference.registry.models_dir", lambda: empty)


def test_upscale_with_a_reference_transfers_on_the_contract_grid(tmp_path, monkeypatch):
    _no_models(monkeypatch, tmp_path)
    truth = texture((24, 24, 32), seed=1)
    lr, affine, grid = thick(truth)
    ref = Volume(truth * 5, grid.affine)  # the truth where the output grid puts it
    out = mrisr.upscale(Volume(lr, affine), spacing=1.0, reference=ref)
    spline = mrisr.upscale(Volume(lr, affine), spacing=1.0, method="spline")
    np.testing.assert_allclose(out.affine, spline.affine, atol=1e-9)
    np.testing.assert_allclose(out.affine, grid.affine, atol=1e-9)
    data, base = np.asarray(out.dataobj), np.asarray(spline.dataobj)
    assert np.abs(data - truth).mean() < 0.3 * np.abs(base - truth).mean()

    from mrisr.pipeline.upscale import upscale_volume

    series = Volume(np.stack([lr, 2 * lr], axis=-1), affine)
    result = upscale_volume(series, spacing=1.0, reference=ref, consistency=False)
    assert result.report.method == "transfer" and result.report.model is None
    assert result.report.transfer["detail"] and result.report.transfer["network"] is False
    np.testing.assert_allclose(result.data[..., 1], 2 * result.data[..., 0], rtol=1e-4, atol=1e-4)
    single = upscale_volume(Volume(lr, affine), spacing=1.0, reference=ref, consistency=False)
    np.testing.assert_allclose(result.data[..., 0], single.data, rtol=1e-6, atol=1e-5)


def test_an_unhelpful_reference_is_reported_and_gives_the_spline(tmp_path, monkeypatch):
    _no_models(monkeypatch, tmp_path)
    truth = texture((24, 24, 32), seed=1)
    lr, affine, _ = thick(truth)
    src = tmp_path / "t2.nii.gz"
    ref = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(lr, affine), src)
    nib.save(nib.Nifti1Image(texture((24, 24, 32), seed=2), target_grid(affine, lr.shape, 1.0).affine), ref)
    out = tmp_path / "t2_sr.nii.gz"
    result = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "1", "--reference", str(ref), "-o",
                                      str(out), "--json", "--no-consistency", "--register", "none"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["transfer"]["chosen"] == "spline" and record["reference"]["register"] == "none"
    assert any("its detail did not make the input's own internal test truer" in w for w in record["warnings"])
    spline = mrisr.upscale(nib.load(src), spacing=1.0, method="spline")
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), np.asarray(spline.dataobj))
    sidecar = json.loads(out.with_name("t2_sr.json").read_text())
    assert sidecar["method"] == "transfer" and sidecar["transfer"]["internal_test"]["db"]["spline"] > 0


@pytest.mark.parametrize("args, words", [
    (["--method", "transfer"], "method 'transfer' moves a reference scan's detail into the input"),
    (["--reference", "REF", "--ensemble", "median"], "flip ensemble"),
    (["--reference", "REF", "--adapt", "30"], "--adapt does not take a reference yet"),
    (["--reference", "REF", "--method", "spline"], "--method transfer (the default with --reference)"),
])
def test_cli_refusals(tmp_path, args, words):
    src, ref = tmp_path / "t2.nii.gz", tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(texture((8, 8, 4)), np.diag([1.0, 1.0, 4.0, 1.0])), src)
    nib.save(nib.Nifti1Image(texture((8, 8, 16)), np.eye(4)), ref)
    args = [str(ref) if a == "REF" else a for a in args]
    result = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "1", *args])
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.stderr.split())
    assert not (tmp_path / "t2_sr.nii.gz").exists()


def test_a_learned_upsampling_model_is_refused():
    vol = Volume(texture((8, 8, 4)), np.diag([1.0, 1.0, 4.0, 1.0]))
    with pytest.raises(MrisrError, match="learned-upsampling model"):
        mrisr.upscale(vol, spacing=1.0, reference=Volume(texture((8, 8, 16)), np.eye(4)), method="transfer",
                      model="rrlsrn-1x1x4", device="cpu")


def test_the_transfer_registers_the_reference_by_default(tmp_path, monkeypatch):
    _no_models(monkeypatch, tmp_path)
    truth = texture((24, 24, 32), seed=1)
    lr, affine, grid = thick(truth)
    src, ref = tmp_path / "t2.nii.gz", tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(lr, affine), src)
    moved = grid.affine.copy()
    moved[:3, 3] += (1.5, 0.0, 0.0)  # the reference's header says it sits 1.5 mm away from where it does
    nib.save(nib.Nifti1Image(truth, moved), ref)
    out = tmp_path / "t2_sr.nii.gz"
    result = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "1", "--reference", str(ref), "-o",
                                      str(out), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["reference"]["register"] == "rigid" and record["transfer"]["detail"]
    assert abs(record["reference"]["translation_mm"] - 1.5) < 0.3
    assert (tmp_path / "t2_sr_reference_rigid.tfm").is_file()
    data = np.asarray(nib.load(out).dataobj)
    spline = np.asarray(mrisr.upscale(nib.load(src), spacing=1.0, method="spline").dataobj)
    assert np.abs(data - truth).mean() < 0.5 * np.abs(spline - truth).mean()


def test_the_settings_of_a_reference_without_a_method_name_the_transfer():
    from mrisr.pipeline.settings import BatchSettings, output_settings, settings_fingerprint

    transfer = output_settings(BatchSettings(spacing=(1.0,), reference="/data/ref_t1.nii.gz"))
    assert (transfer["method"], transfer["register"]) == ("transfer", "rigid")
    assert transfer["model"] is not None and transfer["model"]["name"] == "recnn-d8w32"  # the default, scored too
    cnn = output_settings(BatchSettings(spacing=(1.0,), reference="/data/ref_t1.nii.gz", method="cnn"))
    assert cnn["register"] == "none" and settings_fingerprint(cnn) != settings_fingerprint(transfer)
