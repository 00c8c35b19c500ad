"""Flip self-ensemble and the uncertainty map (``--uncertainty``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mrisr.errors import MrisrError
from mrisr.pipeline import upscale as pipeline
from mrisr.volume import Volume

torch = pytest.importorskip("torch")

from mrisr.archs.recnn import ReCNN  # noqa: E402
from mrisr.inference.engine import enhance  # noqa: E402
from mrisr.inference.ensemble import FLIPS, flip_ensemble, std_path  # noqa: E402
from mrisr.inference.model_card import LoadedModel, example_card  # noqa: E402

RNG = np.random.default_rng(5)
KW = dict(device="cpu", precision="fp32", threads=1)




def _model(symmetric: bool = False, cond: bool = True) -> LoadedModel:
    torch.manual_seed(1)
    net = ReCNN(3, 4, cond_dim=3 if cond else 0)
    with torch.no_grad():
        for m in net.body:
            if isinstance(m, torch.nn.Conv3d):
                m.bias.uniform_(-0.1, 0.1)
                if symmetric:  # average the kernel over the 8 flips: the network commutes with every flip
                    m.weight.copy_(sum(torch.flip(m.weight, [d + 2 for d in range(3) if f[d]]) for f in FLIPS) / 8)
        net.body[-1].weight.mul_(10)
    return LoadedModel("tiny", example_card(name="tiny"), net.eval(), "ab" * 32, None)


def _smooth(shape) -> np.ndarray:
    return (100 + 400 * ndimage.gaussian_filter(RNG.random(shape), 1.5)).astype(np.float32)


@pytest.mark.parametrize("combine", ["mean", "median"])
def test_symmetric_network_gives_the_single_pass_and_no_spread(combine):
    model = _model(symmetric=True)
    x = _smooth((10, 9, 8))
    single, _ = enhance(x, model, factors=(2, 2, 1), **KW)
    assert np.abs(single - x).max() > 1.0  # the network does something
    out, std, stats = flip_ensemble(x, model, (2, 2, 1), combine, **KW)
    np.testing.assert_allclose(out, single, atol=2e-3)
    assert std.max() < 2e-3 and stats.passes == 8 and len(stats.engine) == 8 and stats.combine == combine


def test_mean_and_std_are_those_of_the_eight_flipped_passes():
    model = _model()
    x = _smooth((9, 8, 7))
    passes = []
    for f in FLIPS:
        axes = tuple(k for k in range(3) if f[k])
        out, _ = enhance(np.ascontiguousarray(np.flip(x, axes)), model, factors=(1, 2, 3), **KW)
        passes.append(np.flip(out, axes))
    passes = np.stack(passes)
    mean, std, _ = flip_ensemble(x, model, (1, 2, 3), "mean", **KW)
    np.testing.assert_allclose(mean, passes.mean(0), atol=1e-3)
    np.testing.assert_allclose(std, passes.std(0), atol=1e-3)
    assert std.max() > 0.01  # an asymmetric network disagrees with itself
    median, std2, _ = flip_ensemble(x, model, (1, 2, 3), "median", **KW)
    np.testing.assert_allclose(median, np.median(passes, 0), atol=1e-3)
    np.testing.assert_allclose(std2, std, atol=1e-3)


def test_std_map_is_zero_for_a_constant_input():
    x = np.full((12, 12, 12), 300.0, np.float32)
    _, std, stats = flip_ensemble(x, _model(symmetric=True), (2, 2, 2), **KW)
    assert std.max() < 1e-3 and stats.std["max_relative"] < 1e-5
    # Any network: away from the borders (its receptive radius, 3) it sees the same thing in every flip.
    _, std, _ = flip_ensemble(x, _model(), (2, 2, 2), **KW)
    assert std[3:-3, 3:-3, 3:-3].max() < 1e-3


def test_progress_covers_all_passes_and_bad_combine():
    seen = []
    flip_ensemble(_smooth((6, 6, 6)), _model(cond=False), progress=lambda d, t: seen.append((d, t)), **KW)
    assert seen[-1][0] == seen[-1][1] and len(seen) >= 8
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    with pytest.raises(MrisrError, match="ensemble"):
        flip_ensemble(_smooth((6, 6, 6)), _model(), (1, 1, 1), "max", **KW)


def test_std_path():
    assert std_path("out/sub-01_desc-mrisr_T1w.nii.gz").name == "sub-01_desc-mrisr_T1w_std.nii.gz"
    assert std_path("a_sr.nii").name == "a_sr_std.nii.gz"


def test_upscale_volume_uncertainty_and_ensemble_options():
    vol = Volume(_smooth((6, 5, 4)), np.diag([2.0, 2.0, 3.0, 1.0]))
    model = _model()
    data, _, report = res = pipeline.upscale_volume(vol, spacing=1, method="cnn", model=model, uncertainty=True,
                                                    **KW)
    assert res.std.shape == data.shape and res.std.dtype == np.float32 and res.std.max() > 0
    u = report.uncertainty
    assert u["ensemble"] == "mean" and u["passes"] == 8 and u["std_output"] is None
    assert 0 < u["std_mean_relative"] <= u["std_p99_relative"] <= u["std_max_relative"]
    assert report.patches_run == 8  # one patch per pass
    alone = pipeline.upscale_volume(vol, spacing=1, method="cnn", model=model, ensemble="median", **KW)
    assert alone.std is None and alone.report.uncertainty["ensemble"] == "median"
    with pytest.raises(MrisrError, match="needs the network"):
        pipeline.upscale_volume(vol, spacing=1, method="spline", uncertainty=True)
    with pytest.raises(MrisrError, match="ensemble"):
        pipeline.upscale_volume(vol, spacing=1, method="cnn", model=model, ensemble="mode", **KW)


def test_cli_uncertainty_writes_the_std_map_beside_the_output(tmp_path):
    import nibabel as nib
    from typer.testing import CliRunner

    from mrisr.cli.app import app
    from mrisr.inference.model_card import save_model
    from mrisr.pipeline.jobs import expand_inputs

    folder = tmp_path / "tiny"
    save_model(_model().network, folder, name="tiny",
               training={"data": "synthetic", "input_spacing_mm": [1, 4], "factor": [1, 4]})
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-20, 14, 3]
    nib.save(nib.Nifti1Image(_smooth((6, 5, 4)), affine), src_dir / "t1.nii.gz")
    args = ["upscale", str(src_dir), "--spacing", "1", "--model", str(folder), "--device", "cpu", "--precision",
            "fp32", "--threads", "1", "--uncertainty", "--json", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = nib.load(src_dir / "t1_sr.nii.gz")
    std = nib.load(src_dir / "t1_sr_std.nii.gz")
    assert std.shape == out.shape and std.get_data_dtype() == np.float32
    np.testing.assert_allclose(std.affine, out.affine, atol=1e-6)
    assert (np.asarray(std.dataobj) >= 0).all() and np.asarray(std.dataobj).max() > 0
    rec = json.loads(result.stdout.splitlines()[0])
    assert rec["uncertainty"]["std_output"] == str(src_dir / "t1_sr_std.nii.gz")
    assert json.loads((src_dir / "t1_sr.json").read_text())["uncertainty"] == rec["uncertainty"]
    # A second run over the folder takes neither the output nor its std map as inputs.
    assert expand_inputs([src_dir]) == [src_dir / "t1.nii.gz"]
    # --uncertainty without the network is a usage error.
    bad = CliRunner().invoke(app, ["upscale", str(src_dir / "t1.nii.gz"), "--spacing", "1", "--method", "spline",
                                   "--uncertainty", "--force"])
    assert bad.exit_code == 2 and "needs the network" in bad.stderr
