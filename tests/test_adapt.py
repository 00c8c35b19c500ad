"""Per-scan adaptation (mrisr.inference.adapt, ``mrisr upscale --adapt``)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

import mrisr
from helpers import tiny_recnn_model
from mrisr.archs.recnn import ReCNN
from mrisr.errors import MrisrError
from mrisr.inference.adapt import AdaptOptions, adapt_model, check_adaptable, internal_factors
from mrisr.inference.model_card import LoadedModel, example_card


def _volume(shape=(40, 40, 10), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x * x + y * y + 0.3 * z * z)
    img = (r < 0.9) * (100 + 30 * np.sin(9 * x) * np.cos(7 * y)) + rng.normal(0, 1, shape) * (r < 0.9)
    return img.astype(np.float32)


def _model() -> LoadedModel:
    return tiny_recnn_model(bias=0.1)


def test_internal_pairs_thicken_the_fine_axes_or_degrade_again():
    assert internal_factors((1, 1, 3)) == [((3.0, 1.0, 1.0), "slice"), ((1.0, 3.0, 1.0), "slice")]
    assert internal_factors((2, 2, 1)) == [((1.0, 1.0, 2.0), "slice")]
    assert internal_factors((2, 2.5, 2)) == [((2.0, 2.5, 2.0), "gaussian")]
    with pytest.raises(MrisrError, match="finer than the input"):
        internal_factors((1, 1, 1))


def test_options_are_validated():
    with pytest.raises(MrisrError, match="positive finite"):
        AdaptOptions(seconds=float("nan"))
    with pytest.raises(MrisrError, match="patch"):
        AdaptOptions(patch=4)


def test_adaptation_trains_a_copy_and_reports_it():
    model = _model()
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    adapted, report = adapt_model(model, _volume(), (1.0, 1.0, 3.0),
                                  AdaptOptions(seconds=3.0, patch=10, batch=2, lr=1e-3), threads=1)
    for k, v in model.network.state_dict().items():  # the loaded model is untouched
        assert torch.equal(v, before[k])
    assert report.steps > 0 and report.pairs == ["3x1x1 slice of the input", "1x3x1 slice of the input"]
    assert report.heldout_loss_before > 0 and np.isfinite(report.heldout_loss_after)
    if report.kept == "adapted":
        assert adapted is not model and report.heldout_loss_after < report.heldout_loss_before
        changed = any(not torch.equal(v, before[k]) for k, v in adapted.network.state_dict().items())
        assert changed
    else:
        assert adapted is model and "kept" in report.reason


def test_guard_keeps_the_pretrained_weights_when_the_held_out_loss_does_not_improve():
    model = _model()
    # a learning rate so large that the held-out internal loss explodes
    adapted, report = adapt_model(model, _volume(), (1.0, 1.0, 3.0),
                                  AdaptOptions(seconds=2.0, patch=10, batch=2, lr=10.0), threads=1)
    assert report.kept == "pretrained" and adapted is model
    assert "pretrained weights kept" in report.reason


def test_refusals_name_the_reason():
    with pytest.raises(MrisrError, match="reference"):
        check_adaptable(_model(), guided=True)
    net = ReCNN(3, 4)  # no factor conditioning
    plain = LoadedModel("plain", example_card(name="plain"), net.eval(), "0" * 64, None)
    with pytest.raises(MrisrError, match="conditioned"):
        check_adaptable(plain, guided=False)
    img = nib.Nifti1Image(_volume(), np.diag([1.0, 1.0, 3.0, 1.0]))
    with pytest.raises(MrisrError, match="--method cnn"):
        mrisr.upscale(img, spacing=1, method="spline", adapt=5)


def test_upscale_with_adapt_records_it_and_keeps_the_grid():
    img = nib.Nifti1Image(_volume(), np.diag([1.0, 1.0, 3.0, 1.0]))
    plain = mrisr.upscale(img, spacing=1, model=_model(), precision="fp32")
    ticks = []
    out = mrisr.upscale(img, spacing=1, model=_model(), precision="fp32", progress=lambda d, n: ticks.append(d),
                        adapt=AdaptOptions(seconds=2.0, patch=10, batch=2))
    report = out.extra["mrisr_report"]
    assert out.shape == plain.shape and np.allclose(out.affine, plain.affine)
    assert report.adapt["steps"] > 0 and report.adapt["kept"] in ("adapted", "pretrained")
    assert json.loads(json.dumps(report.to_dict()))["adapt"]["seconds_budget"] == 2.0
    assert ticks == sorted(ticks) and ticks[-1] == pytest.approx(1.0)


def test_cli_adapt_writes_its_record_and_a_changed_budget_is_a_changed_setting(tmp_path):
    from typer.testing import CliRunner

    from mrisr.cli.app import app
    from mrisr.inference.model_card import save_model

    model = _model()
    folder = tmp_path / "tiny-model"
    save_model(model.network, folder, name="tiny-model", normalisation={"method": "foreground_median"},
               training={"data": "none", "input_spacing_mm": [1, 4], "factor": [1, 4]})
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(_volume(), np.diag([1.0, 1.0, 3.0, 1.0])), src)
    args = ["upscale", str(src), "--spacing", "1", "--model", str(folder), "--precision", "fp32", "-q", "--adapt"]
    res = CliRunner().invoke(app, [*args, "--adapt-seconds", "2"])
    assert res.exit_code == 0, res.output
    sidecar = json.loads((tmp_path / "in_sr.json").read_text())
    assert sidecar["adapt"]["seconds_budget"] == 2.0 and sidecar["settings"]["adapt"] == 2.0
    again = CliRunner().invoke(app, [*args, "--adapt-seconds", "3"])
    assert again.exit_code == 1 and "adapt" in again.output  # refused: made with other settings
    spline = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "1", "--method", "spline", "--adapt",
                                      "-o", str(tmp_path / "s.nii.gz")])
    assert spline.exit_code == 2 and "--method cnn" in spline.output


def test_isotropic_inputs_keep_the_pretrained_weights_and_say_why():
    model = _model()
    adapted, report = adapt_model(model, _volume((24, 24, 24)), (2.0, 2.0, 2.0), AdaptOptions(seconds=1.0))
    assert adapted is model and report.kept == "pretrained" and report.steps == 0
    assert "isotropic" in report.reason


def test_inputs_with_two_coarse_axes_keep_the_pretrained_weights_and_say_why():
    model = _model()
    adapted, report = adapt_model(model, _volume((20, 20, 24)), (2.0, 2.0, 1.0), AdaptOptions(seconds=1.0))
    assert adapted is model and report.kept == "pretrained" and report.steps == 0
    assert report.reason.startswith("2 coarse axes (as 2x2x1 k-space)")
