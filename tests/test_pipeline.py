"""The Python API: ``mrisr.upscale`` and ``pipeline.upscale_volume``."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import mrisr
from mrisr.errors import GeometryError, MrisrError
from mrisr.geometry.grid import target_grid
from mrisr.geometry.resample import resample_to_grid
from mrisr.pipeline import checks
from mrisr.pipeline import upscale as pipeline
from mrisr.volume import Volume

RNG = np.random.default_rng(7)


def _affine() -> np.ndarray:
    c, s = np.cos(0.2), np.sin(0.2)
    a = np.eye(4)
    a[:3, :3] = np.array([[-c, -s, 0], [s, -c, 0], [0, 0, 1]]) @ np.diag([2.0, 2.0, 3.0])  # oblique, 2x2x3 mm
    a[:3, 3] = [90.0, 110.0, -60.0]
    return a


def _image(shape=(6, 5, 4), tr: float | None = None) -> nib.Nifti1Image:
    data = RNG.normal(100, 20, size=shape).astype(np.float32)
    img = nib.Nifti1Image(data, _affine())
    img.set_qform(_affine(), code=1)
    img.set_sform(_affine(), code=2)
    if tr is not None:
        img.header.set_zooms(img.header.get_zooms()[:3] + (tr,))
        img.header.set_xyzt_units("mm", "sec")
    return img


@pytest.fixture
def no_default_model(monkeypatch):
    import mrisr.inference.registry

    monkeypatch.setattr(mrisr.inference.registry, "default_model_name", lambda: None)


def test_upscale_path_gives_contract_affine_and_resampled_values(tmp_path, no_default_model):
    img = _image()
    path = tmp_path / "t2.nii.gz"
    nib.save(img, path)
    out = mrisr.upscale(path, spacing=[1, 1, 1])
    grid = target_grid(img.affine, img.shape, 1.0)
    assert isinstance(out, nib.Nifti1Image)
    assert out.shape == grid.shape == (12, 10, 12)
    np.testing.assert_allclose(out.affine, grid.affine, atol=1e-6)
    expected = resample_to_grid(np.asarray(img.dataobj, np.float32), grid, order=3)
    np.testing.assert_allclose(np.asarray(out.dataobj), expected, rtol=1e-6, atol=1e-4)
    assert out.get_data_dtype() == np.float32
    report = out.extra["mrisr_report"]
    assert report.method == "spline" and report.input == str(path)
    assert report.output_shape == [12, 10, 12] and report.output_spacing == [1.0, 1.0, 1.0]


def test_header_keeps_qform_and_sform_codes(tmp_path):
    out = mrisr.upscale(_image(), factor=2, method="spline")
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    np.testing.assert_allclose(out.header.get_sform(), out.affine, atol=1e-6)
    np.testing.assert_allclose(out.header.get_zooms()[:3], (1.0, 1.0, 1.5), rtol=1e-6)


def test_nibabel_image_volume_and_path_agree(tmp_path):
    img = _image()
    path = tmp_path / "x.nii"
    nib.save(img, path)
    vol = Volume(np.asarray(img.dataobj, np.float32), img.affine)
    outs = [mrisr.upscale(x, spacing=(1.5, 1, 2), method="spline", order=1) for x in (path, img, vol)]
    for o in outs[1:]:
        np.testing.assert_allclose(o.affine, outs[0].affine, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(o.dataobj), np.asarray(outs[0].dataobj))


def test_factor_equals_spacing():
    img = _image()
    a = mrisr.upscale(img, factor=[2, 2, 3], method="spline")
    b = mrisr.upscale(img, spacing=1, method="spline")
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-12)
    np.testing.assert_allclose(np.asarray(a.dataobj), np.asarray(b.dataobj), rtol=1e-6)


def test_4d_keeps_time_axis_and_tr():
    img = _image((4, 4, 3, 5), tr=2.5)
    calls = []
    out = mrisr.upscale(img, factor=2, method="spline", progress=lambda done, total: calls.append((done, total)))
    assert out.shape == (8, 8, 6, 5)
    assert out.header.get_zooms()[3] == pytest.approx(2.5)
    grid = target_grid(img.affine, img.shape[:3], np.array([1.0, 1.0, 1.5]))
    expected = resample_to_grid(np.asarray(img.dataobj, np.float32)[..., 3], grid)
    np.testing.assert_allclose(np.asarray(out.dataobj)[..., 3], expected, atol=1e-4)
    assert calls[-1] == (5, 5) and all(a <= b for (a, _), (b, _) in zip(calls, calls[1:]))


def test_upscale_volume_returns_data_affine_report():
    vol = Volume(np.zeros((4, 4, 4, 2), np.float32), np.eye(4), warnings=["reader said so"])
    data, affine, report = pipeline.upscale_volume(vol, factor=2, method="spline", order=1)
    assert data.shape == (8, 8, 8, 2) and data.dtype == np.float32
    np.testing.assert_allclose(affine, target_grid(np.eye(4), (4, 4, 4), 0.5).affine)
    d = report.to_dict()
    assert d["n_volumes"] == 2 and d["order"] == 1 and d["model"] is None
    assert set(d["timings"]) == {"read", "interpolate", "network", "write"}
    assert d["warnings"] == ["reader said so"]
    assert d["output_affine"] == affine.tolist()


@pytest.mark.parametrize("kwargs,words", [
    ({}, "exactly one of spacing"),
    ({"spacing": 1, "factor": 2}, "not both"),
    ({"spacing": 0}, "finite and > 0"),
    ({"spacing": [1, float("nan"), 1]}, "finite and > 0"),
    ({"factor": -2}, "factor"),
    ({"spacing": [1, 1]}, "1 or 3 values"),
    ({"spacing": 1, "order": 7}, "order"),
    ({"spacing": 1, "method": "bicubic"}, "valid: cnn, spline"),
])
def test_bad_settings_are_refused_before_reading(kwargs, words, tmp_path):
    missing = tmp_path / "does-not-exist.nii.gz"  # never read: settings fail first
    with pytest.raises(MrisrError, match=words):
        mrisr.upscale(missing, **kwargs)


def test_absurd_output_size_is_refused():
    with pytest.raises(GeometryError, match="voxels"):
        mrisr.upscale(_image(), spacing=0.001, method="spline", max_voxels=10**6)


def test_method_resolution(no_default_model):
    assert checks.resolve_method(None) == ("spline", None)
    assert checks.resolve_method(None, "some-model") == ("cnn", "some-model")
    with pytest.raises(MrisrError, match="no default model"):
        checks.resolve_method("cnn")
    with pytest.raises(MrisrError, match="method is 'spline'"):
        checks.resolve_method("spline", "some-model")


def test_nan_input_refused_unless_nan_to_num():
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    img = nib.Nifti1Image(data, np.eye(4))
    with pytest.raises(MrisrError, match="NaN"):
        mrisr.upscale(img, factor=2, method="spline")
    out = mrisr.upscale(img, factor=2, method="spline", nan_to_num=True)
    assert np.isfinite(np.asarray(out.dataobj)).all()


def test_cnn_path_with_a_tiny_model():
    torch = pytest.importorskip("torch")
    from mrisr.archs.recnn import ReCNN
    from mrisr.inference.engine import enhance
    from mrisr.inference.model_card import LoadedModel, example_card

    torch.manual_seed(0)
    model = LoadedModel("tiny", example_card(name="tiny"), ReCNN(3, 4).eval(), "ab" * 32, None)
    vol = Volume(RNG.normal(50, 10, (5, 5, 3)).astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    data, affine, report = pipeline.upscale_volume(vol, spacing=1, method="cnn", model=model, device="cpu",
                                                   precision="fp32", threads=1)
    grid = target_grid(vol.affine, vol.spatial_shape, 1.0)
    expected, _ = enhance(resample_to_grid(vol.data, grid), model, device="cpu", precision="fp32", threads=1)
    np.testing.assert_allclose(data, expected, atol=1e-5)
    assert report.method == "cnn" and report.model == "tiny" and report.model_sha256 == "ab" * 32
    assert report.device == "cpu" and report.precision == "fp32" and report.patches_run >= 1
    assert report.timings["network"] > 0
    assert any("factor" in w for w in report.warnings) is False  # factors 2 and 3 are inside [1, 3]


def test_conditioned_model_gets_the_factors_of_each_voxel_axis():
    torch = pytest.importorskip("torch")
    from mrisr.archs.recnn import ReCNN
    from mrisr.inference.engine import enhance
    from mrisr.inference.model_card import LoadedModel, example_card

    torch.manual_seed(0)
    net = ReCNN(3, 4, cond_dim=3)
    with torch.no_grad():
        net.cond.weight.uniform_(-1, 1)
    model = LoadedModel("cond", example_card(name="cond"), net.eval(), "ab" * 32, None)
    vol = Volume(RNG.normal(50, 10, (5, 6, 3)).astype(np.float32), _affine())  # oblique, 2 x 2 x 3 mm
    data, _, _ = pipeline.upscale_volume(vol, spacing=(1, 2, 1), method="cnn", model=model, device="cpu",
                                         precision="fp32", threads=1, consistency=False)
    grid = target_grid(vol.affine, vol.spatial_shape, (1, 2, 1))
    interp = resample_to_grid(vol.data, grid)
    expected, _ = enhance(interp, model, device="cpu", precision="fp32", threads=1, factors=(2, 1, 3))
    np.testing.assert_allclose(data, expected, atol=1e-5)
    wrong, _ = enhance(interp, model, device="cpu", precision="fp32", threads=1, factors=(1, 1, 1))
    assert np.abs(wrong - data).max() > 1e-3


def test_spline_does_not_import_torch(tmp_path):
    code = ("import sys, numpy as np, nibabel as nib, mrisr\n"
            "img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))\n"
            "mrisr.upscale(img, factor=2, method='spline')\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
