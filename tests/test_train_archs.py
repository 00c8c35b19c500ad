"""Every paper's architecture trains with ``mrisr train`` ([model] arch/preset/params), exports and upscales."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import mrisr
from mrisr.errors import ConfigError
from mrisr.inference.registry import load_model
from mrisr.training.config import config_from_dict, load_config
from mrisr.training.data import PatchSampler, load_subjects, validation_cases
from mrisr.training.export import export_model
from mrisr.training.lr_pairs import scale_preserving_permutation
from mrisr.training.trainer import build_network, train
from test_training import _blobs, folder_config  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent

#: Tiny constructor overrides per arch (fast, still each architecture's design).
TINY = {"srcnn3d": {"widths": [8, 4], "kernels": [5, 1, 3]}, "mdcsrn": {"blocks": 2, "units": 2, "growth": 4},
        "gan-cpce": {"width": 4}, "gan-circle-generator": {"widths": [6, 4, 4], "recon": [4, 4]},
        "rrlsrn": {"depth": 3, "width": 8}, "georgescu": {"width": 8}}


def _config(folder_config: Path, arch: str, params: dict, **sections):  # noqa: F811
    """The tiny folder configuration of test_training with another [model] (and section overrides)."""
    base = load_config(folder_config)
    raw = base.to_dict()
    raw["model"] = {"arch": arch, "params": params}
    for name, values in sections.items():
        raw[name] = {**raw[name], **values}
    return config_from_dict(raw, base_dir=base.base_dir)


def test_the_shipped_default_builds_the_same_network() -> None:
    cfg = load_config(ROOT / "models" / "recnn-d8w32" / "train.toml")
    assert build_network(cfg).config() == {"depth": 8, "width": 32, "kernel": 3, "in_channels": 1, "cond_dim": 3}
    assert cfg.train.loss == "l1"


def test_presets_and_params_build_the_papers_networks() -> None:
    pham = build_network(config_from_dict({"model": {"preset": "pham-10l", "condition": False}}))
    assert (pham.depth, pham.width, sum(p.numel() for p in pham.parameters())) == (10, 64, 888_769)
    dense = build_network(config_from_dict({"model": {"arch": "mdcsrn", "preset": "b4u4", "condition": False}}))
    assert sum(p.numel() for p in dense.parameters()) == 227_809
    thick = build_network(config_from_dict({"model": {"arch": "rrlsrn", "preset": "song",
                                                      "params": {"scale": [1, 1, 4]}}, "train": {"patch": 32}}))
    assert thick.upsampling == (1, 1, 4) and thick.depth == 13
    assert build_network(config_from_dict({"model": {"arch": "gan-circle"}})).__class__.__name__ == "GANCircleGenerator"


@pytest.mark.parametrize("model, match", [
    ({"arch": "unet"}, r"model\.arch: 'unet' is not one of recnn, recnn-s2d, srcnn3d"),
    ({"arch": "mdcsrn", "preset": "b5u4"}, r"model\.preset: 'b5u4' is not a preset of 'mdcsrn'; valid: b4u4, b8u4"),
    ({"arch": "mdcsrn", "params": {"blokcs": 2}}, r"model\.params\.blokcs: not an argument of 'mdcsrn'.*blocks"),
    ({"arch": "mdcsrn", "depth": 4}, r"model\.depth: sizes arch 'recnn' only"),
    ({"preset": "pham-10l", "width": 16}, r"model\.width: preset 'pham-10l' sets the size.*model\.params\.width"),
    ({"arch": "rrlsrn", "params": {"scale": [2, 2]}}, r"model\.params: 'rrlsrn' cannot be built"),
    ({"arch": "rrlsrn", "params": {"in_channels": 2}}, r"model\.params\.in_channels: set by data\.reference"),
    ({"arch": "rrlsrn", "params": {"scale": [1, 1, 5]}},
     r"train\.patch: 32 is not a multiple of the network's scale 5"),
])
def test_model_errors_name_the_field_and_the_choices(model: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"model": model})


def test_mode_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"train\.loss: GAN mode 'mdcsrn-gan' uses its paper's losses"):
        config_from_dict({"model": {"arch": "mdcsrn-gan"}, "train": {"loss": "l1"}})
    with pytest.raises(ConfigError, match=r"data\.reference: guided training needs an interpolated-input network"):
        config_from_dict({"model": {"arch": "georgescu"}, "data": {"reference": "t1"}})
    with pytest.raises(ConfigError, match=r"train\.patch: GAN-CIRCLE's critics"):
        config_from_dict({"model": {"arch": "gan-circle"}, "train": {"patch": 16}})
    with pytest.raises(ConfigError, match=r"gan\.critic_warmup: expected an integer"):
        config_from_dict({"model": {"arch": "mdcsrn-gan"}, "gan": {"critic_warmup": "lots"}})


@pytest.mark.parametrize("arch", sorted(TINY))
def test_each_architecture_trains_and_its_loss_decreases(arch: str, folder_config: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = _config(folder_config, arch, TINY[arch], train={"steps": 10, "validate_every": 10})
    losses: list[float] = []
    train(cfg, tmp_path / "run", on_step=lambda step, loss, gain: losses.append(loss))
    assert len(losses) == 10 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert (tmp_path / "run" / "best.pt").is_file()


def test_learned_upsampling_pairs_are_the_acquisition_at_the_scale(folder_config: Path) -> None:  # noqa: F811
    cfg = _config(folder_config, "rrlsrn", {"scale": [1, 1, 2], "depth": 2, "width": 2},
                  degradation={"psfs": {"box": 1.0}, "bias_probability": 0.0})
    x, y, f = PatchSampler(cfg, load_subjects(cfg), scale=(1, 1, 2)).batch(0)
    assert x.shape == (4, 1, 12, 12, 6) and y.shape == (4, 1, 12, 12, 12) and f.tolist() == [[1, 1, 2]] * 4
    # box PSF, no noise: LR voxel i is the mean of HR voxels 2i, 2i+1 along the scaled axis (edge-aligned)
    np.testing.assert_allclose(x, 0.5 * (y[..., 0::2] + y[..., 1::2]), atol=1e-5)
    rng = np.random.default_rng(0)
    assert {scale_preserving_permutation((1, 1, 2), rng) for _ in range(30)} == {(0, 1, 2), (1, 0, 2)}
    cases = validation_cases(cfg, load_subjects(cfg), ["iso2-box", "thick4-box", "iso2-box-noise"], ("t1",),
                             scale=(1, 1, 2))
    assert [c.name for c in cases] == ["1x1x2-box", "1x1x2-box-noise"]
    assert all(c.lr.shape[2] * 2 == c.target.shape[2] == c.inp.shape[2] for c in cases)


def _small_image(shape=(20, 18, 8)) -> nib.Nifti1Image:
    vol = _blobs(shape, seed=3)
    return nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0]))


@pytest.mark.parametrize("arch, params", [("srcnn3d", TINY["srcnn3d"]),
                                          ("rrlsrn", {"scale": [1, 1, 2], "depth": 3, "width": 4})])
def test_exported_models_upscale_onto_the_contract_grid(arch: str, params: dict, folder_config: Path,  # noqa: F811
                                                        tmp_path: Path) -> None:
    cfg = _config(folder_config, arch, params, train={"steps": 2, "validate_every": 2})
    best = train(cfg, tmp_path / "run")
    card = export_model(cfg, best, tmp_path / f"tiny-{arch}", config_path=folder_config, description="test",
                        log=lambda line: None)
    assert card.architecture["name"] == arch and card.validation["rows"]
    model = load_model(tmp_path / f"tiny-{arch}")
    img = _small_image()
    out = mrisr.upscale(img, factor=[1, 1, 2], model=model, precision="fp32")
    spline = mrisr.upscale(img, factor=[1, 1, 2], method="spline")
    assert out.shape == spline.shape == (20, 18, 16)
    np.testing.assert_allclose(out.affine, spline.affine)
    assert np.isfinite(np.asarray(out.dataobj)).all()
    if arch == "rrlsrn":  # the command line takes the model folder too
        from typer.testing import CliRunner

        from mrisr.cli.app import app

        nib.save(img, tmp_path / "in.nii.gz")
        result = CliRunner().invoke(app, ["upscale", str(tmp_path / "in.nii.gz"), "--factor", "1", "1", "3",
                                          "--model", str(tmp_path / f"tiny-{arch}"), "-o", str(tmp_path / "o.nii.gz"),
                                          "--quiet"])
        assert result.exit_code == 0, result.output
        assert nib.load(tmp_path / "o.nii.gz").shape == (20, 18, 24)
        result = CliRunner().invoke(app, ["upscale", str(tmp_path / "in.nii.gz"), "--factor", "1.5", "1.5", "1.5",
                                          "--model", str(tmp_path / f"tiny-{arch}"), "-o", str(tmp_path / "p.nii.gz")])
        assert result.exit_code != 0 and "axis 2" in result.output and "1.5" in result.output
        assert not (tmp_path / "p.nii.gz").exists()


def _gan_config(folder_config: Path, **gan):  # noqa: F811
    return _config(folder_config, "mdcsrn-gan", TINY["mdcsrn"], gan={"critic_width": 2, "n_critic": 2, **gan},
                   train={"steps": 4, "validate_every": 2, "checkpoint_every": 2, "batch": 2})


def test_gan_mode_alternates_critic_and_generator_and_resumes_bit_for_bit(folder_config: Path,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    cfg = _gan_config(folder_config, critic_warmup=1, extra_critic_every=3, extra_critic_steps=2)
    train(cfg, tmp_path / "full")
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    # 4 generator updates; critic: 2 per generator update, 1 warm-up, 2 extra before update 3 (0-based)
    assert full["opt_g"]["state"][0]["step"].item() == 4
    assert full["opt_c"]["state"][0]["step"].item() == 4 * 2 + 1 + 2
    assert full["batches"] == 4 + 11
    train(cfg, tmp_path / "split", stop_after=2)
    train(cfg, tmp_path / "split", resume=True)
    split = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    for part in ("generator", "critic"):
        assert all(torch.equal(full[part][k], split[part][k]) for k in full[part])
    best = torch.load(tmp_path / "full" / "best.pt", weights_only=True)
    assert set(best) == set(build_network(cfg).state_dict())  # only the generator is kept for export


def test_gan_circle_trains_its_generator_pair(folder_config: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = _config(folder_config, "gan-circle", TINY["gan-circle-generator"],
                  gan={"critic_width": 2, "n_critic": 1}, train={"steps": 2, "patch": 18, "batch": 2,
                                                                 "validate_every": 2})
    losses: list[float] = []
    train(cfg, tmp_path / "run", on_step=lambda step, loss, gain: losses.append(loss))
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any(k.startswith("f.") for k in ckpt["generator"]) and set(ckpt["critic"]) >= {"hr.score.weight",
                                                                                           "lr.score.weight"}
    assert not any(k.startswith(("f.", "g.")) for k in torch.load(tmp_path / "run" / "best.pt", weights_only=True))


def test_gan_cpce_trains_its_generator_against_the_cpce_critic_from_a_trained_generator(
        folder_config: Path, tmp_path: Path) -> None:  # noqa: F811
    from mrisr.archs.critics import LyuCritic
    from mrisr.training.gan_trainer import build_critic, gan_schedule

    plain = _config(folder_config, "gan-cpce", TINY["gan-cpce"], train={"steps": 2, "validate_every": 2})
    train(plain, tmp_path / "g")
    kw = {"config_path": folder_config, "description": "tiny", "log": lambda line: None, "cases": ["iso2-box"]}
    export_model(plain, tmp_path / "g" / "best.pt", tmp_path / "g-model", **kw)
    cfg = _config(folder_config, "gan-cpce-wgan", TINY["gan-cpce"], gan={"critic_width": 2, "n_critic": 2},
                  train={"steps": 2, "validate_every": 2, "batch": 2})
    critic = build_critic(cfg)
    assert isinstance(critic, LyuCritic) and critic.kind == "cpce" and gan_schedule(cfg).adv_weight == 0.1
    start = load_model(tmp_path / "g-model")
    train(cfg, tmp_path / "run", init=start)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["opt_g"]["state"][0]["step"].item() == 2 and ckpt["opt_c"]["state"][0]["step"].item() == 4
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    init = start.network.state_dict()
    assert set(best) == set(init) and any(not torch.equal(best[k], init[k]) for k in best)  # started there, moved
    card = export_model(cfg, tmp_path / "run" / "best.pt", tmp_path / "wgan-model", **kw)
    assert card.architecture["name"] == "gan-cpce"


def test_validation_reports_the_flip_ensemble_of_a_learned_upsampling_network(folder_config: Path) -> None:  # noqa: F811
    from mrisr.evaluation.metrics import psnr, ssim
    from mrisr.inference.upsampling import upscale_learned_ensemble
    from mrisr.training.export import _as_loaded, markdown_table, validation_report
    from mrisr.training.lr_pairs import hr_grid_of_lr

    cfg = _config(folder_config, "georgescu", {"scale": [1, 1, 2], "width": 4})
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    rows = validation_report(net, cfg, ["iso2-box"], ("t1",), precision="fp32", log=lambda line: None,
                             ensemble=True)
    case = validation_cases(cfg, load_subjects(cfg), ["iso2-box"], ("t1",), scale=(1, 1, 2))[0]
    grid = hr_grid_of_lr(case.lr.shape, (1, 1, 2))
    median, _, _ = upscale_learned_ensemble(case.lr, grid, _as_loaded(net), "median", device="cpu", precision="fp32")
    assert rows[0]["psnr_ensemble"] == pytest.approx(psnr(median, case.target, mask=case.mask), abs=1e-6)
    assert rows[0]["ssim_ensemble"] == pytest.approx(ssim(median, case.target, mask=case.mask), abs=1e-6)
    # a random net is not flip-equivariant
    assert rows[0]["psnr_ensemble"] != pytest.approx(rows[0]["psnr_model"], abs=1e-4)
    assert "PSNR 8-flip median" in markdown_table(rows)
    plain = _config(folder_config, "srcnn3d", TINY["srcnn3d"])
    with pytest.raises(ConfigError, match="learned-upsampling networks"):
        validation_report(build_network(plain), plain, ["iso2-box"], ("t1",), ensemble=True)
