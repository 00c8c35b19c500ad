"""UpscaleOptions: one frozen settings object, checked once when built, the same from the CLI and from Python;
the output fingerprint of the sidecars unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import mrisr
from mrisr.cli import upscale_cmd
from mrisr.cli.app import app
from mrisr.errors import MrisrError
from mrisr.pipeline import upscale as pipeline
from mrisr.pipeline.settings import BatchSettings, UpscaleOptions, output_settings, settings_fingerprint


def test_options_are_frozen_and_resolved():
    opts = UpscaleOptions(spacing=[1, 1, 2], method="spline", uncertainty=False)
    assert opts.spacing == (1.0, 1.0, 2.0) and opts.method == "spline" and opts.model is None
    assert opts.consistency is False and opts.register == "none" and opts.ensemble is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.order = 1  # type: ignore[misc]
    settings = BatchSettings(opts, dtype="input")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.force = True  # type: ignore[misc]
    assert settings.options is opts and BatchSettings(spacing=[1, 1, 2], method="spline").options == opts
    assert settings.with_options(order=1).options.order == 1 and settings.options.order == 3
    assert settings.method == "spline" and settings.spacing == (1.0, 1.0, 2.0)  # read through, as before


@pytest.mark.parametrize("kw, message", [
    ({}, "give exactly one of spacing (target voxel size in mm) or factor (e.g. 2), not neither"),
    ({"spacing": 1, "factor": 2}, "not both"),
    ({"spacing": 0}, "spacing values must be finite and > 0"),
    ({"spacing": 1, "order": 7}, "interpolation order must be an integer from 0 to 5, got 7"),
    ({"spacing": 1, "method": "splin"}, "splin"),
    ({"spacing": 1, "method": "spline", "model": "recnn-d8w32"}, "a model was given (recnn-d8w32) but the method"),
    ({"spacing": 1, "method": "spline", "uncertainty": True}, "uncertainty needs the network (method 'cnn')"),
    ({"spacing": 1, "method": "spline", "consistency_psf": "lanczos"}, "lanczos"),
    ({"spacing": 1, "method": "spline", "register": "rigid"}, "register 'rigid' aligns a reference image"),
    ({"spacing": 1, "method": "spline", "adapt": 30}, "--adapt fine-tunes the network: it needs --method cnn"),
])
def test_bad_settings_fail_when_built(kw, message):
    with pytest.raises(MrisrError) as exc:
        UpscaleOptions(**kw)
    assert message in str(exc.value)
    with pytest.raises(MrisrError) as again:  # the batch's settings and replace() check the same way
        BatchSettings(**kw)
    assert str(again.value) == str(exc.value)


def test_changed_options_are_checked_again():
    opts = UpscaleOptions(spacing=1, method="spline")
    with pytest.raises(MrisrError, match="give exactly one"):
        dataclasses.replace(opts, factor=2)
    with pytest.raises(MrisrError, match="interpolation order"):
        BatchSettings(opts, order=-1)
    with pytest.raises(MrisrError, match="dtype must be 'float32' or 'input', got 'int8'"):
        BatchSettings(opts, dtype="int8")


def _image(path: Path) -> Path:
    data = np.random.default_rng(0).normal(100, 20, size=(6, 5, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), path)
    return path


class _Stop(Exception):
    pass


@pytest.mark.parametrize("args, kw", [
    (["--spacing", "1 1 2", "--method", "spline", "--order", "1", "--no-antialias", "--consistency",
      "--consistency-psf", "gaussian"],
     dict(spacing=(1.0, 1.0, 2.0), method="spline", order=1, antialias=False, consistency=True,
          consistency_psf="gaussian")),
    (["--factor", "2", "--model", "rrlsrn-2x2x2", "--uncertainty", "--device", "cpu", "--threads", "2"],
     dict(factor=2, model="rrlsrn-2x2x2", uncertainty=True, device="cpu", threads=2)),
])
def test_cli_and_python_build_equal_options(tmp_path, monkeypatch, args, kw):
    src = _image(tmp_path / "a.nii.gz")
    seen: dict[str, object] = {}

    def fake_run_batch(jobs, settings, *a, **k):
        seen["cli"] = settings.options
        return 0

    monkeypatch.setattr(upscale_cmd, "run_batch", fake_run_batch)
    result = CliRunner().invoke(app, ["upscale", str(src), *args, "-o", str(tmp_path / "out.nii.gz")])
    assert result.exit_code == 0, result.output

    def fake_upscale_volume(volume, options, **k):
        seen["python"] = options
        raise _Stop

    monkeypatch.setattr(pipeline, "upscale_volume", fake_upscale_volume)
    with pytest.raises(_Stop):
        mrisr.upscale(src, **kw)
    assert seen["cli"] == seen["python"] == UpscaleOptions(**kw)


#: Fingerprints (``settings_sha256`` of the sidecars) computed by the code before UpscaleOptions: caches of
#: outputs made then must stay current.
KNOWN = {
    "293473ce42205c174ccf32e202ce951dce532d923b2447e5f145ce267231a305": dict(
        spacing=(1.0, 1.0, 2.0), method="spline", order=1, antialias=False, consistency=True,
        consistency_psf="gaussian", dtype="input", series="1.2.3", nan_to_num=True),
    "59603c57e3e5b576dc4e63d478c1e38e5d217795874d321e67f13d7afa513d86": dict(
        factor=(2.0,), method="cnn", model="rrlsrn-2x2x2", uncertainty=True, threads=2, device="cpu"),
    # made without --method, when a reference meant the shipped guided model: now it means method "transfer"
    # (another output, so another fingerprint), and the same output is asked for with method "cnn"
    "f61e05f87a0b66d20060234fb1591a1c4dbb62a551b9606f2594e0c09aa80f13": dict(
        spacing=(1.0,), reference="/data/ref_t1.nii.gz", register="rigid", method="cnn"),
}


@pytest.mark.parametrize("expected", list(KNOWN))
def test_fingerprint_unchanged(expected):
    assert settings_fingerprint(output_settings(BatchSettings(**KNOWN[expected]))) == expected


def test_fingerprint_of_the_cli_unchanged(tmp_path):
    import json

    src = _image(tmp_path / "a.nii.gz")
    result = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "1 1 2", "--method", "spline", "--order",
                                      "1", "--no-antialias", "--consistency", "--consistency-psf", "gaussian",
                                      "--json", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["settings_sha256"] == "d7c73416275cf262d3255f30bb3e47c817925a4baf81d924fe49279d2c0b7690"
