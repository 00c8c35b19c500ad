"""Loading a model in the background (registry.PendingModel) while the input is read and interpolated,
and counting its parameters without torch._dynamo."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrisr.archs.recnn import ReCNN
from mrisr.cli.app import app
from mrisr.errors import ModelError
from mrisr.inference import registry
from mrisr.inference.model_card import architecture_class, network_parameters, save_model
from mrisr.pipeline.upscale import upscale_volume
from mrisr.training.trainables import TRAINABLES
from mrisr.volume import Volume

TRAINING = {"factor": [1.0, 4.0], "input_spacing_mm": [1.0, 4.0], "output_spacing_mm": [1.0, 1.0]}


def _folder(tmp_path: Path, **params) -> Path:
    torch.manual_seed(0)
    folder = tmp_path / "tiny"
    save_model(ReCNN(3, 4), folder, name="tiny", training=TRAINING)
    if params:
        card = json.loads((folder / "card.json").read_text())
        card["architecture"]["params"].update(params)
        (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_pending_model_loads_in_another_thread_what_load_model_loads(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    threads = []
    real = registry.instantiate
    monkeypatch.setattr(registry, "instantiate", lambda card: (threads.append(threading.current_thread()),
                                                               real(card))[1])
    pending = registry.PendingModel.loading(folder)
    assert pending.card.name == "tiny"
    loaded = pending.result()
    assert threads and threads[0] is not threading.main_thread() and not pending.failed
    want = registry.load_model(folder).network.state_dict()
    for key, value in loaded.network.state_dict().items():
        assert torch.equal(value, want[key])
    assert registry.PendingModel.loading(pending) is pending
    assert registry.PendingModel.loading(loaded).result() is loaded


def test_an_unknown_name_fails_at_once_and_a_broken_network_when_awaited(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        registry.PendingModel.loading("no-such-model")
    pending = registry.PendingModel.loading(_folder(tmp_path, width=200000))  # the card reads; the network cannot
    assert pending.failed
    with pytest.raises(ModelError, match="parameters"):
        pending.result()


@pytest.mark.parametrize("data_shape", [(6, 5, 4), (6, 5, 4, 2)])
def test_the_spline_computed_while_the_model_loads_gives_the_same_output(tmp_path, data_shape):
    folder = _folder(tmp_path)
    data = np.random.default_rng(3).normal(100, 10, data_shape).astype(np.float32)
    volume = Volume(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    early = upscale_volume(volume, factor=2, model=folder, consistency=False)  # a name: spline first
    loaded = upscale_volume(volume, factor=2, model=registry.load_model(folder), consistency=False)
    np.testing.assert_array_equal(early.data, loaded.data)
    assert early.report.timings["interpolate"] > 0


def test_a_model_that_cannot_load_stops_the_cli_with_one_error_and_no_output(tmp_path):
    folder = _folder(tmp_path, width=200000)
    for name in ("a.nii.gz", "b.nii.gz"):
        data = np.random.default_rng(1).normal(100, 10, (6, 5, 4)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / name))
    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz"),
                                      "--spacing", "0.5", "--model", str(folder)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("mrisr: error: ")]
    assert len(errors) == 1 and "parameters" in errors[0]
    assert not list(tmp_path.glob("*_sr*"))


@pytest.mark.parametrize("arch", sorted({t.architecture for t in TRAINABLES.values()}))
def test_parameter_count_on_the_meta_device_is_the_real_count(arch):
    cls = architecture_class(arch)
    params = {"scale": [1, 1, 2]} if TRAINABLES[arch].mode == "upsampling" else {}
    torch.manual_seed(0)
    assert network_parameters(cls, params) == sum(p.numel() for p in cls(**params).parameters())


def test_loading_a_model_never_imports_torch_dynamo():
    code = ("import sys; from mrisr.inference.registry import list_models, load_model\n"
            "for card in list_models(): load_model(card.name)\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
