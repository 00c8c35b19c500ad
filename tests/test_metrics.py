"""Values of the evaluation metrics, the head mask and ``mrisr evaluate``."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mrisr.errors import MrisrError
from mrisr.evaluation.masks import head_mask, otsu_threshold
from mrisr.evaluation.metrics import K1, default_peak, evaluate, nrmse, psnr, ssim


def _phantom(n: int = 20, seed: int = 0) -> np.ndarray:
    """A smooth positive test volume with structure at several scales."""
    rng = np.random.default_rng(seed)
    return (100.0 + 50.0 * ndimage.gaussian_filter(rng.standard_normal((n, n, n)), 2.0)).astype(np.float64)


def _ball(n: int, radius: float, pv: int = 1) -> np.ndarray:
    """Fraction of each voxel inside a centred ball (``pv``-fold supersampling)."""
    g = (np.arange(n * pv) + 0.5) / pv - 0.5 - (n - 1) / 2
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    inside = (xx**2 + yy**2 + zz**2 < radius**2).astype(np.float64)
    return inside.reshape(n, pv, n, pv, n, pv).mean(axis=(1, 3, 5))


# ------------------------------------------------------------------- PSNR


def test_psnr_constant_error_matches_hand_value():
    ref = _phantom()
    assert psnr(ref + 2.5, ref, peak=200.0) == pytest.approx(20 * math.log10(200.0 / 2.5), abs=1e-10)
    # the sign of the error does not matter
    assert psnr(ref - 2.5, ref, peak=200.0) == pytest.approx(20 * math.log10(80.0), abs=1e-10)


def test_psnr_default_peak_is_the_995th_percentile():
    ref = np.arange(1001.0).reshape(7, 11, 13)  # p99.5 of 0..1000 = 995
    assert default_peak(ref) == pytest.approx(995.0)
    assert psnr(ref + 1.0, ref) == pytest.approx(20 * math.log10(995.0), abs=1e-10)


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    ref = _phantom()
    assert psnr(ref, ref) == math.inf
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    assert nrmse(ref, ref) == 0.0


def test_psnr_refuses_bad_peak_and_zero_reference():
    ref = _phantom()
    with pytest.raises(MrisrError, match="peak"):
        psnr(ref, ref, peak=-1.0)
    with pytest.raises(MrisrError, match="zero"):
        psnr(np.ones((4, 4, 4)), np.zeros((4, 4, 4)))


# ------------------------------------------------------------------- SSIM


def test_ssim_constant_offset_is_the_luminance_term():
    peak = 100.0
    ref = np.full((10, 10, 10), 80.0)
    c1 = (K1 * peak) ** 2
    for offset in (5.0, 20.0):
        expected = (2 * 80.0 * (80.0 + offset) + c1) / (80.0**2 + (80.0 + offset) ** 2 + c1)
        assert ssim(ref + offset, ref, peak=peak) == pytest.approx(expected, abs=1e-12)


def test_ssim_offset_keeps_structure_and_decreases_with_offset():
    ref = _phantom()
    peak = 200.0
    values = [ssim(ref + c, ref, peak=peak) for c in (0.0, 2.0, 10.0, 40.0)]
    assert values[0] == pytest.approx(1.0, abs=1e-12)
    assert all(a > b for a, b in zip(values, values[1:]))
    # an offset leaves variances and covariance untouched: the map is the luminance term of the
    # local (Gaussian-window, sigma 1.5, mirrored edges) mean mu alone
    c1 = (K1 * peak) ** 2
    mu = ndimage.gaussian_filter(ref, 1.5, mode="reflect", truncate=3.5)
    expected = np.mean((2 * mu * (mu + 40.0) + c1) / (mu**2 + (mu + 40.0) ** 2 + c1))
    assert values[-1] == pytest.approx(expected, abs=1e-9)


def test_ssim_decreases_monotonically_with_noise():
    ref = _phantom()
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(ref.shape)
    values = [ssim(ref + s * noise, ref, peak=200.0) for s in (0.0, 1.0, 3.0, 10.0, 30.0)]
    assert values[0] == pytest.approx(1.0, abs=1e-12)
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.5


def test_ssim_refuses_bad_sigma():
    ref = _phantom()
    with pytest.raises(MrisrError, match="sigma"):
        ssim(ref, ref, sigma=0)


# ------------------------------------------------------------------- NRMSE


def test_nrmse_known_value():
    ref = np.arange(1001.0).reshape(7, 11, 13)  # robust range p99.5 - p0.5 = 995 - 5 = 990
    assert nrmse(ref + 9.9, ref) == pytest.approx(0.01, abs=1e-12)
    x = ref.copy()
    x.flat[::2] += 3.0
    x.flat[1::2] -= 3.0
    assert nrmse(x, ref) == pytest.approx(3.0 / 990.0, abs=1e-12)


def test_nrmse_of_constant_reference_uses_its_value_and_zero_is_refused():
    assert nrmse(np.ones((4, 4, 4)), np.full((4, 4, 4), 2.0)) == pytest.approx(0.5)
    with pytest.raises(MrisrError, match="zero"):
        nrmse(np.ones((4, 4, 4)), np.zeros((4, 4, 4)))


# ------------------------------------------------------------------- masks


def test_mask_restricts_every_metric():
    ref = _phantom(28)
    x = ref.copy()
    mask = np.zeros(ref.shape, bool)
    mask[5:23, 5:23, 5:23] = True
    x[~mask] += 1000.0  # huge errors outside the mask only
    x[mask] += 2.0
    assert psnr(x, ref, mask, peak=100.0) == pytest.approx(20 * math.log10(50.0), abs=1e-10)
    lo, hi = np.percentile(ref[mask], [0.5, 99.5])
    assert nrmse(x, ref, mask) == pytest.approx(2.0 / (hi - lo), abs=1e-12)
    assert default_peak(ref, mask) == pytest.approx(np.percentile(ref[mask], 99.5))
    # SSIM: a mask far (> window radius) from the damage sees only the constant offset
    inner = np.zeros(ref.shape, bool)
    inner[13:15, 13:15, 13:15] = True
    assert ssim(x, ref, inner, peak=100.0) == pytest.approx(ssim(ref + 2.0, ref, inner, peak=100.0), abs=1e-12)
    assert ssim(x, ref, inner, peak=100.0) > ssim(x, ref, None, peak=100.0)


def test_empty_or_misshaped_mask_refused():
    ref = _phantom()
    with pytest.raises(MrisrError, match="empty"):
        psnr(ref, ref, np.zeros(ref.shape, bool))
    with pytest.raises(MrisrError, match=r"mask shape \(3, 3, 3\)"):
        psnr(ref, ref, np.ones((3, 3, 3), bool))


def test_otsu_splits_two_classes():
    values = np.r_[np.full(500, 10.0), np.full(500, 200.0)]
    assert 10.0 < otsu_threshold(values) < 200.0


def test_head_mask_recovers_a_noisy_sphere_with_a_dark_hole():
    n, radius = 32, 11.0
    truth = _ball(n, radius) > 0.5
    img = 100.0 * _ball(n, radius, pv=4)
    img[_ball(n, 4.0) > 0.5] = 10.0  # a dark "ventricle": filled back in
    rng = np.random.default_rng(0)
    noisy = np.abs(img + rng.normal(0, 5, img.shape) + 1j * rng.normal(0, 5, img.shape))
    noisy[1, 1, 1] = 300.0  # a hot speck in the background: dropped
    m = head_mask(noisy)
    dice = 2 * np.sum(m & truth) / (m.sum() + truth.sum())
    assert dice > 0.95
    assert m[n // 2, n // 2, n // 2] and not m[1, 1, 1]


def test_head_mask_of_constant_image_is_everything():
    assert head_mask(np.full((5, 5, 5), 3.0)).all()


# ------------------------------------------------------------------- evaluate


def test_evaluate_values_and_mask_modes():
    ref = 100.0 * _ball(24, 8.0, pv=2)
    sr = ref + 1.0
    out = evaluate(sr, ref, mask=None, peak=50.0)
    assert out["psnr"] == pytest.approx(20 * math.log10(50.0), abs=1e-10)
    assert out["mask_voxels"] == 24**3 and out["mask"] == "none"
    auto = evaluate(sr, ref)  # mask="auto"
    assert auto["mask"] == "auto"
    assert 0 < auto["mask_voxels"] < 24**3
    assert np.array_equal(head_mask(ref).sum(), auto["mask_voxels"])
    assert auto["nrmse"] == pytest.approx(nrmse(sr, ref, head_mask(ref)), abs=1e-12)
    same = evaluate(ref, ref, mask=None)
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0) and same["nrmse"] == 0.0


def test_evaluate_refuses_mismatched_shapes_with_both_in_message():
    with pytest.raises(MrisrError, match=r"shape \(8, 8, 8\).*shape \(8, 8, 9\).*difference \(0, 0, -1\)"):
        evaluate(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)), mask=None)


def test_evaluate_refuses_shifted_affine_and_accepts_tiny_difference():
    data = 100.0 * _ball(12, 4.0)
    a = np.diag([1.0, 1.0, 2.0, 1.0])
    b = a.copy()
    b[0, 3] = 0.5
    with pytest.raises(MrisrError, match=r"differ by up to 0\.5 mm") as err:
        evaluate(nib.Nifti1Image(data, a), nib.Nifti1Image(data, b), mask=None)
    assert "difference [0 0 0 -0.5" in str(err.value)
    c = a.copy()
    c[:3, 3] += 5e-5  # within 1e-4 mm
    assert evaluate(nib.Nifti1Image(data, a), nib.Nifti1Image(data, c), mask=None)["psnr"] == math.inf
    # a voxel-size difference grows across the grid: caught at the far corner
    d = a.copy()
    d[2, 2] = 2.0 + 2e-5
    with pytest.raises(MrisrError, match="differ by up to"):
        evaluate(nib.Nifti1Image(data, a), nib.Nifti1Image(data, d), mask=None)


def test_evaluate_accepts_mask_array_and_image():
    ref = _phantom(12)
    mask = np.zeros(ref.shape, bool)
    mask[2:6, 2:6, 2:6] = True
    expected = psnr(ref + 1.0, ref, mask)
    assert evaluate(ref + 1.0, ref, mask=mask)["psnr"] == pytest.approx(expected)
    img = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))
    r = evaluate(nib.Nifti1Image(ref + 1.0, np.eye(4)), nib.Nifti1Image(ref, np.eye(4)), mask=img)
    assert r["psnr"] == pytest.approx(expected) and r["mask_voxels"] == 64
    shifted = nib.Nifti1Image(mask.astype(np.uint8), np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(MrisrError, match="mask"):
        evaluate(nib.Nifti1Image(ref, np.eye(4)), nib.Nifti1Image(ref, np.eye(4)), mask=shifted)


# ------------------------------------------------------------------- CLI


def _write(path, data, affine=np.eye(4)):  # noqa: B008 - read, never changed
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


def test_cli_evaluate_json_and_table(tmp_path):
    from typer.testing import CliRunner

    from mrisr.cli.app import app

    ref = 100.0 * _ball(16, 5.0, pv=2)
    sr = _write(tmp_path / "sr.nii.gz", ref + 1.0)
    rf = _write(tmp_path / "ref.nii.gz", ref)
    res = CliRunner().invoke(app, ["evaluate", str(sr), str(rf), "--mask", "none", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["psnr"] == pytest.approx(20 * math.log10(default_peak(ref)), abs=1e-4)
    assert out["mask_voxels"] == 16**3
    res = CliRunner().invoke(app, ["evaluate", str(sr), str(rf)])
    assert res.exit_code == 0, res.output
    assert "PSNR" in res.stdout and "SSIM" in res.stdout


def test_cli_evaluate_with_mask_file(tmp_path):
    from typer.testing import CliRunner

    from mrisr.cli.app import app

    ref = _phantom(12)
    mask = np.zeros(ref.shape, np.float32)
    mask[2:6, 2:6, 2:7] = 1
    paths = [_write(tmp_path / f"{k}.nii.gz", v) for k, v in (("sr", ref + 2.0), ("ref", ref), ("m", mask))]
    res = CliRunner().invoke(app, ["evaluate", str(paths[0]), str(paths[1]), "--mask", str(paths[2]), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["mask_voxels"] == 80 and out["mask"] == str(paths[2])
    ref32 = ref.astype(np.float32).astype(np.float64)  # as stored
    assert out["psnr"] == pytest.approx(psnr(ref32 + 2.0, ref32, mask > 0), abs=1e-4)


def test_cli_evaluate_identical_json_is_strict(tmp_path):
    from typer.testing import CliRunner

    from mrisr.cli.app import app

    ref = 100.0 * _ball(10, 3.0, pv=2)
    rf = _write(tmp_path / "ref.nii.gz", ref)
    res = CliRunner().invoke(app, ["evaluate", str(rf), str(rf), "--mask", "none", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert out["psnr"] is None and out["ssim"] == 1.0 and out["nrmse"] == 0.0  # null = infinite PSNR


def test_cli_evaluate_errors_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from mrisr.cli.app import app

    a = _write(tmp_path / "a.nii.gz", np.ones((6, 6, 6)))
    b = _write(tmp_path / "b.nii.gz", np.ones((6, 6, 7)))
    res = CliRunner().invoke(app, ["evaluate", str(a), str(b), "--mask", "none"])
    assert res.exit_code == 1
    assert "(6, 6, 6)" in res.stderr and "(6, 6, 7)" in res.stderr
    res = CliRunner().invoke(app, ["evaluate", str(a), str(tmp_path / "missing.nii.gz")])
    assert res.exit_code == 1 and "missing.nii.gz" in res.stderr
    res = CliRunner().invoke(app, ["evaluate", str(a)])
    assert res.exit_code == 2
