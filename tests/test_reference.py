"""The reference (guide) on the output grid: exact world-coordinate sampling for
oblique, sheared and left-handed grids, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.errors import InputError
from mrisr.geometry.grid import target_grid
from mrisr.trust.reference import (
    MIN_OVERLAP,
    ResampledReference,
    as_reference,
    check_reference_spacing,
    reference_steps,
    resample_reference,
    sample_reference,
    world_to_voxel_map,
)
from mrisr.volume import Volume


def rotation(axis, degrees) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def affine(linear: np.ndarray, shape, centre=(2.0, -5.0, 7.0)) -> np.ndarray:
    """A 4x4 affine with the given 3x3 part whose grid is centred on ``centre`` (world mm)."""
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = np.asarray(centre) - linear @ ((np.asarray(shape) - 1) / 2.0)
    return a


#: 3x3 parts of reference and input grids (voxel sizes of the reference ~0.9-1 mm).
OBLIQUE = rotation((1, 2, 3), 25) @ np.diag([0.95, 1.0, 0.9])
SHEARED = np.array([[1.0, 0.25, 0.0], [0.0, 0.95, 0.2], [0.1, 0.0, 0.9]])
LEFT_HANDED = rotation((0, 1, 1), -15) @ np.diag([-1.0, 0.9, 1.0])
AXIAL_LPS = np.diag([-1.0, -1.0, 1.0])
GRIDS = {"oblique": OBLIQUE, "sheared": SHEARED, "left-handed": LEFT_HANDED, "lps": AXIAL_LPS}

SLOPE = np.array([0.7, -1.3, 2.1])


def linear_field(points: np.ndarray) -> np.ndarray:
    """A linear function of world coordinates (..., 3) -> (...)."""
    return 100.0 + points @ SLOPE


def voxel_centres(a: np.ndarray, shape) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    return idx @ a[:3, :3].T + a[:3, 3]


@pytest.mark.parametrize("ref_kind", list(GRIDS))
@pytest.mark.parametrize("in_kind", ["oblique", "sheared", "left-handed"])
def test_linear_reference_lands_exactly_on_the_output_grid(ref_kind, in_kind):
    ref_shape = (44, 40, 42)
    ref_aff = affine(GRIDS[ref_kind], ref_shape)
    ref = Volume(linear_field(voxel_centres(ref_aff, ref_shape)).astype(np.float32), ref_aff)
    in_lin = GRIDS[in_kind] @ np.diag([1.3, 1.3, 3.1])  # a coarse, thick-slice input of another orientation
    in_shape = (22, 20, 9)
    grid = target_grid(affine(in_lin, in_shape, centre=(3.0, -4.0, 6.0)), in_shape, 1.3)
    guide = resample_reference(ref, grid)
    assert guide.data.shape == grid.shape and guide.data.dtype == np.float32
    world = voxel_centres(grid.affine, grid.shape)
    u = (world - ref_aff[:3, 3]) @ np.linalg.inv(ref_aff[:3, :3]).T  # reference voxel coordinates
    margin = 8
    interior = np.all((u >= margin) & (u <= np.asarray(ref_shape) - 1 - margin), axis=-1)
    assert interior.sum() > 1000
    expected = linear_field(world)
    spread = np.ptp(expected[interior])
    np.testing.assert_allclose(guide.data[interior], expected[interior], rtol=0, atol=1e-4 * spread)
    outside = np.any((u < -0.5 - 1e-6) | (u > np.asarray(ref_shape) - 0.5 + 1e-6), axis=-1)
    assert np.all(guide.data[outside] == 0)
    assert guide.overlap == pytest.approx(1 - outside.mean(), abs=1e-9)


def test_reference_on_the_identical_grid_comes_back_unchanged():
    grid = target_grid(affine(OBLIQUE @ np.diag([2, 2, 3]), (10, 9, 6)), (10, 9, 6), [1.0, 1.0, 0.95])
    data = np.random.default_rng(0).normal(100, 30, grid.shape).astype(np.float32)
    guide = resample_reference(Volume(data, grid.affine), grid)
    assert np.array_equal(guide.data, data) and guide.overlap == 1.0
    assert guide.data is not data


def test_integer_shifted_grid_interpolates_through_the_voxel_values():
    """A larger reference holding the output grid at integer offsets: the cubic spline passes through its values."""
    ref_aff = affine(LEFT_HANDED, (30, 28, 26))
    data = np.random.default_rng(1).normal(100, 30, (30, 28, 26)).astype(np.float32)
    out_aff = ref_aff.copy()
    out_aff[:3, 3] = ref_aff[:3, :3] @ [4, 3, 5] + ref_aff[:3, 3]
    values, overlap = sample_reference(data, ref_aff, out_aff, (20, 20, 15))
    np.testing.assert_allclose(values, data[4:24, 3:23, 5:20], rtol=0, atol=2e-5 * np.abs(data).max())
    assert overlap == 1.0


def test_a_transform_moves_the_reference_like_its_inverse_on_the_affine():
    ref_aff = affine(OBLIQUE, (24, 24, 24))
    data = np.random.default_rng(2).normal(100, 30, (24, 24, 24)).astype(np.float32)
    t = np.eye(4)
    t[:3, :3] = rotation((1, -1, 2), 4)
    t[:3, 3] = [1.5, -2.0, 0.7]
    out_aff = affine(SHEARED, (16, 16, 16))
    moved, f1 = sample_reference(data, ref_aff, out_aff, (16, 16, 16), transform=t)
    same, f2 = sample_reference(data, np.linalg.inv(t) @ ref_aff, out_aff, (16, 16, 16))
    np.testing.assert_allclose(moved, same, atol=1e-3)
    assert f1 == f2
    np.testing.assert_allclose(world_to_voxel_map(out_aff, ref_aff, t), np.linalg.inv(ref_aff) @ t @ out_aff)


def test_much_finer_reference_is_smoothed_before_sampling():
    """A 0.5 mm checkerboard sampled at 1 mm would alias into a pattern; smoothed first it averages out."""
    n = 40
    idx = np.indices((n, n, n)).sum(0)
    data = np.where(idx % 2 == 0, 200.0, 0.0).astype(np.float32)
    ref_aff = np.diag([0.5, 0.5, 0.5, 1.0])
    grid = target_grid(np.diag([2.0, 2.0, 2.0, 1.0]), (10, 10, 10), 1.0)
    ref_aff[:3, 3] = grid.affine[:3, 3] - 0.25  # reference voxel centres straddle the output's
    plain, _ = sample_reference(data, ref_aff, grid.affine, grid.shape)
    smooth = resample_reference(Volume(data, ref_aff), grid).data
    core = (slice(2, -2),) * 3
    assert np.ptp(smooth[core]) < 0.2 * np.ptp(plain[core])
    assert abs(float(smooth[core].mean()) - 100.0) < 5.0


def test_coarser_reference_is_refused_naming_it_and_both_spacings():
    grid = target_grid(np.diag([2.0, 2.0, 4.0, 1.0]), (8, 8, 4), 1.0)
    ref = Volume(np.ones((16, 16, 6), np.float32), np.diag([1.0, 1.0, 3.0, 1.0]), path="t1.nii.gz")
    with pytest.raises(InputError, match=r"^t1.nii.gz: the reference's voxels \(1 x 1 x 3 mm\) are coarser than "
                                         r"the output spacing \(1 x 1 x 1 mm\): along the output's voxel axes they "
                                         r"span 1 x 1 x 3 mm"):
        resample_reference(ref, grid)
    check_reference_spacing(np.diag([1.04, 1.0, 1.0, 1.0]), grid)  # within the tolerance


def test_spacing_is_compared_along_the_output_axes_whatever_the_orientation():
    grid = target_grid(np.diag([2.0, 2.0, 2.0, 1.0]), (8, 8, 8), [0.5, 1.0, 1.0])
    check_reference_spacing(np.diag([0.5, 1.0, 1.0, 1.0]), grid)
    with pytest.raises(InputError, match="span 1 x 0.5 x 1 mm"):  # fine along the wrong axis
        check_reference_spacing(np.diag([1.0, 0.5, 1.0, 1.0]), grid)
    rotated = np.eye(4)
    rotated[:3, :3] = rotation((1, 1, 1), 50)  # 1 mm isotropic in any orientation: 1 mm along every direction
    np.testing.assert_allclose(reference_steps(rotated, np.eye(4)), 1.0)
    slab = np.eye(4)
    slab[:3, :3] = rotation((0, 1, 0), 45) @ np.diag([1.0, 1.0, 3.0])  # its 3 mm axis at 45 degrees in x-z
    steps = reference_steps(slab, np.eye(4))
    np.testing.assert_allclose(steps, [1 / np.sqrt(0.5 + 0.5 / 9), 1.0, 1 / np.sqrt(0.5 + 0.5 / 9)])


def test_reference_missing_the_field_of_view_is_refused_saying_how_much_overlaps():
    grid = target_grid(np.diag([2.0, 2.0, 2.0, 1.0]), (10, 10, 10), 1.0)  # voxel centres at x = -0.5 .. 18.5 mm
    ref_aff = np.eye(4)
    ref_aff[0, 3] = 12.0  # covers x from 11.5 mm: output voxels 12..19 of 20
    ref = Volume(np.ones((30, 30, 30), np.float32), ref_aff, path="far.nii.gz")
    with pytest.raises(InputError, match=r"^far.nii.gz: the reference covers 40.0% of the output's field of view "
                                         r"\(at least 50% needed\)"):
        resample_reference(ref, grid)
    guide = resample_reference(ref, grid, min_overlap=0.3)
    assert guide.overlap == pytest.approx(0.4) and guide.overlap < MIN_OVERLAP
    assert np.all(guide.data[:12] == 0)
    np.testing.assert_allclose(guide.data[12:], 1.0, atol=1e-6)


def test_time_series_reference_is_refused():
    ref = Volume(np.ones((4, 4, 4, 3), np.float32), np.eye(4), path="bold.nii.gz")
    with pytest.raises(InputError, match=r"^bold.nii.gz: the reference must be one 3D volume; it holds 3 volumes"):
        as_reference(ref)
    single = Volume(np.ones((4, 4, 4, 1), np.float32), np.eye(4))
    assert as_reference(single).data.shape == (4, 4, 4) and single.data.ndim == 4  # not modified in place


def test_describe_is_json_ready():
    t = np.eye(4)
    t[0, 3] = 1.0
    r = ResampledReference(np.zeros((2, 2, 2), np.float32), 0.98765, (1.0, 1.0, 1.0), (2, 2, 2), path=None,
                           transform=t, extra={"register": "rigid"})
    d = r.describe()
    assert d == {"path": None, "shape": [2, 2, 2], "spacing": [1.0, 1.0, 1.0], "overlap": 0.9877,
                 "transform_ras": t.tolist(), "register": "rigid"}
