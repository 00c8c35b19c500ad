"""Data consistency (``--consistency``): the acquisition operator on the contract and the exact projection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mrisr.acquisition.degrade import degrade
from mrisr.errors import MrisrError
from mrisr.geometry.grid import target_grid
from mrisr.geometry.resample import resample_to_grid
from mrisr.options import PSFS
from mrisr.pipeline import upscale as pipeline
from mrisr.trust.consistency import (
    NOISE_FACTOR,
    ConsistencyTracker,
    Projector,
    acquisition_operators,
    consistency_error,
    input_grid,
    noise_weights,
    residual_noise,
    robust_range,
    select_psf,
    weigh_residual,
)
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
    tracker = ConsistencyTracker(grid, (4, 4, 4), psf="box", noise=False)  # the exact projection
    for _ in range(2):
        y = _smooth((4, 4, 4))
        spline = resample_to_grid(y, grid)
        tracker(y, spline, spline + RNG.normal(0, 5, spline.shape).astype(np.float32))
    s = tracker.summary()
    assert s["psf"] == "box" and s["psf_requested"] == "box" and s["psf_errors"] is None
    assert s["exact"] and len(tracker.errors["network"]) == 2
    assert s["noise_weighted"] is False and s["noise_level"] == 0.0
    assert s["error_projected"] < 1e-6 < s["error_spline"] < s["error_network"]


# -- the unknown acquisition: psf="auto" ---------------------------------------------------------

def _anisotropic_case(psf):
    """A truth on the output grid of a 2 x 2 x 4 mm input, its acquisition with ``psf``, a smooth output error."""
    rng = np.random.default_rng(3)
    shape = (8, 8, 6)
    grid = target_grid(np.diag([2.0, 2.0, 4.0, 1.0]), shape, 1.0)
    truth = (400 * ndimage.gaussian_filter(rng.random(grid.shape), 1.0)).astype(np.float32)
    error = (20 * ndimage.gaussian_filter(rng.normal(size=grid.shape), 2.0)).astype(np.float32)
    return grid, shape, truth, error, Projector(grid, shape, psf).degrade(truth)


@pytest.mark.parametrize("psf", PSFS)
def test_select_psf_finds_the_acquisition_that_made_the_input(psf):
    grid, shape, truth, error, y = _anisotropic_case(psf)
    chosen, errors = select_psf(grid, shape, y, truth + error)
    assert chosen == psf and set(errors) == set(PSFS)
    # The errors are the candidates' consistency errors, and the true PSF wins by a clear margin.
    for cand in PSFS:
        expected = consistency_error(y, Projector(grid, shape, cand).degrade(truth + error))
        assert errors[cand] == pytest.approx(expected, rel=1e-5)
    assert errors[psf] < 0.5 * min(v for k, v in errors.items() if k != psf)
    # Restricted candidates, ties go to the first; bad names are refused.
    assert select_psf(grid, shape, y, truth + error, ("gaussian", psf))[0] == psf
    with pytest.raises(MrisrError, match="consistency psf"):
        select_psf(grid, shape, y, truth, ("box", "lanczos"))


def test_auto_tracker_chooses_on_the_first_volume_and_keeps_it():
    grid, shape, truth, error, y = _anisotropic_case("kspace")
    tracker = ConsistencyTracker(grid, shape)
    assert tracker.projector is None
    tracker(y, truth, truth + error)
    s = tracker.summary()
    assert s["psf"] == "kspace" and s["psf_requested"] == "auto" and s["psf_errors"]["kspace"] == s["error_network"]
    first = tracker.projector
    y_box = Projector(grid, shape, "box").degrade(truth)  # a second volume does not change the choice
    tracker(y_box, truth, truth)
    assert tracker.projector is first and tracker.summary()["psf"] == "kspace"
    with pytest.raises(MrisrError, match="consistency psf"):
        ConsistencyTracker(grid, shape, psf="sinc")


# -- noisy inputs: correct only above the residual's noise ---------------------------------------

def test_residual_noise_reads_white_noise_and_ignores_a_sparse_error():
    rng = np.random.default_rng(5)
    assert residual_noise(rng.normal(0, 3.0, (24, 24, 24))) == pytest.approx(3.0, rel=0.05)
    sparse = np.zeros((24, 24, 24), np.float32)
    sparse[8:14, 8:14, 8:14] = rng.normal(0, 10.0, (6, 6, 6))  # an error at a few edges, zero elsewhere
    assert residual_noise(sparse) == 0.0
    assert residual_noise(np.zeros((2, 2, 2))) == 0.0             # no axis with 3 voxels: not measurable


def test_weights_keep_signal_and_drop_noise():
    rng = np.random.default_rng(6)
    n = 32
    k = np.arange(n)
    signal = (10 * np.cos(2 * np.pi * k / n)[:, None, None] * np.ones((n, n, n))).astype(np.float32)
    noise = rng.normal(0, 1.0, (n, n, n)).astype(np.float32)
    w = noise_weights(signal + noise, 1.0)
    # The cosine's two frequency bins (and their neighbours) pass; noise-only frequencies are cut.
    assert w[1, 0, 0] > 0.99 and w[-1, 0, 0] > 0.99 and np.median(w) == 0.0
    kept = weigh_residual(signal + noise, 1.0)
    assert np.sqrt(np.mean((kept - signal) ** 2)) < 0.15            # the noise (std 1) is almost all removed
    np.testing.assert_array_equal(weigh_residual(signal + noise, 0.0), signal + noise)


def _noisy_case(sigma, seed=7):
    """A head-like truth (zero background) on the output grid of a 2 mm input, its box acquisition plus noise,
    and a result off by a smooth intensity error."""
    rng = np.random.default_rng(seed)
    shape = (24, 24, 24)
    grid = target_grid(np.diag([2.0, 2.0, 2.0, 1.0]), shape, 1.0)
    truth = np.zeros(grid.shape, np.float32)
    truth[8:40, 8:40, 8:40] = 200 + 200 * ndimage.gaussian_filter(rng.random((32, 32, 32)), 1.0)
    proj = Projector(grid, shape)
    y = proj.degrade(truth) + rng.normal(0, sigma, shape).astype(np.float32)
    x = truth.copy()                                    # a "network" result with a smooth intensity error
    x[8:40, 8:40, 8:40] += 30 * np.sin(np.pi * np.arange(32) / 32)[:, None, None]
    return grid, shape, truth, proj, y, x


def test_noise_aware_projection_stops_at_the_noise_level():
    sigma = 8.0
    grid, shape, truth, proj, y, x = _noisy_case(sigma)
    scale = robust_range(y)
    tracker = ConsistencyTracker(grid, shape, psf="box")
    out = tracker(y, x, x)
    s = tracker.summary()
    assert s["noise_weighted"] and s["noise_level"] == pytest.approx(sigma / scale, rel=0.1)
    # Discrepancy: the residual left is about the noise (the truth's own error is sigma / scale)...
    truth_error = proj.error(truth, y)
    assert truth_error == pytest.approx(sigma / scale, rel=0.05)
    assert s["error_network"] > 1.5 * truth_error
    assert 0.9 * truth_error < s["error_projected"] < 1.1 * truth_error < NOISE_FACTOR * truth_error
    # ...so the noise is not fitted back, and the smooth error is removed: far closer to the truth than the
    # raw result (11.5) and than the exact projection (8.0, the noise back-projected).
    exact = proj.project(x, y)
    assert proj.error(exact, y) < 1e-6
    dist = {name: float(np.sqrt(np.mean((v - truth) ** 2))) for name, v in
            (("raw", x), ("exact", exact), ("weighted", out))}
    assert dist["raw"] == pytest.approx(11.547, rel=1e-3) and dist["exact"] == pytest.approx(8.0, rel=0.05)
    assert dist["weighted"] < 0.4 * dist["exact"]
    np.testing.assert_allclose(out, proj.project_above_noise(x, y, residual_noise(y - proj.degrade(x))), atol=1e-3)


def test_noise_free_residual_gets_the_exact_projection():
    grid, shape, truth, proj, y, x = _noisy_case(0.0)
    tracker = ConsistencyTracker(grid, shape)                         # auto PSF, noise weighting on
    out = tracker(y, x, x)
    s = tracker.summary()
    assert s["psf"] == "box" and s["noise_level"] == 0.0 and s["error_projected"] < 1e-6 < s["error_network"]
    np.testing.assert_allclose(out, proj.project(x, y), atol=1e-3)
    assert np.linalg.norm(out - truth) <= np.linalg.norm(x - truth)  # the truth is in the consistent set
    # With sigma 0 the weighted step is the exact one.
    np.testing.assert_allclose(proj.project_above_noise(x, y, 0.0), proj.project(x, y), atol=1e-4)


def _tiny_model():
    import torch

    from mrisr.archs.recnn import ReCNN
    from mrisr.inference.model_card import LoadedModel, example_card

    torch.manual_seed(0)
    net = ReCNN(3, 4, cond_dim=3)
    with torch.no_grad():
        net.body[-1].weight.mul_(20)  # a visible residual
    return LoadedModel("tiny", example_card(name="tiny"), net.eval(), "ab" * 32, None)


def test_upscale_volume_projects_and_reports():
    vol = Volume(_smooth((8, 7, 5)), _oblique((2.0, 2.0, 3.0)))
    model = _tiny_model()
    kw = dict(spacing=1, method="cnn", model=model, device="cpu", precision="fp32", threads=1)
    raw, _, _ = pipeline.upscale_volume(vol, consistency=False, **kw)
    data, affine, report = pipeline.upscale_volume(vol, consistency=True, **kw)
    c = report.consistency
    assert c["psf_requested"] == "auto" and c["iterations"] == 1 and c["noise_weighted"]
    assert set(c["psf_errors"]) == set(PSFS) and c["psf_errors"][c["psf"]] == min(c["psf_errors"].values())
    assert c["error_projected"] < c["error_network"] and c["error_spline"] > 1e-5
    # The written result is the tracker's correction of the network's result.
    grid = target_grid(vol.affine, vol.spatial_shape, 1.0)
    tracker = ConsistencyTracker(grid, vol.spatial_shape)
    np.testing.assert_allclose(data, tracker(vol.data, resample_to_grid(vol.data, grid), raw), atol=1e-3)
    mine = tracker.summary()
    assert mine["psf"] == c["psf"] and mine["psf_errors"] == pytest.approx(c["psf_errors"], rel=1e-4)
    for key in ("noise_level", "error_spline", "error_network", "error_projected"):
        assert mine[key] == pytest.approx(c[key], rel=1e-3)
    assert report.timings["consistency"] > 0 and report.to_dict()["consistency"] == c
    # A named PSF is used as is; the spline method is projected too (no network error then).
    _, _, rep = pipeline.upscale_volume(vol, factor=2, method="spline", consistency=True, consistency_psf="gaussian")
    r = rep.consistency
    assert r["error_network"] is None and r["psf"] == "gaussian" and r["psf_errors"] is None
    assert r["error_projected"] < r["error_spline"]
    with pytest.raises(MrisrError, match="consistency psf.*valid: auto, box"):
        pipeline.upscale_volume(vol, factor=2, method="spline", consistency=True, consistency_psf="lanczos")


def test_cli_consistency_json_record_has_the_three_errors(tmp_path):
    import nibabel as nib
    from typer.testing import CliRunner

    from mrisr.cli.app import app
    from mrisr.inference.model_card import save_model

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
    assert set(c) >= {"psf", "psf_requested", "psf_errors", "noise_weighted", "noise_level", "error_spline",
                      "error_network", "error_projected"}
    assert c["psf_requested"] == "auto" and c["psf"] in PSFS and c["noise_level"] >= 0
    assert c["error_projected"] < c["error_network"]
    sidecar = json.loads((tmp_path / "t1_sr.json").read_text())
    assert sidecar["consistency"] == c and sidecar["uncertainty"] is None
