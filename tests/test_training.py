"""Training pipeline: config errors, loss decreases, resume is bit-for-bit, data split."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.errors import ConfigError
from mrisr.training.config import config_from_dict, load_config
from mrisr.training.data import Acquisition, PatchSampler, load_subjects, sample_acquisition, simulate, split_index
from mrisr.training.trainer import train


def _blobs(shape=(44, 44, 64), seed=0) -> np.ndarray:
    """A smooth head-like volume: a bright ellipsoid with darker blobs inside."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    vol = (np.sum(g**2, axis=0) < 0.8).astype(np.float32) * 100
    for _ in range(12):
        c = rng.uniform(-0.6, 0.6, 3)[:, None, None, None]
        vol -= 40 * (np.sum((g - c) ** 2, axis=0) < rng.uniform(0.005, 0.03))
    return np.clip(vol, 0, None)


@pytest.fixture()
def folder_config(tmp_path: Path) -> Path:
    data = tmp_path / "hr"
    data.mkdir()
    nib.save(nib.Nifti1Image(_blobs(), np.eye(4)), str(data / "a.nii.gz"))
    cfg = tmp_path / "train.toml"
    cfg.write_text(
        '[data]\nsource = "folder"\ndir = "hr"\n'
        '[model]\ndepth = 3\nwidth = 8\n'
        '[train]\npatch = 12\nbatch = 4\nsteps = 8\nlr = 3e-3\nwarmup = 1\nthreads = 1\n'
        'precision = "fp32"\nvalidate_every = 4\ncheckpoint_every = 4\nvalidation_cases = ["iso2-box"]\n'
        '[degradation]\nkinds = { iso = 1.0 }\niso_factor = [2.0, 2.5]\nnoise_probability = 0.0\n')
    return cfg


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.steps: expected an integer"):
        config_from_dict({"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"train\.stepz: unknown field"):
        config_from_dict({"train": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"train\.loss: 'l3' is not one of"):
        config_from_dict({"train": {"loss": "l3"}})
    with pytest.raises(ConfigError, match=r"data\.holdout_fraction"):
        config_from_dict({"data": {"holdout_fraction": 1.5}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps=1")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)


def test_training_never_touches_the_holdout(folder_config: Path) -> None:
    cfg = load_config(folder_config)
    subjects = load_subjects(cfg)
    sampler = PatchSampler(cfg, subjects)
    split = split_index(subjects[0].image.shape, cfg)
    rng = np.random.default_rng(0)
    for _ in range(50):
        margin = 10
        origin = sampler._crop_origin(subjects[0], 12 + 2 * margin, rng)
        assert origin[2] + 12 + 2 * margin <= split


def test_simulated_input_is_the_spline_of_the_acquisition() -> None:
    # Block-average by 2 of a linear ramp: the spline of the LR image at the HR
    # voxel centres reproduces the ramp away from the mirrored edges.
    hr = np.tile(np.arange(24, dtype=np.float32)[:, None, None], (1, 8, 8))
    inp = simulate(hr, Acquisition((2, 1, 1), "box"), np.random.default_rng(0))
    np.testing.assert_allclose(inp[10:-10, 2, 2], hr[10:-10, 2, 2], atol=5e-4)


def test_acquisitions_cover_the_configured_kinds() -> None:
    cfg = config_from_dict({})
    rng = np.random.default_rng(0)
    acqs = [sample_acquisition(cfg.degradation, rng) for _ in range(300)]
    assert {a.psf for a in acqs} == {"box", "gaussian", "kspace", "slice"}
    thick = [a for a in acqs if sorted(a.factors)[:2] == [1.0, 1.0] and max(a.factors) > 1]
    assert thick and all(2.0 <= max(a.factors) <= 6.0 for a in thick)
    assert all(min(a.factors) >= 1.0 for a in acqs)


def test_loss_decreases_and_resume_is_bit_for_bit(folder_config: Path, tmp_path: Path) -> None:
    cfg = load_config(folder_config)
    losses: list[float] = []
    train(cfg, tmp_path / "full", config_path=folder_config, on_step=lambda s, loss, g: losses.append(loss))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    train(cfg, tmp_path / "split", config_path=folder_config, stop_after=5)
    train(cfg, tmp_path / "split", resume=True)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "best.pt").is_file()
    assert (tmp_path / "full" / "config.toml").read_text() == folder_config.read_text()


def test_resume_refuses_a_changed_config(folder_config: Path, tmp_path: Path) -> None:
    cfg = load_config(folder_config)
    train(cfg, tmp_path / "run", config_path=folder_config, stop_after=1)
    changed = config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "lr": 0.1}},
                               base_dir=cfg.base_dir)
    with pytest.raises(ConfigError, match="different configuration"):
        train(changed, tmp_path / "run", resume=True)


def test_export_writes_a_loadable_model_with_its_validation(folder_config: Path, tmp_path: Path) -> None:
    from mrisr.inference.registry import load_model
    from mrisr.training.export import export_model

    cfg = load_config(folder_config)
    best = train(cfg, tmp_path / "run", config_path=folder_config)
    card = export_model(cfg, best, tmp_path / "tiny-model", config_path=folder_config, description="test",
                        log=lambda line: None)
    loaded = load_model(tmp_path / "tiny-model")
    assert loaded.sha256 == card.sha256 and loaded.network.cond_dim == 3
    rows = card.validation["rows"]
    assert {r["case"] for r in rows} >= {"iso2-box", "thick4-slice", "kspace2x2-kspace"}
    assert all(np.isfinite(r["psnr_spline"]) and np.isfinite(r["psnr_model"]) for r in rows)
    assert card.validation["psnr_gain_min"] == min(r["psnr_gain"] for r in rows)
    assert (tmp_path / "tiny-model" / "validation.md").read_text().count("| t1 |") == len(rows)


def test_train_command_reports_config_errors_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mrisr.cli.app import app

    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 1\n")
    result = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 2
    assert "train.stepz: unknown field" in result.output


def test_input_blur_is_off_by_default_and_drawn_at_its_rate() -> None:
    off = config_from_dict({}).degradation
    on = config_from_dict({"degradation": {"input_blur_probability": 0.5, "input_blur": [0.1, 0.4]}}).degradation
    rng = np.random.default_rng(3)
    assert all(sample_acquisition(off, rng).blur == 0.0 for _ in range(100))
    rng = np.random.default_rng(0)
    blurs = np.array([sample_acquisition(on, rng).blur for _ in range(400)])
    assert 0.4 < np.mean(blurs > 0) < 0.6
    assert blurs[blurs > 0].min() >= 0.1 and blurs.max() <= 0.4
    with pytest.raises(ConfigError, match=r"degradation\.input_blur_probability"):
        config_from_dict({"degradation": {"input_blur_probability": 1.5}})
    with pytest.raises(ConfigError, match=r"degradation\.input_blur: sigmas must be >= 0"):
        config_from_dict({"degradation": {"input_blur": [-0.5, 0.1]}})


def test_input_blur_smooths_the_lr_image_before_interpolation() -> None:
    # A step edge: the blurred acquisition's spline is the spline of the 3-tap-blurred LR image.
    from mrisr.acquisition.degrade import degrade, three_tap_blur

    hr = np.zeros((24, 8, 8), np.float32)
    hr[12:] = 100
    sharp = simulate(hr, Acquisition((2, 1, 1), "box"), np.random.default_rng(0))
    soft = simulate(hr, Acquisition((2, 1, 1), "box", blur=0.5), np.random.default_rng(0))
    lr, _ = degrade(hr, np.eye(4), (2, 1, 1), psf="box")
    w = np.exp(-1 / (2 * 0.25))
    k = np.array([w, 1, w]) / (1 + 2 * w)
    expected = np.convolve(np.pad(lr[:, 0, 0], 1, mode="edge"), k, mode="valid")
    np.testing.assert_allclose(three_tap_blur(lr, 0.5)[:, 3, 3], expected, rtol=1e-5, atol=1e-4)
    assert np.abs(np.diff(soft[:, 3, 3])).max() < np.abs(np.diff(sharp[:, 3, 3])).max()


def test_weight_average_is_the_mean_of_the_weights_since_its_step_and_resumes(folder_config: Path,
                                                                               tmp_path: Path) -> None:
    base = load_config(folder_config)
    raw = base.to_dict()
    raw["train"].update({"average_from": 7, "checkpoint_every": 1})  # steps = 8: the mean of steps 7 and 8
    cfg = config_from_dict(raw, base_dir=base.base_dir)
    train(cfg, tmp_path / "full")
    train(cfg, tmp_path / "split", stop_after=7)
    w7 = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["model"]
    train(cfg, tmp_path / "split", resume=True)
    w8 = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["model"]
    avg = torch.load(tmp_path / "full" / "average.pt", weights_only=True)
    for k in w8:
        torch.testing.assert_close(avg[k], (w7[k].float() + w8[k].float()) / 2, rtol=1e-6, atol=1e-7)
    split = torch.load(tmp_path / "split" / "average.pt", weights_only=True)
    assert all(torch.equal(avg[k], split[k]) for k in avg)  # resumed: the same average, bit for bit
    assert not any(torch.equal(avg[k], w8[k]) for k in avg if avg[k].numel() > 1)
    with pytest.raises(ConfigError, match=r"train\.average_from: must be in \[0, train\.steps = 8\]"):
        config_from_dict({**raw, "train": {**raw["train"], "average_from": 9}})
    with pytest.raises(ConfigError, match=r"train\.average_from: weight averaging is for supervised"):
        config_from_dict({"model": {"arch": "mdcsrn-gan"}, "train": {"average_from": 1}})
