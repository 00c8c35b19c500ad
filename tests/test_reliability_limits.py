"""Limits and usage errors: extreme spacings and factors, Typer's own usage errors, absurd model cards,
over-long names, and custom models named like shipped ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrisr.archs.recnn import ReCNN
from mrisr.cli.app import app
from mrisr.errors import GridTooLargeError, ModelError, VoxelTooLargeError
from mrisr.geometry.grid import MAX_SPACING_MM, target_grid
from mrisr.inference import registry
from mrisr.inference.model_card import MAX_NETWORK_PARAMETERS, read_card, save_model
from mrisr.io.writer import name_max

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
TRAINING = {"data": "synthetic blobs", "licence": "CC0", "degradations": ["box"],
            "input_spacing_mm": [1.0, 3.0], "factor": [1.0, 3.0]}


def image(path: Path, shape=(6, 5, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(1).normal(100, 10, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def invoke(*args):
    return CliRunner().invoke(app, [*map(str, args)])


def one_error(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mrisr: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0][len("mrisr: error: "):]


# --------------------------------------------------------------------------- extreme spacings and factors


@pytest.mark.parametrize("option,value,words", [
    ("--spacing", "1e-320", "would give an output of shape (inf, inf, inf) (more voxels than a float can count)"),
    ("--factor", "1e308", "would give an output of shape (inf, inf, inf)"),
    ("--spacing", "1e-30", "(1.2e+31, 1e+31, 1.2e+31) (1.44e+93 voxels, 5.76e+84 GB as float32)"),
    ("--spacing", "1e308", "asks for voxels larger than 1e+06 mm (1 km)"),
    ("--factor", "1e-300", "asks for voxels larger than 1e+06 mm (1 km)"),
])
@pytest.mark.parametrize("command", ["upscale", "info"])
def test_extreme_spacing_or_factor_is_a_size_refusal(tmp_path, command, option, value, words):
    src = image(tmp_path / "in" / "t2.nii.gz")
    args = [command, src, option, value]
    if command == "upscale":
        args += ["--method", "spline", "--output-dir", tmp_path / "out"]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    reason = one_error(result)
    assert reason.startswith(f"{src}: spacing (") and words in reason, reason
    assert result.stdout == "" and not (tmp_path / "out").exists()


def test_target_grid_refuses_before_any_integer_conversion():
    with pytest.raises(GridTooLargeError, match=r"shape \(inf, 1, 1\)"):
        target_grid(AFFINE, (4, 1, 1), (5e-324, 1e5, 1e5))
    with pytest.raises(VoxelTooLargeError):
        target_grid(AFFINE, (4, 4, 4), (1, 1, MAX_SPACING_MM * 1.01))
    assert target_grid(AFFINE, (4, 4, 4), MAX_SPACING_MM).shape == (1, 1, 1)


# --------------------------------------------------------------------------- Typer's own usage errors


@pytest.mark.parametrize("args,words", [
    (["upscale", "x.nii", "--spacng", "1"], "No such option: --spacng"),
    (["upscale", "x.nii", "--order", "9", "--spacing", "1"], "Invalid value for '--order'"),
    (["upscale", "x.nii", "--method", "magic", "--spacing", "1"], "Invalid value for '--method'"),
    (["info"], "Missing argument 'FILE'"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
])
def test_typer_usage_errors_are_one_line_exit_2(args, words):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    reason = one_error(result)
    assert words in reason and reason.endswith("--help')"), reason
    assert "─" not in result.output and "Usage:" not in result.output  # no framed box, no usage block


def test_bare_mrisr_still_prints_its_help():
    result = invoke()
    assert result.exit_code == 2 and "upscale" in result.stdout and result.stderr == ""


# --------------------------------------------------------------------------- absurd model cards


def _tiny_model(folder: Path) -> Path:
    torch.manual_seed(0)
    save_model(ReCNN(3, 4), folder, name="tiny", training=TRAINING)
    return folder


def _edit_card(folder: Path, **params) -> Path:
    path = folder / "card.json"
    card = json.loads(path.read_text())
    card["architecture"]["params"].update(params)
    path.write_text(json.dumps(card))
    return path


def test_absurd_width_is_refused_before_allocating(tmp_path):
    folder = _tiny_model(tmp_path / "tiny")
    _edit_card(folder, width=200000)
    with pytest.raises(ModelError, match=r"describe a network of [\d,]+ parameters .* above the limit of "
                                         f"{MAX_NETWORK_PARAMETERS:,}"):
        registry.load_model(folder)
    result = invoke("upscale", image(tmp_path / "t2.nii.gz"), "--spacing", "1", "--model", folder)
    assert result.exit_code == 2, result.output
    assert "parameters" in one_error(result) and not (tmp_path / "t2_sr.nii.gz").exists()


@pytest.mark.parametrize("value", [10 ** 12, 1e300, -5_000_000])
def test_out_of_range_card_numbers_are_refused_when_read(tmp_path, value):
    folder = _tiny_model(tmp_path / "tiny")
    path = _edit_card(folder, width=value)
    with pytest.raises(ModelError, match="'architecture.params.width' is .* outside the sane range"):
        read_card(path)


def test_sane_params_still_load(tmp_path):
    loaded = registry.load_model(_tiny_model(tmp_path / "tiny"))
    assert loaded.network.width == 4


# --------------------------------------------------------------------------- custom copies of shipped models


def test_a_copy_of_the_default_model_is_recorded_with_its_path(tmp_path):
    import shutil

    shipped = registry.find_card(None)
    copy = tmp_path / "my_model"
    shutil.copytree(shipped.folder, copy)
    src = image(tmp_path / "t2.nii.gz")
    result = invoke("upscale", src, "--spacing", "1.5", "--model", copy, "--json", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert rec["model"] == shipped.name and rec["model_path"] == str(copy)
    assert any(f"was loaded from {copy}, not from the shipped model" in w and "the same weights (a copy)" in w
               for w in rec["warnings"])
    default = invoke("upscale", src, "--spacing", "1.5", "--json", "--quiet", "--device", "cpu", "--force")
    rec = json.loads(default.stdout)
    assert rec["model_path"] == str(shipped.folder) and not any("was loaded from" in w for w in rec["warnings"])


# --------------------------------------------------------------------------- long names


def test_a_240_character_input_name_is_processed(tmp_path):
    src = image(tmp_path / ("n" * 233 + ".nii.gz"))
    assert len(src.name) == 240
    result = invoke("upscale", src, "--spacing", "1.5", "--method", "spline", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    out = tmp_path / ("n" * 233 + "_sr.nii.gz")
    assert nib.load(out).shape == (8, 7, 8)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_an_output_name_over_the_limit_is_refused_with_the_limit(tmp_path):
    limit = name_max(tmp_path)
    src = image(tmp_path / ("m" * (limit - 7) + ".nii.gz"))  # the longest input name; "_sr" makes it too long
    result = invoke("upscale", src, "--spacing", "1.5", "--method", "spline", "--json", "--quiet")
    assert result.exit_code == 1, result.output
    assert f"above the file-name limit of {limit} bytes here; give a shorter name with -o" in one_error(result)
    short = invoke("upscale", src, "--spacing", "1.5", "--method", "spline", "-o", tmp_path / "short.nii.gz")
    assert short.exit_code == 0 and (tmp_path / "short.nii.gz").exists()


# --------------------------------------------------------------------------- sheared qform round trip


def test_sheared_output_reads_back_without_a_qform_warning(tmp_path):
    """The example hypothesis found: the rigid fit of the float32 sform moves 1.2e-4 mm (tolerance 1e-3)."""
    from mrisr.geometry.grid import voxel_sizes
    from mrisr.io.read import load_volume
    from mrisr.io.writer import save_volume

    sheared = np.array([[0.80478282, -0.63790264, -0.16788677, 0.0], [-0.58760371, -0.77196193, 0.05466081, 0.0],
                        [-0.08394339, 0.03257687, -1.99219131, 0.0], [0.0, 0.0, 0.0, 1.0]])
    grid = target_grid(sheared, (1, 1, 3), tuple(voxel_sizes(sheared) * [3.0, 1.0, 1.0]))
    back = load_volume(save_volume(np.zeros(grid.shape, np.float32), grid.affine, tmp_path / "o.nii"))
    assert back.warnings == []
    np.testing.assert_allclose(back.affine, grid.affine, atol=1e-5)
