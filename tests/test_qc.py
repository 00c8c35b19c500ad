"""QC pictures: ``mrisr upscale --qc``, ``mrisr qc`` and the world-plane sampling behind them."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli.app import app
from mrisr.errors import MrisrError
from mrisr.evaluation.qc import (
    INSTALL_HINT,
    PNG_SIZE,
    QCUnavailableError,
    fov_corners,
    make_planes,
    qc_path,
    qc_picture,
    require_matplotlib,
    sample_plane,
    spline_on_grid,
)
from mrisr.geometry.grid import target_grid
from mrisr.geometry.resample import resample_to_grid
from mrisr.volume import Volume

RNG = np.random.default_rng(7)


def _save(path: Path, shape=(8, 7, 5), zooms=(2.0, 2.0, 3.0)) -> Path:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-8.0, -6.0, -6.0]
    img = nib.Nifti1Image(RNG.normal(100, 20, size=shape).astype(np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def _png_size(path: Path) -> tuple[int, int]:
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _no_matplotlib(monkeypatch) -> None:
    """Make ``import matplotlib`` fail, as on an installation without the qc extra."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    m = np.eye(4)
    m[i, i] = m[j, j] = c
    m[i, j], m[j, i] = -s, s
    return m


# ----------------------------------------------------------------- mrisr upscale --qc


def test_upscale_qc_writes_png_and_records_it(tmp_path):
    pytest.importorskip("matplotlib")
    src = _save(tmp_path / "t2.nii.gz")
    result = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "1", "--method", "spline", "--qc",
                                      "--json", "-q"])
    assert result.exit_code == 0, result.output
    png = tmp_path / "t2_sr_qc.png"
    assert _png_size(png) == PNG_SIZE
    from matplotlib.image import imread

    assert imread(png).shape[:2] == (PNG_SIZE[1], PNG_SIZE[0])
    record = json.loads(result.stdout)
    sidecar = json.loads((tmp_path / "t2_sr.json").read_text())
    assert record["qc"] == sidecar["qc"] == str(png)
    assert sidecar["status"] == "ok" and sidecar["timings"]["qc"] > 0


def test_upscale_without_qc_records_null(tmp_path):
    src = _save(tmp_path / "t2.nii.gz")
    result = CliRunner().invoke(app, ["upscale", str(src), "--factor", "2", "--method", "spline", "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["qc"] is None
    assert not (tmp_path / "t2_sr_qc.png").exists()


def test_upscale_qc_without_matplotlib_fails_that_input_with_the_install_hint(tmp_path, monkeypatch):
    _no_matplotlib(monkeypatch)
    src = _save(tmp_path / "t2.nii.gz")
    result = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "1", "--method", "spline", "--qc",
                                      "--json"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and INSTALL_HINT in errors[0] and "t2.nii.gz" in errors[0]
    assert json.loads(result.stdout)["status"] == "failed"
    assert not (tmp_path / "t2_sr.nii.gz").exists()  # refused before any work


def test_require_matplotlib_message(monkeypatch):
    _no_matplotlib(monkeypatch)
    with pytest.raises(QCUnavailableError, match=r'pip install "mrisr\[qc\]"'):
        require_matplotlib()


# ----------------------------------------------------------------- mrisr qc


@pytest.fixture
def upscaled(tmp_path):
    src = _save(tmp_path / "t2.nii.gz")
    result = CliRunner().invoke(app, ["upscale", str(src), "--spacing", "1", "--method", "spline", "-q"])
    assert result.exit_code == 0, result.output
    return src, tmp_path / "t2_sr.nii.gz"


def test_qc_command_default_path_and_point(upscaled, tmp_path):
    pytest.importorskip("matplotlib")
    src, out = upscaled
    result = CliRunner().invoke(app, ["qc", str(src), str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(qc_path(out)) == str(tmp_path / "t2_sr_qc.png")
    assert _png_size(qc_path(out)) == PNG_SIZE
    custom = tmp_path / "pics" / "left.png"
    custom.parent.mkdir()
    result = CliRunner().invoke(app, ["qc", str(src), str(out), "--point", "-4", "0", "1.5", "-o", str(custom),
                                      "--radiological"])
    assert result.exit_code == 0, result.output
    assert _png_size(custom) == PNG_SIZE


def test_qc_command_errors(upscaled, tmp_path, monkeypatch):
    src, out = upscaled
    runner = CliRunner()
    if _has_matplotlib():
        outside = runner.invoke(app, ["qc", str(src), str(out), "--point", "500", "0", "0"])
        assert outside.exit_code == 2 and "outside the input's field of view" in outside.stderr
        unreadable = runner.invoke(app, ["qc", str(tmp_path / "missing.nii.gz"), str(out)])
        assert unreadable.exit_code == 1 and "no such file" in unreadable.stderr
    two = runner.invoke(app, ["qc", str(src), str(out), "--point", "1", "2"])
    assert two.exit_code == 2 and "three" in two.stderr
    _no_matplotlib(monkeypatch)
    missing = runner.invoke(app, ["qc", str(src), str(out)])
    assert missing.exit_code == 2
    assert missing.stderr.count("\n") == 1 and INSTALL_HINT in missing.stderr


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------- sampling through world coordinates


def test_planes_are_world_aligned_and_labelled():
    corners = fov_corners(np.eye(4), (4, 6, 8))
    axial, coronal, sagittal = make_planes([1.5, 2.5, 3.5], corners, 1.0)
    assert axial.edges == ("L", "R", "P", "A") and coronal.edges == ("L", "R", "I", "S")
    assert sagittal.edges == ("A", "P", "I", "S")
    assert np.allclose(axial.points[..., 2], 3.5) and np.allclose(sagittal.points[..., 0], 1.5)
    # rows go up in y (origin lower), columns go right in x
    assert np.all(np.diff(axial.points[:, 0, 1]) > 0) and np.all(np.diff(axial.points[0, :, 0]) > 0)
    mirrored = make_planes([1.5, 2.5, 3.5], corners, 1.0, radiological=True)[0]
    assert mirrored.edges == ("R", "L", "P", "A") and np.all(np.diff(mirrored.points[0, :, 0]) < 0)


def test_oblique_images_are_sampled_through_their_inverse_affine():
    affine = _rotation(0, 20) @ _rotation(2, 30) @ np.diag([2.0, 1.5, 3.0, 1.0])
    affine[:3, 3] = [5.0, -3.0, 2.0]
    shape = (12, 14, 9)
    idx = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    # An image whose value is the world x + 2 y - z of each voxel centre: linear, so linear sampling is exact.
    data = (world @ np.array([1.0, 2.0, -1.0])).reshape(shape).astype(np.float32)
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    for plane in make_planes(centre, fov_corners(affine, shape), 1.0):
        values = sample_plane(data, affine, plane.points, 1)
        expected = plane.points @ np.array([1.0, 2.0, -1.0])
        vox = (plane.points.reshape(-1, 3) - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
        interior = np.all((vox >= 0) & (vox <= np.array(shape) - 1), axis=1).reshape(values.shape)
        outside = np.any((vox < -0.51) | (vox > np.array(shape) - 0.49), axis=1).reshape(values.shape)
        assert interior.sum() > 20
        np.testing.assert_allclose(values[interior], expected[interior], rtol=1e-5, atol=1e-3)
        assert np.all(np.isnan(values[outside]))


def test_nearest_sampling_shows_the_input_voxels():
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    plane = make_planes([0.0, 0.0, 4.0], fov_corners(affine, data.shape), 1.0)[0]
    values = sample_plane(data, affine, plane.points, 0)
    finite = values[np.isfinite(values)]
    assert set(np.unique(finite)) <= set(data[:, :, 1].ravel().tolist())
    assert len(np.unique(finite)) == 6  # every voxel of the slice shows up, as a block of pixels


def test_spline_on_grid_is_the_pipeline_interpolation():
    data = RNG.normal(size=(6, 5, 4)).astype(np.float32)
    affine = _rotation(1, 15) @ np.diag([2.0, 2.0, 3.0, 1.0])
    grid = target_grid(affine, data.shape, [1.0, 1.0, 1.5])
    np.testing.assert_allclose(spline_on_grid(data, affine, grid.shape, grid.affine),
                               resample_to_grid(data, grid), atol=1e-5)


def test_qc_picture_of_a_network_result_and_a_4d_image(tmp_path):
    pytest.importorskip("matplotlib")
    data = RNG.normal(100, 10, size=(6, 6, 4, 2)).astype(np.float32)
    affine = _rotation(2, 25) @ np.diag([2.0, 2.0, 3.0, 1.0])
    grid = target_grid(affine, data.shape[:3], 1.0)
    spline = resample_to_grid(data, grid)
    result = spline + np.float32(3.0)
    png = qc_picture(Volume(data, affine), Volume(result, grid.affine), tmp_path / "x_qc.png", spline=spline,
                     method="cnn", model="tiny")
    assert _png_size(png) == PNG_SIZE
    with pytest.raises(MrisrError, match="outside the input's field of view"):
        qc_picture(Volume(data, affine), Volume(result, grid.affine), tmp_path / "y.png", point=[1e4, 0, 0])
    assert not (tmp_path / "y.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x_qc.png"]  # no temporary file left
