"""benchmarks/compare_archs.py: FLOP counting, generated configs, and a resumable two-row run on synthetic data."""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

from test_training import folder_config  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("compare_archs", ROOT / "benchmarks" / "compare_archs.py")
compare_archs = importlib.util.module_from_spec(_spec)
sys.modules["compare_archs"] = compare_archs  # dataclasses look their module up
_spec.loader.exec_module(compare_archs)


class _Doubler(nn.Module):
    """A learned-upsampling stand-in: transposed convolution x2 along axis 2, then a 1x1x1 convolution."""

    in_channels = 1
    upsampling = (1, 1, 2)

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(1, 2, (1, 1, 2), stride=(1, 1, 2))
        self.mix = nn.Conv3d(2, 1, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.mix(self.up(x))


def test_flops_count_transposed_convolutions_per_output_voxel() -> None:
    # up: each LR voxel meets 2 filters x 2 taps (4 MACs per LR voxel = 2 per output voxel); mix: 2 MACs
    assert compare_archs.flops_per_voxel(_Doubler(), 8) == 2 * (2 + 2)


def test_rows_keep_the_default_models_data_and_degradations(tmp_path: Path) -> None:
    from mrisr.training.config import load_config

    args = compare_archs.parse(["--out", str(tmp_path), "--budget-minutes", "1"])
    base_cfg = load_config(args.base_config)
    _, settings = compare_archs.settings_of(args, base_cfg)
    base = base_cfg.to_dict()
    row = compare_archs.ALL_ROWS["rrlsrn-1x1x4"]
    path = tmp_path / "c" / "train.toml"
    cfg = compare_archs.write_config(compare_archs.row_config(base, row, 50, settings, "/data"), path, "hdr")
    assert cfg.degradation == base_cfg.degradation and cfg.data.holdout_fraction == base_cfg.data.holdout_fraction
    assert (cfg.model.arch, cfg.model.params, cfg.train.steps, cfg.train.validate_every) == \
        ("rrlsrn", {"scale": [1, 1, 4]}, 50, 50)
    assert cfg.train.validation_cases == ["thick4-slice"]  # the requested case at its scale
    assert tomllib.loads(path.read_text())["data"]["dir"] == "/data"
    gan = compare_archs.row_config(base, compare_archs.ALL_ROWS["mdcsrn-gan"], 50, settings, "/data")
    assert gan["gan"]["critic_warmup"] == 25 and gan["train"]["lr"] == 5e-6
    # Georgescu's rows add the paper's input blur and nothing else to the degradations.
    geo = compare_archs.row_config(base, compare_archs.ALL_ROWS["georgescu-2x2x2"], 50, settings, "/data")
    cfg = compare_archs.write_config(geo, tmp_path / "g" / "train.toml", "hdr")
    assert (cfg.degradation.input_blur, cfg.degradation.input_blur_probability) == ((0.0, 0.5), 0.5)
    assert cfg.degradation == base_cfg.degradation.__class__(**{**base_cfg.degradation.__dict__,
                                                                "input_blur_probability": 0.5})


def test_calibration_resolves_relative_data_paths_through_a_new_folder(tmp_path: Path) -> None:
    # The row's config folder does not exist yet when a row is calibrated; its data path is relative to it.
    import shutil

    from mrisr.training.config import load_config

    base_cfg = load_config(compare_archs.BASE_CONFIG)
    base = base_cfg.to_dict()
    data = (Path(base_cfg.base_dir) / base_cfg.data.dir).resolve()
    if not (data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").is_file():
        pytest.skip("template not fetched (mrisr train --fetch-data)")
    folder = ROOT / "runs" / f".test-calibration-{tmp_path.name}" / "configs" / "srcnn3d"
    rel = str(Path("..", "..", "..", "..", "data", "icbm152"))
    args = compare_archs.parse(["--out", str(tmp_path), "--budget-minutes", "1"])
    _, settings = compare_archs.settings_of(args, base_cfg)
    settings = {**settings, "threads": 1}
    raw = compare_archs.row_config(base, compare_archs.ALL_ROWS["srcnn3d"], 10, settings, rel)
    raw["train"].update({"patch": 8, "batch": 1})
    try:
        cal = compare_archs.calibrate(raw, folder, tmp_path / "work", warmup=1, timed=1)
    finally:
        shutil.rmtree(folder.parents[1], ignore_errors=True)
    assert cal["seconds_per_step"] > 0 and cal["timed_steps"] == 1


def test_two_rows_run_export_and_are_skipped_when_run_again(folder_config: Path, tmp_path: Path,  # noqa: F811
                                                            capsys: pytest.CaptureFixture) -> None:
    argv = ["--out", str(tmp_path / "cmp"), "--steps", "2", "--only", "srcnn3d", "georgescu-1x1x4", "--threads", "1",
            "--no-head-timing", "--base-config", str(folder_config)]
    compare_archs.main(argv)
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert set(results["rows"]) == {"srcnn3d", "georgescu-1x1x4"}
    for name, entry in results["rows"].items():
        assert "error" not in entry and entry["trained"] and entry["params"] > 0 and entry["flops_per_voxel"] > 0
        assert (tmp_path / "cmp" / "models" / name / "card.json").is_file()
    assert [r["requested"] for r in results["rows"]["georgescu-1x1x4"]["evaluation"]] == ["thick4-slice"]
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "| srcnn3d | pham | 53,057 |" in table and "n/a (scale)" in table
    ensemble = results["rows"]["georgescu-1x1x4"]["evaluation"][0]
    assert f"| georgescu-1x1x4 + 8-flip median | | | | | | n/a (scale) | {ensemble['psnr_ensemble']:.2f} /" in table
    capsys.readouterr()
    compare_archs.main(argv)
    assert capsys.readouterr().out.count("finished, skipped") == 2
    with pytest.raises(SystemExit, match="another protocol"):
        compare_archs.main([*argv[:2], "--steps", "3", *argv[4:]])


def test_table_lists_a_row_that_is_only_calibrated() -> None:
    # another process sharing --out has calibrated the row but not started training it
    protocol = {"base_config": "cfg.toml", "budget_minutes": 30.0, "steps": None, "threads": 1, "lr": 1e-3,
                "loss": "auto", "batch": 8, "patch": 32, "precision": "bf16", "seed": 1}
    settings = {**protocol, "cases": ["iso2-box"], "contrasts": ["t1"], "head_timing": False, "head_threads": 2}
    results = {"protocol": protocol, "rows": {"srcnn3d": {"calibration": {"seconds_per_step": 0.9}}}}
    table = compare_archs.markdown(results, settings)
    assert "| srcnn3d | not trained yet |" in table
