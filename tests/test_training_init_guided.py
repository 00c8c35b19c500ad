"""Fine-tuning (``--init``) and guided (two-channel) training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mrisr.errors import ConfigError
from mrisr.inference.model_card import LoadedModel, example_card
from mrisr.inference.registry import load_model
from mrisr.training.config import config_from_dict, load_config
from mrisr.training.data import PatchSampler, Subject, head_mask, load_subjects, validation_cases
from mrisr.training.export import export_model
from mrisr.training.losses import loss_fn, resolve_loss
from mrisr.training.runs import factor_condition, init_from, same_config, validate
from mrisr.training.trainer import build_network, train
from test_training import _blobs, folder_config  # noqa: F401  (fixture)


def _first_batch_loss(cfg, net: torch.nn.Module) -> float:
    x, y, f = PatchSampler(cfg, load_subjects(cfg)).batch(0)
    with torch.no_grad():
        res = net(torch.from_numpy(x), factor_condition(net, f))
    return float(loss_fn(*resolve_loss(cfg))(torch.from_numpy(x)[:, :1] + res, torch.from_numpy(y)))


def test_fine_tuning_starts_at_the_models_loss(folder_config: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = load_config(folder_config)
    best = train(cfg, tmp_path / "base", config_path=folder_config)
    export_model(cfg, best, tmp_path / "base-model", config_path=folder_config, description="test",
                 log=lambda line: None)
    model = load_model(tmp_path / "base-model")
    expected = _first_batch_loss(cfg, model.network)
    scratch = _first_batch_loss(cfg, build_network(cfg))

    first: list[float] = []
    train(cfg, tmp_path / "tuned", config_path=folder_config, stop_after=1, init=model,
          on_step=lambda s, loss, g: first.append(loss))
    assert first[0] == pytest.approx(expected, rel=1e-5)
    assert abs(first[0] - scratch) > 1e-3  # not a fresh network
    assert '"model": "base-model"' in (tmp_path / "tuned" / "init.json").read_text()


def test_fine_tuning_refuses_a_different_architecture(folder_config: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = load_config(folder_config)
    from mrisr.archs.recnn import ReCNN

    other = LoadedModel("wide", example_card(name="wide"), ReCNN(3, 16, cond_dim=3), "0" * 64, tmp_path)
    with pytest.raises(ConfigError, match=r"width 8 vs 16"):
        train(cfg, tmp_path / "run", stop_after=1, init=other)


def test_checkpoints_of_older_configs_still_resume() -> None:
    cfg = config_from_dict({"train": {"steps": 10}})
    saved = cfg.to_dict()
    del saved["data"]["reference"]  # a field added after the checkpoint was written
    assert same_config(saved, cfg)
    saved["train"]["steps"] = 11
    assert not same_config(saved, cfg)


def _guided_setup():
    t1 = _blobs((40, 40, 56)) / 100.0
    gm = np.clip(1.0 - np.abs(t1 - 0.6) * 3, 0, 1).astype(np.float32)
    wm = (t1 > 0.9).astype(np.float32)
    subj = Subject(t1.astype(np.float32), gm, wm, head_mask(t1), "blobs")
    cfg = config_from_dict({"data": {"reference": "t1", "contrasts": {"t2": 1.0}, "holdout_axis": 2},
                            "model": {"depth": 3, "width": 8},
                            "train": {"patch": 12, "batch": 3, "validation_cases": ["iso2-box"]},
                            "degradation": {"kinds": {"iso": 1.0}, "iso_factor": [2.0, 2.0],
                                            "noise_probability": 0.0, "bias_probability": 0.0,
                                            "reference_shift": 0.0, "reference_blur": [0.0, 0.0],
                                            "reference_noise": [0.0, 0.0], "gamma": [1.0, 1.0],
                                            "scale": [1.0, 1.0]}})
    return cfg, [subj]


def test_guided_batches_carry_the_t1_reference_as_channel_two() -> None:
    cfg, subjects = _guided_setup()
    sampler = PatchSampler(cfg, subjects)
    x, y, f = sampler.batch(0)
    assert x.shape == (3, 2, 12, 12, 12) and y.shape == (3, 1, 12, 12, 12)
    np.testing.assert_array_equal(x, sampler.batch(0)[0])  # deterministic per step
    t1_values = set(np.round(subjects[0].image.ravel(), 5))
    # with no reference corruption, channel 2 holds exact T1 voxels, the target is another contrast
    assert set(np.round(x[:, 1].ravel(), 5)) <= t1_values
    assert not set(np.round(y.ravel(), 5)) <= t1_values
    net = build_network(cfg)
    assert net.in_channels == 2


def test_guided_validation_uses_the_reference() -> None:
    cfg, subjects = _guided_setup()
    cases = validation_cases(cfg, subjects, ["iso2-box"])
    assert [c.contrast for c in cases] == ["t2"]  # the named contrasts trained on
    assert all(c.reference is not None and c.reference.shape == c.inp.shape for c in cases)
    net = build_network(cfg)
    with torch.no_grad():
        net.body[-1].weight.normal_(0, 0.1)
    table = validate(net, cases, "fp32")
    for c in cases:
        c.reference = np.zeros_like(c.reference)
    zeroed = validate(net, cases, "fp32")
    assert table.keys() == zeroed.keys()
    assert any(abs(table[k]["net"] - zeroed[k]["net"]) > 1e-3 for k in table)


def test_guided_training_needs_tissue_maps() -> None:
    with pytest.raises(ConfigError, match="data.reference"):
        config_from_dict({"data": {"reference": "t1", "source": "folder"}})
    with pytest.raises(ConfigError, match="data.reference: 't2' is not one of"):
        config_from_dict({"data": {"reference": "t2"}})


def test_guided_network_starts_as_the_single_input_model(tmp_path: Path) -> None:
    from mrisr.archs.recnn import ReCNN

    single = ReCNN(3, 8, cond_dim=3)
    with torch.no_grad():
        for p in single.parameters():
            p.normal_(0, 0.1)
    model = LoadedModel("single", example_card(name="single"), single, "0" * 64, tmp_path)
    guided = ReCNN(3, 8, in_channels=2, cond_dim=3)
    init_from(guided, model)
    x = torch.rand(1, 1, 9, 9, 9)
    ref = torch.rand(1, 1, 9, 9, 9)
    cond = single.encode_factors([2, 2, 2])
    with torch.no_grad():
        np.testing.assert_allclose(guided(torch.cat([x, ref], 1), cond).numpy(), single(x, cond).numpy(), atol=1e-6)
