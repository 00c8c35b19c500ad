"""Values of the simulated acquisitions of :mod:`mrisr.acquisition.degrade` and ``mrisr degrade``."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from scipy import integrate, ndimage
from scipy.stats import norm

from mrisr.acquisition.degrade import degrade
from mrisr.acquisition.psf import SLICE_EDGE
from mrisr.errors import GeometryError, MrisrError
from mrisr.geometry.grid import target_grid, voxel_sizes
from mrisr.geometry.resample import resample_to_grid
from mrisr.inference.intensity import robust_scale

OBLIQUE = np.array([[0.9, 0.1, 0.0, -10.0], [0.0, 1.1, 0.2, 5.0], [0.1, 0.0, 1.3, 2.0], [0, 0, 0, 1.0]])


def _ramp(n: int, axis: int = 0, other: int = 3) -> np.ndarray:
    shape = [other] * 3
    shape[axis] = n
    idx = np.arange(n, dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
    return np.broadcast_to(idx, shape).astype(np.float32)


# ------------------------------------------------------------------- box


@pytest.mark.parametrize("factor, n", [(2, 12), (3, 12), (3, 21)])
def test_box_of_ramp_is_exact_at_edge_aligned_centres(factor, n):
    lr, aff = degrade(_ramp(n), np.eye(4), [factor, 1, 1], psf="box")
    centres = factor * np.arange(n // factor) + (factor - 1) / 2  # HR coordinate of each LR centre
    assert lr.shape == (n // factor, 3, 3)
    np.testing.assert_allclose(lr[:, 1, 1], centres, atol=1e-5)
    np.testing.assert_allclose(aff[0], [factor, 0, 0, (factor - 1) / 2], atol=1e-12)
    np.testing.assert_array_equal(lr[:, 0, 0], lr[:, 2, 1])  # untouched axes stay identical


def test_box_non_integer_factor_uses_exact_overlap_weights():
    # factor 2.5 over 20 voxels: LR voxel j covers HR [2.5 j - 0.5, 2.5 j + 2) -> whole and half voxels
    lr, aff = degrade(_ramp(20, axis=1), np.eye(4), [1, 2.5, 1], psf="box")
    expected = []
    for j in range(8):
        lo, hi = 2.5 * j - 0.5, 2.5 * j + 2.0
        total = sum(i * (min(hi, i + 0.5) - max(lo, i - 0.5)) for i in range(20) if min(hi, i + 0.5) > max(lo, i - 0.5))
        expected.append(total / 2.5)
    assert expected[:2] == pytest.approx([0.8, 3.2])
    np.testing.assert_allclose(lr[1, :, 1], expected, atol=1e-5)
    assert aff[1, 1] == 2.5 and aff[1, 3] == pytest.approx(0.75)


# ------------------------------------------------------------------- gaussian


@pytest.mark.parametrize("factor", [2, 3, [2, 1, 3]])
def test_gaussian_preserves_constants_and_the_mean(factor):
    const = np.full((18, 18, 18), 7.25, np.float32)
    lr, _ = degrade(const, np.eye(4), factor, psf="gaussian")
    np.testing.assert_allclose(lr, 7.25, rtol=1e-6)
    rng = np.random.default_rng(0)
    smooth = 100 + 50 * ndimage.gaussian_filter(rng.standard_normal((18, 18, 18)), 3.0, mode="wrap")
    lr, _ = degrade(smooth.astype(np.float32), np.eye(4), factor, psf="gaussian", fwhm=1.5)
    assert lr.mean() == pytest.approx(smooth.mean(), rel=2e-5)


def test_gaussian_blurs_more_with_a_wider_fwhm():
    impulse = np.zeros((24, 3, 3), np.float32)
    impulse[11:13] = 1.0  # one LR voxel (factor 2) lit
    narrow, _ = degrade(impulse, np.eye(4), [2, 1, 1], psf="gaussian", fwhm=1)
    wide, _ = degrade(impulse, np.eye(4), [2, 1, 1], psf="gaussian", fwhm=2)
    assert narrow[5, 0, 0] > wide[5, 0, 0] and narrow[4, 0, 0] < wide[4, 0, 0]
    assert narrow[:, 0, 0].sum() == pytest.approx(wide[:, 0, 0].sum(), rel=1e-5)


# ------------------------------------------------------------------- kspace


def _bandlimited(t: np.ndarray, n: int) -> np.ndarray:
    """A few low-frequency cosines (periods n and n/2) on a period of n voxels."""
    return 3.0 + np.cos(2 * np.pi * t / n) + 0.5 * np.sin(2 * np.pi * 2 * t / n + 0.2)


def test_kspace_truncation_is_exact_for_a_bandlimited_signal():
    n = 24
    i = np.arange(n, dtype=np.float64)
    f = _bandlimited(i, n)
    hr = (f[:, None, None] * f[None, :, None] * f[None, None, :]).astype(np.float32)
    spacing = [2, 3, 4]  # LR sizes 12, 8, 6: every kept band holds frequencies 0..2
    lr, aff = degrade(hr, np.eye(4), spacing, psf="kspace")
    grid = target_grid(np.eye(4), hr.shape, spacing)
    p = [_bandlimited(grid.positions(a), n) for a in range(3)]
    expected = p[0][:, None, None] * p[1][None, :, None] * p[2][None, None, :]
    assert lr.shape == (12, 8, 6)
    np.testing.assert_allclose(lr, expected, atol=2e-5 * expected.max())
    np.testing.assert_allclose(aff, grid.affine, atol=1e-12)


def test_kspace_removes_frequencies_above_the_lr_band():
    n = 24
    i = np.arange(n, dtype=np.float64)
    high = np.cos(2 * np.pi * 9 * i / n)  # 9 cycles: above the 6 kept by a factor 2 (12 samples)
    hr = (5.0 + high)[:, None, None] * np.ones((1, 2, 2))
    lr, _ = degrade(hr.astype(np.float32), np.eye(4), [2, 1, 1], psf="kspace")
    np.testing.assert_allclose(lr, 5.0, atol=1e-5)


# ------------------------------------------------------------------- slice


def _slice_profile_weight(offset: float, width: float) -> float:
    """Integral over one HR voxel centred ``offset`` voxels from the slice centre of the slice profile:
    a box of ``width`` convolved with a Gaussian of sigma SLICE_EDGE * width (numerical quadrature)."""
    s = SLICE_EDGE * width

    def density(t: float) -> float:
        return (norm.cdf((t + width / 2) / s) - norm.cdf((t - width / 2) / s)) / width

    return integrate.quad(density, offset - 0.5, offset + 0.5)[0]


def test_slice_psf_blurs_only_the_largest_factor_axis_with_the_profile():
    hr = np.zeros((6, 7, 24), np.float32)
    hr[2, 3, 10] = 1.0  # an impulse
    lr, aff = degrade(hr, np.eye(4), [1, 1, 3], psf="slice")
    assert lr.shape == (6, 7, 8)
    np.testing.assert_allclose(aff[2], [0, 0, 3, 1], atol=1e-12)
    # nothing leaks in-plane
    in_plane = np.abs(lr).sum(axis=2)
    assert in_plane[2, 3] > 0 and np.count_nonzero(in_plane > 1e-7) == 1
    # through-plane: LR slice j (centre at HR 1 + 3 j) weighs HR voxel 10 by the slice profile
    centres = 1 + 3 * np.arange(8)
    expected = [_slice_profile_weight(10 - c, 3.0) for c in centres]
    assert expected[3] == pytest.approx(0.3318, abs=1e-3)  # mostly inside slice 3 ...
    assert 1e-4 < expected[2] < 1e-2  # ... with a soft edge reaching the neighbours
    np.testing.assert_allclose(lr[2, 3], expected, atol=1e-6)


def test_slice_psf_with_fwhm_sets_the_slice_thickness():
    hr = np.zeros((4, 4, 24), np.float32)
    hr[:, :, 10] = 1.0
    lr, _ = degrade(hr, np.eye(4), [1, 1, 3], psf="slice", fwhm=[1, 1, 2])  # 6 mm slices every 3 mm
    centres = 1 + 3 * np.arange(8)
    expected = np.array([_slice_profile_weight(10 - c, 6.0) for c in centres])
    np.testing.assert_allclose(lr[0, 0], expected, atol=1e-6)
    # overlapping slices: HR voxel 10 is inside slice 3 (1/6 of it) and on the edges of slices 2 and 4
    assert expected[3] == pytest.approx(1 / 6, abs=1e-3)
    assert expected[2] == pytest.approx(1 / 12, abs=1e-3) and expected[4] == pytest.approx(1 / 12, abs=1e-3)


# ------------------------------------------------------------------- geometry


@pytest.mark.parametrize("factors", [(2, 3, 1), (3, 1, 2), (1, 2, 4), (2, 2, 2)])
@pytest.mark.parametrize("psf", ["box", "gaussian", "kspace", "slice"])
def test_degrade_then_upscale_lands_on_the_hr_grid(factors, psf):
    hr = np.random.default_rng(1).random((12, 18, 8)).astype(np.float32)
    hr_sizes = voxel_sizes(OBLIQUE)
    lr, lr_aff = degrade(hr, OBLIQUE, hr_sizes * np.array(factors), psf=psf)
    assert lr.shape == tuple(s // f for s, f in zip(hr.shape, factors))
    grid = target_grid(lr_aff, lr.shape, hr_sizes)
    assert grid.shape == hr.shape
    np.testing.assert_allclose(grid.affine, OBLIQUE, atol=1e-5)
    up = resample_to_grid(lr, grid)
    assert up.shape == hr.shape


def test_finer_spacing_is_refused():
    hr = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(GeometryError, match="finer"):
        degrade(hr, np.diag([1.0, 1.0, 2.0, 1.0]), [2, 2, 1])


def test_unknown_psf_is_refused_with_a_suggestion():
    with pytest.raises(MrisrError, match="gaussian"):
        degrade(np.zeros((4, 4, 4), np.float32), np.eye(4), 2, psf="gauss")


def test_4d_volumes_are_degraded_independently():
    hr = np.stack([_ramp(12), 2 * _ramp(12)], axis=-1)
    lr, _ = degrade(hr, np.eye(4), [2, 1, 1], psf="box")
    assert lr.shape == (6, 3, 3, 2)
    np.testing.assert_allclose(lr[..., 1], 2 * lr[..., 0], atol=1e-5)


# ------------------------------------------------------------------- noise


def test_rician_noise_has_the_requested_sigma_in_the_background():
    hr = np.zeros((40, 40, 40), np.float32)
    hr[14:26, 14:26, 14:26] = 1000.0
    clean, _ = degrade(hr, np.eye(4), 2, psf="box")
    noisy, _ = degrade(hr, np.eye(4), 2, psf="box", noise=0.05, seed=3)
    sigma = 0.05 * robust_scale(clean)
    assert sigma == pytest.approx(50.0)
    background = noisy[clean == 0]
    assert background.size > 6000
    # magnitude of complex Gaussian noise on zero signal: Rayleigh, mean sigma sqrt(pi/2), E[x^2] = 2 sigma^2
    assert background.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.03)
    assert math.sqrt(np.mean(background.astype(np.float64) ** 2) / 2) == pytest.approx(sigma, rel=0.03)
    assert np.all(noisy >= 0)
    again, _ = degrade(hr, np.eye(4), 2, psf="box", noise=0.05, seed=3)
    np.testing.assert_array_equal(noisy, again)


# ------------------------------------------------------------------- CLI


def _write(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


def test_cli_degrade_writes_the_expected_affine(tmp_path):
    from typer.testing import CliRunner

    from mrisr.cli.app import app

    hr = np.random.default_rng(2).random((12, 12, 12)).astype(np.float32) * 100
    src = _write(tmp_path / "hr.nii.gz", hr, OBLIQUE)
    out = tmp_path / "lr.nii.gz"
    spacing = voxel_sizes(OBLIQUE) * np.array([1, 2, 3])
    args = ["degrade", str(src), "--spacing", *map(str, spacing), "--psf", "box", "-o", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    img = nib.load(str(out))
    expected_data, expected_aff = degrade(hr, OBLIQUE, spacing, psf="box")
    assert img.shape == (12, 6, 4)
    np.testing.assert_allclose(img.affine, expected_aff, atol=1e-5)
    np.testing.assert_allclose(img.get_fdata(), expected_data, rtol=1e-5, atol=1e-4)
    # an existing output needs --force
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "lr.nii.gz" in res.stderr
    slice_args = ["--psf", "slice", "--fwhm", "1", "1", "2", "--noise", "0.02", "--seed", "4", "--force"]
    res = CliRunner().invoke(app, [*args, *slice_args])
    assert res.exit_code == 0, res.output
    expected_data, _ = degrade(hr, OBLIQUE, spacing, psf="slice", fwhm=(1, 1, 2), noise=0.02, seed=4)
    np.testing.assert_allclose(nib.load(str(out)).get_fdata(), expected_data, rtol=1e-5, atol=1e-4)


def test_cli_degrade_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from mrisr.cli.app import app

    src = _write(tmp_path / "hr.nii.gz", np.ones((6, 6, 6)), np.eye(4))
    out = str(tmp_path / "lr.nii.gz")
    runner = CliRunner()
    res = runner.invoke(app, ["degrade", str(src), "--spacing", "0.5", "-o", out])
    assert res.exit_code == 1 and "finer" in res.stderr and "hr.nii.gz" in res.stderr  # input-specific
    res = runner.invoke(app, ["degrade", str(src), "--spacing", "2", "2", "-o", out])
    assert res.exit_code == 2 and "spacing" in res.stderr
    res = runner.invoke(app, ["degrade", str(src), "--spacing", "2", "--psf", "boxx", "-o", out])
    assert res.exit_code == 2 and "box" in res.stderr
    res = runner.invoke(app, ["degrade", str(src), "--spacing", "2", "--noise", "-1", "-o", out])
    assert res.exit_code == 2 and "noise" in res.stderr
    res = runner.invoke(app, ["degrade", str(tmp_path / "nope.nii.gz"), "--spacing", "2", "-o", out])
    assert res.exit_code == 1 and "nope.nii.gz" in res.stderr
