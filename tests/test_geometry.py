"""The geometry contract: grids, affines, edge alignment, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrisr.errors import GeometryError, MrisrError
from mrisr.geometry.grid import (
    block_average_affine,
    check_affine,
    parse_spacing,
    spacing_from_factor,
    target_grid,
    voxel_sizes,
)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(m3: np.ndarray, origin=(-90.0, -126.0, -72.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = m3
    a[:3, 3] = origin
    return a


AFFINES = {
    "axis-aligned": _affine(np.eye(3)),
    "oblique": _affine(_rotation(0.3, -0.2, 0.5)),
    "sheared": _affine(np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.15], [0.1, 0.0, 1.0]])),
    "left-handed": _affine(np.diag([-1.0, 1.0, 1.0]) @ _rotation(0.1, 0.0, -0.2)),
    "anisotropic-hr": _affine(np.diag([0.8, 0.9, 1.2]) @ _rotation(0.0, 0.25, 0.0)),
}
# (HR shape, integer block-average factors): odd shapes, isotropic and anisotropic.
CASES = [((12, 12, 12), (2, 2, 2)), ((9, 15, 21), (3, 3, 3)), ((7, 10, 15), (1, 2, 3)), ((11, 8, 5), (1, 1, 5))]


def _lr_case(a_hr: np.ndarray, hr_shape, f):
    lr_shape = tuple(n // k for n, k in zip(hr_shape, f))
    return block_average_affine(a_hr, f), lr_shape


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("hr_shape,f", CASES)
def test_block_average_round_trip_lands_on_hr_grid(name, hr_shape, f):
    a_hr = AFFINES[name]
    a_lr, lr_shape = _lr_case(a_hr, hr_shape, f)
    grid = target_grid(a_lr, lr_shape, voxel_sizes(a_hr))
    assert grid.shape == hr_shape
    np.testing.assert_allclose(grid.affine, a_hr, atol=1e-5)
    np.testing.assert_allclose(grid.spacing, voxel_sizes(a_hr), rtol=1e-12)
    assert np.sign(np.linalg.det(grid.affine[:3, :3])) == np.sign(np.linalg.det(a_hr[:3, :3]))


@pytest.mark.parametrize("name", list(AFFINES))
def test_every_output_voxel_sits_at_c0_plus_r_j(name):
    a = AFFINES[name] @ np.diag([1.0, 1.0, 3.0, 1.0])
    shape = (7, 6, 5)
    grid = target_grid(a, shape, (0.7, 1.3, 1.1))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    hom = np.c_[idx, np.ones(len(idx))].T
    world = grid.affine @ hom
    in_vox = np.linalg.solve(a, world)[:3].T
    expected = np.stack([grid.offsets[i] + grid.ratios[i] * idx[:, i] for i in range(3)], -1)
    np.testing.assert_allclose(in_vox, expected, atol=1e-5)
    for axis in range(3):  # what the resampler samples along each axis
        line = expected[:, axis].reshape(grid.shape)[tuple(slice(None) if k == axis else 0 for k in range(3))]
        np.testing.assert_allclose(grid.positions(axis), line, atol=1e-12)


@pytest.mark.parametrize("name", list(AFFINES))
def test_outer_edges_coincide_when_factor_divides(name):
    a = AFFINES[name] @ np.diag([2.0, 2.0, 4.0, 1.0])
    shape = (5, 6, 3)
    grid = target_grid(a, shape, (voxel_sizes(a) / (2, 3, 4)).tolist())
    assert grid.shape == (10, 18, 12)
    for i in range(3):
        first_edge = grid.offsets[i] - grid.ratios[i] / 2           # output edge -0.5, in input voxels
        last_edge = grid.offsets[i] + grid.ratios[i] * (grid.shape[i] - 0.5)
        assert first_edge == pytest.approx(-0.5, abs=1e-9)
        assert last_edge == pytest.approx(shape[i] - 0.5, abs=1e-9)


def test_centre_of_field_of_view_is_kept_for_non_integer_ratios():
    a = AFFINES["oblique"] @ np.diag([1.0, 1.0, 3.0, 1.0])
    shape = (10, 9, 7)
    grid = target_grid(a, shape, (0.7, 0.7, 1.3))
    centre_in = a @ np.r_[(np.array(shape) - 1) / 2, 1]
    centre_out = grid.affine @ np.r_[(np.array(grid.shape) - 1) / 2, 1]
    np.testing.assert_allclose(centre_out, centre_in, atol=1e-9)
    assert grid.shape == (14, 13, 16)  # round(10/0.7)=14, round(9/0.7)=13, round(21/1.3)=16


def test_columns_keep_direction():
    a = AFFINES["sheared"]
    grid = target_grid(a, (8, 8, 8), (0.5, 2.0, 1.0))
    for i in range(3):
        cos = np.dot(grid.affine[:3, i], a[:3, i]) / (np.linalg.norm(grid.affine[:3, i]) * np.linalg.norm(a[:3, i]))
        assert cos == pytest.approx(1.0, abs=1e-12)


def test_docstring_example_offsets():
    g = target_grid(np.diag([2.0, 2.0, 2.0, 1.0]), (10, 10, 10), 1.0)
    assert g.shape == (20, 20, 20)
    assert g.offsets == (-0.25, -0.25, -0.25)
    assert g.n_voxels == 8000


def test_at_least_one_voxel_per_axis():
    g = target_grid(np.eye(4), (3, 3, 1), 10.0)
    assert g.shape == (1, 1, 1)
    assert g.offsets[0] == pytest.approx(1.0)  # centre of the 3 input voxels


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), [1, 0, 1], [1, 1, -2], "abc", [1, 2]])
def test_parse_spacing_refuses_bad_values(bad):
    with pytest.raises(GeometryError) as exc:
        parse_spacing(bad)
    assert "spacing" in str(exc.value)
    assert isinstance(exc.value, MrisrError) and isinstance(exc.value, ValueError)


def test_parse_spacing_accepts_one_or_three():
    assert parse_spacing(2) == (2.0, 2.0, 2.0)
    assert parse_spacing(["1", 1.5, 3]) == (1.0, 1.5, 3.0)


def test_spacing_from_factor_uses_column_norms():
    a = AFFINES["oblique"] @ np.diag([2.0, 2.0, 4.0, 1.0])
    np.testing.assert_allclose(spacing_from_factor(a, [2, 2, 4]), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(spacing_from_factor(a, 0.5), (4.0, 4.0, 8.0))
    with pytest.raises(GeometryError, match="factor"):
        spacing_from_factor(a, 0)


def test_max_voxels_refusal_names_the_size():
    with pytest.raises(GeometryError) as exc:
        target_grid(np.eye(4), (256, 256, 256), 0.01, max_voxels=10**9)
    msg = str(exc.value)
    assert "25600, 25600, 25600" in msg and "GB" in msg and "1,000,000,000" in msg


@pytest.mark.parametrize("affine,words", [
    (np.zeros((3, 3)), "4x4"),
    (np.diag([1.0, 1.0, np.nan, 1.0]), "NaN"),
    (np.diag([1.0, 0.0, 1.0, 1.0]), "zero voxel size"),
    (np.array([[1.0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "singular"),
    (np.array([[1.0, 1, 0, 0], [0, 1e-9, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "singular"),
    (np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row"),
])
def test_check_affine_refuses(affine, words):
    with pytest.raises(GeometryError, match=words):
        check_affine(affine)


def test_target_grid_refuses_bad_shape():
    with pytest.raises(GeometryError, match="shape"):
        target_grid(np.eye(4), (4, 0, 4), 1.0)
