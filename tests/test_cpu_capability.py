"""Native bf16 is decided honestly (processor *and* oneDNN's instruction-set cap), auto precision follows it,
and a forced bf16 without it runs with a warning that names fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrisr.archs.georgescu import Georgescu
from mrisr.archs.recnn import ReCNN
from mrisr.inference import device as dev
from mrisr.inference.engine import enhance
from mrisr.inference.model_card import LoadedModel, example_card
from mrisr.inference.upsampling import upsample

CPU = torch.device("cpu")


def _isa(monkeypatch, onednn=None, dnnl=None):
    for name, value in (("ONEDNN_MAX_CPU_ISA", onednn), ("DNNL_MAX_CPU_ISA", dnnl)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.mark.parametrize("onednn,dnnl,allowed", [
    (None, None, True), ("AVX2", None, False), ("avx2", None, False), (None, "AVX2", False),
    ("AVX512_CORE", None, False), ("AVX512_CORE_VNNI", None, False), ("AVX2_VNNI_2", None, False),
    ("AVX512_CORE_BF16", None, True), ("AVX512_CORE_AMX", None, True), ("AVX10_1_512_AMX_FP16", None, True),
    ("ALL", None, True), ("DEFAULT", "AVX2", True),  # oneDNN reads ONEDNN_ first
])
def test_onednn_isa_cap(monkeypatch, onednn, dnnl, allowed):
    _isa(monkeypatch, onednn, dnnl)
    assert dev.onednn_allows_bf16() is allowed


def test_an_isa_cap_below_bf16_turns_native_bf16_off(monkeypatch):
    _isa(monkeypatch, "AVX2")
    assert dev.cpu_supports_bf16() is False
    assert dev.resolve_precision("auto", CPU) == "fp32"
    assert "fp32" in dev.cpu_bf16_warning(CPU, "bf16")
    assert "precision fp32" in dev.describe_devices()


def test_without_a_cap_the_probes_decide(monkeypatch):
    _isa(monkeypatch)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert dev.cpu_supports_bf16() is torch.backends.mkldnn.is_available()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert dev.cpu_supports_bf16() is False


@pytest.mark.parametrize("native,device,precision,warns", [
    (False, "cpu", "bf16", True), (True, "cpu", "bf16", False), (False, "cpu", "fp32", False),
    (False, "cuda", "bf16", False),
])
def test_bf16_warning_only_where_emulated(monkeypatch, native, device, precision, warns):
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: native)
    assert bool(dev.cpu_bf16_warning(torch.device(device), precision)) is warns


def _model(net):
    card = example_card(receptive_radius=net.receptive_radius, architecture={"name": "recnn", "params": {}})
    return LoadedModel("test", card, net.eval(), "0" * 64, None)


def _volume(shape):
    return np.random.default_rng(0).uniform(0.2, 1.0, shape).astype(np.float32) * 300


def test_forced_bf16_without_native_bf16_warns_once_through_the_stats(monkeypatch):
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: False)
    torch.manual_seed(0)
    x = _volume((8, 7, 6))
    _, stats = enhance(x, _model(ReCNN(3, 4)), device="cpu", precision="bf16")
    notes = [w for w in stats.warnings if "no native bf16" in w]
    assert len(notes) == 1 and "--precision fp32" in notes[0] and "\n" not in notes[0]
    _, auto = enhance(x, _model(ReCNN(3, 4)), device="cpu", precision="auto")
    assert auto.precision == "fp32" and not any("bf16" in w for w in auto.warnings)


def test_learned_upsampling_warns_too(monkeypatch):
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: False)
    net = Georgescu(scale=(1, 1, 2), width=4)
    model = LoadedModel("g", example_card(receptive_radius=net.receptive_radius), net.eval(), "0" * 64, None)
    _, stats = upsample(_volume((6, 6, 4)), model, device="cpu", precision="bf16")
    assert any("--precision fp32" in w for w in stats.warnings)


def test_the_warning_reaches_the_upscale_report(monkeypatch):
    from mrisr.pipeline import upscale as pipeline
    from mrisr.volume import Volume

    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: False)
    torch.manual_seed(0)
    model = LoadedModel("tiny", example_card(name="tiny"), ReCNN(3, 4).eval(), "ab" * 32, None)
    vol = Volume(_volume((5, 5, 3)), np.diag([2.0, 2.0, 3.0, 1.0]))
    _, _, report = pipeline.upscale_volume(vol, spacing=1, method="cnn", model=model, device="cpu",
                                           precision="bf16", threads=1)
    assert report.precision == "bf16"
    assert sum("no native bf16" in w and "--precision fp32" in w for w in report.warnings) == 1
