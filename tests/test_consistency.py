"""Data consistency (``--consistency``): the acquisition operator on the contract and the exact projection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mrisr import pipeline
from mrisr.consistency import ConsistencyTracker, Projector, acquisition_operators, consistency_error, input_grid
from mrisr.degradation import PSFS, degrade
from mrisr.errors import MrisrError
from mrisr.geometry import target_grid
from mrisr.resample import resample_to_grid
from mrisr.volume import Volume

RNG = np.random.default_rng(11)




def _oblique(zooms) -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    a = np.eye(4)
    a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(zooms)
    a[:3, 3] = [12.0, -30.0, 7.5]
    return a


def _smooth(shape, sigma=1.5) -> np.ndarray:
    return (100 + 400 * ndimage.gaussian_filter(RNG.random(shape), sigma)).astype(np.float32)


@pytest.mark.parametrize("psf", PSFS)
def test_operators_equal_degrade_when_the_factor_divides_the_shape(psf):
    affine, shape, zooms = _oblique((2.0, 2.0, 3.0)), (6, 8, 5), (2.0, 2.0, 3.0)
    grid = target_grid(affine, shape, 1.0)
    assert grid.shape == (12, 16, 15)
    # The input grid seen from the output grid is the input itself.
    back = input_grid(grid, shape)
    np.testing.assert_allclose(back.affine, affine, atol=1e-9)
    np.testing.assert_allclose(back.spacing, zooms)
    x = _smooth(grid.shape)
    lr, lr_affine = degrade(x, grid.affine, zooms, psf=psf)
    np.testing.assert_allclose(lr_affine, affine, atol=1e-9)
    np.testing.assert_allclose(Projector(grid, shape, psf).degrade(x), lr, rtol=1e-5, atol=1e-3)


def test_box_rows_sit_on_the_input_voxels_for_a_non_integer_factor():
    shape = (5, 7, 6)
    grid = target_grid(np.diag([3.0, 3.0, 3.0, 1.0]), shape, 2.0)  # factor 1.5, shapes do not divide
    assert grid.shape == (8, 10, 9)
    for axis, op in enumerate(acquisition_operators(grid, shape, "box")):
        assert op.shape == (shape[axis], grid.shape[axis]) and (op >= 0).all()
        np.testing.assert_allclose(op.sum(axis=1), 1.0)
        r, c0 = grid.ratios[axis], grid.offsets[axis]
        j = np.arange(grid.shape[axis])
        checked = 0
        for i in range(shape[axis]):
            lo, hi = (i - 0.5 - c0) / r, (i + 0.5 - c0) / r  # input voxel i in output voxel coordinates
            if lo > -0.5 and hi < grid.shape[axis] - 0.5:   # not folded at an edge
                overlap = np.clip(np.minimum(j + 0.5, hi) - np.maximum(j - 0.5, lo), 0, None)
                np.testing.assert_allclose(op[i], overlap / (hi - lo), atol=1e-12)
                checked += 1
        assert checked >= shape[axis] - 2


def test_kept_axes_have_no_operator():
    grid = target_grid(np.eye(4), (4, 5, 6), (1.0, 1.0, 0.5))
    ops = acquisition_operators(grid, (4, 5, 6))
    assert ops[0] is None and ops[1] is None and ops[2].shape == (6, 12)


@pytest.mark.parametrize("zooms,target,psf", [
    ((2.0, 2.0, 2.0), 1.0, "box"),                  # factor 2
    ((3.0, 3.0, 3.0), 2.0, "box"),                  # factor 1.5: shapes do not divide
    ((1.0, 1.0, 3.0), 1.0, "box"),                  # thick slices only
    ((2.0, 2.0, 4.0), (1.0, 1.0, 1.6), "gaussian"),
    ((1.0, 1.0, 4.0), 1.0, "slice"),
])
def test_projection_makes_the_output_consistent_and_never_moves_away_from_the_truth(zooms, target, psf):
    in_shape = (7, 6, 5)
    grid = target_grid(_oblique(zooms), in_shape, target)
    proj = Projector(grid, in_shape, psf)
    assert proj.exact
    truth = _smooth(grid.shape, 1.0)
    y = proj.degrade(truth)                         # an exactly known acquisition of the truth
    spline = resample_to_grid(y, grid)
    before = proj.error(spline, y)
    assert before > 1e-3
    out = proj.project(spline, y)
    assert proj.error(out, y) < 1e-6               # exact in one step (float32 rounding left)
    # Orthogonal projection onto a set holding the truth: the error to the truth cannot grow.
    assert np.linalg.norm(out - truth) <= np.linalg.norm(spline - truth) * (1 + 1e-6)


def test_a_consistent_volume_is_left_unchanged():
    in_shape = (6, 6, 4)
    grid = target_grid(np.diag([3.0, 3.0, 3.0, 1.0]), in_shape, 2.0)
    proj = Projector(grid, in_shape)
    x = _smooth(grid.shape)
    y = proj.degrade(x)
    np.testing.assert_allclose(proj.project(x, y), x, atol=1e-4)  # values ~100..500
    # ...and the projection is idempotent.
    once = proj.project(_smooth(grid.shape), y)
    np.testing.assert_allclose(proj.project(once, y), once, atol=1e-4)


def test_an_axis_made_coarser_gets_the_least_squares_correction():
    in_shape = (10, 6, 4)
    grid = target_grid(np.eye(4), in_shape, (2.0, 0.5, 1.0))  # axis 0 made coarser, axis 1 finer
    proj = Projector(grid, in_shape)
    assert not proj.exact
    y = _smooth(in_shape)
    x = resample_to_grid(y, grid)
    out = proj.project(x, y)
    assert proj.error(out, y) <= proj.error(x, y)
    # Least squares: what is left of y - A x is what no output can explain, so a second step changes nothing.
    np.testing.assert_allclose(proj.project(out, y), out, atol=1e-3)


def test_error_definition_and_bad_arguments():
    y = np.linspace(0.0, 100.0, 1001)
    assert consistency_error(y, y) == 0.0
    assert consistency_error(y, y + 1.98) == pytest.approx(0.02)  # relative to P99.5 - P0.5 = 99
    grid = target_grid(np.eye(4), (4, 4, 4), 0.5)
    with pytest.raises(MrisrError, match="consistency psf"):
        Projector(grid, (4, 4, 4), psf="sinc")
    with pytest.raises(MrisrError, match="expected"):
        Projector(grid, (4, 4, 4)).degrade(np.zeros((4, 4, 4)))
    with pytest.raises(MrisrError, match="iterations"):
        Projector(grid, (4, 4, 4)).project(np.zeros(grid.shape), np.zeros((4, 4, 4)), iterations=0)


def test_tracker_reports_the_three_errors_combined_over_volumes():
    grid = target_grid(np.eye(4), (4, 4, 4), 0.5)
    tracker = ConsistencyTracker(grid, (4, 4, 4))
    for _ in range(2):
        y = _smooth((4, 4, 4))
        spline = resample_to_grid(y, grid)
        tracker(y, spline, spline + RNG.normal(0, 5, spline.shape).astype(np.float32))
    s = tracker.summary()
    assert s["psf"] == "box" and s["exact"] and len(tracker.errors["network"]) == 2
    assert s["error_projected"] < 1e-6 < s["error_spline"] < s["error_network"]


def _tiny_model():
    import torch

    from mrisr.archs.recnn import ReCNN
    from mrisr.model_card import LoadedModel, example_card

    torch.manual_seed(0)
    net = ReCNN(3, 4, cond_dim=3)
    with torch.no_grad():
        net.body[-1].weight.mul_(20)  # a visible residual
    return LoadedModel("tiny", example_card(name="tiny"), net.eval(), "ab" * 32, None)


def test_upscale_volume_projects_and_reports():
    vol = Volume(_smooth((8, 7, 5)), _oblique((2.0, 2.0, 3.0)))
    model = _tiny_model()
    kw = dict(spacing=1, method="cnn", model=model, device="cpu", precision="fp32", threads=1)
    raw, _, _ = pipeline.upscale_volume(vol, **kw)
    data, affine, report = pipeline.upscale_volume(vol, consistency=True, **kw)
    c = report.consistency
    assert c["psf"] == "box" and c["iterations"] == 1
    assert c["error_projected"] < 1e-5 < c["error_network"] and c["error_spline"] > 1e-5
    grid = target_grid(vol.affine, vol.spatial_shape, 1.0)
    proj = Projector(grid, vol.spatial_shape)
    np.testing.assert_allclose(data, proj.project(raw, vol.data), atol=1e-3)
    assert report.timings["consistency"] > 0 and report.to_dict()["consistency"] == c
    # The spline method is projected too; there is no network error then.
    _, _, rep = pipeline.upscale_volume(vol, factor=2, method="spline", consistency=True, consistency_psf="gaussian")
    assert rep.consistency["error_network"] is None and rep.consistency["psf"] == "gaussian"
    assert rep.consistency["error_projected"] < 1e-5
    with pytest.raises(MrisrError, match="consistency psf"):
        pipeline.upscale_volume(vol, factor=2, method="spline", consistency=True, consistency_psf="lanczos")


def test_cli_consistency_json_record_has_the_three_errors(tmp_path):
    import nibabel as nib
    from typer.testing import CliRunner

    from mrisr.cli.app import app
    from mrisr.model_card import save_model

    model = _tiny_model()
    folder = tmp_path / "tiny"
    save_model(model.network, folder, name="tiny",
               training={"data": "synthetic", "input_spacing_mm": [1, 4], "factor": [1, 4]})
    src = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(_smooth((8, 7, 5)), _oblique((2.0, 2.0, 3.0))), src)
    result = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "1", "--model", str(folder), "--device",
                                      "cpu", "--precision", "fp32", "--threads", "1", "--consistency", "--json",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout.splitlines()[0])
    c = rec["consistency"]
    assert set(c) >= {"psf", "error_spline", "error_network", "error_projected"}
    assert c["error_projected"] < c["error_network"] and c["error_projected"] < c["error_spline"]
    sidecar = json.loads((tmp_path / "t1_sr.json").read_text())
    assert sidecar["consistency"] == c and sidecar["uncertainty"] is None
