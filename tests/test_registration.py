"""Rigid registration (SimpleITK, LPS <-> RAS) and the ITK transform file."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.errors import MrisrError, OutputError
from mrisr.trust.registration import (
    FLIP_LPS_RAS,
    describe_rigid,
    itk_transform,
    read_transform,
    register_rigid,
    save_transform,
    sitk_image,
    transform_path,
)


def rotation(axis, degrees) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def rigid(axis, degrees, shift) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation(axis, degrees)
    m[:3, 3] = shift
    return m


#: Smooth ellipsoids (centre mm, radii mm, weight) of a synthetic head.
BLOBS = [((0, 0, 0), (35, 28, 30), 1.0), ((12, 8, 5), (10, 6, 8), 0.8), ((-14, -6, 10), (7, 11, 6), -0.6),
         ((5, -15, -12), (8, 5, 9), 0.5)]


def phantom(points: np.ndarray) -> np.ndarray:
    out = np.zeros(points.shape[:-1])
    for centre, radii, weight in BLOBS:
        d = np.sqrt((((points - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1))
        out += weight / (1 + np.exp((d - 1) * 8))
    return out


def sample(affine: np.ndarray, shape, world_map: np.ndarray | None = None) -> np.ndarray:
    """The phantom on a grid; ``world_map`` maps the grid's world to the phantom's."""
    m = affine if world_map is None else world_map @ affine
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    return phantom(idx @ m[:3, :3].T + m[:3, 3]).astype(np.float32)


def centred(linear: np.ndarray, shape) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = -linear @ ((np.asarray(shape) - 1) / 2.0)
    return a


def test_recovers_a_known_rotation_and_translation():
    shape = (64, 64, 64)
    fixed_aff = centred(rotation((1, 2, 0.5), 12) @ np.diag([1.5, 1.5, 1.5]), shape)  # an oblique 1.5 mm grid
    moving_aff = fixed_aff.copy()
    moving_aff[:3, 3] += [1.0, -2.0, 0.5]  # another grid in the same world
    truth = rigid((1, -1, 2), 5.0, [2.0, -1.5, 1.6])  # fixed world -> moving world: 5 degrees, 3 mm
    fixed = sample(fixed_aff, shape)
    moving = sample(moving_aff, shape, np.linalg.inv(truth))  # moving(truth @ x) = fixed(x)
    found = register_rigid(moving, moving_aff, fixed, fixed_aff)
    assert describe_rigid(truth) == pytest.approx({"rotation_deg": 5.0, "translation_mm": 2.97}, abs=0.01)
    error = np.linalg.inv(truth) @ found
    assert describe_rigid(error)["rotation_deg"] < 1.0
    for point in ([0, 0, 0], [30, 0, 0], [0, -25, 20]):  # inside the head
        assert np.linalg.norm((found - truth) @ np.r_[point, 1.0]) < 0.5
    np.testing.assert_allclose(found[:3, :3] @ found[:3, :3].T, np.eye(3), atol=1e-9)  # rigid


def test_no_motion_gives_about_the_identity():
    shape = (40, 40, 40)
    fixed_aff = centred(np.diag([-2.0, 2.0, 2.0]), shape)  # left-handed storage
    moving_aff = centred(rotation((0, 0, 1), 30) @ np.diag([1.8, 1.8, 1.8]), (44, 44, 44))  # another grid
    found = register_rigid(sample(moving_aff, (44, 44, 44)), moving_aff, sample(fixed_aff, shape), fixed_aff)
    moved = describe_rigid(found)
    assert moved["rotation_deg"] < 0.5 and moved["translation_mm"] < 0.3


def test_sitk_image_puts_voxels_at_their_ras_positions_in_lps():
    a = centred(rotation((1, 1, 0), 20) @ np.diag([1.0, 2.0, 3.0]), (5, 6, 7))
    img = sitk_image(np.zeros((5, 6, 7), np.float32), a)
    assert img.GetSize() == (5, 6, 7)
    for index in ((0, 0, 0), (4, 1, 6), (2, 5, 3)):
        lps = np.asarray(img.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(lps, (FLIP_LPS_RAS @ a @ np.r_[index, 1.0])[:3], atol=1e-9)


def test_transform_file_round_trip_in_lps(tmp_path):
    import SimpleITK as sitk

    m = rigid((2, 1, -1), 7.0, [3.0, -4.0, 1.5])
    out = save_transform(m, tmp_path / "t2_sr_reference_rigid.tfm")
    assert out.read_text().startswith("#Insight Transform File")
    np.testing.assert_allclose(read_transform(out), m, atol=1e-9)
    itk = sitk.ReadTransform(str(out))
    ras = np.array([10.0, -20.0, 30.0])
    lps = itk.TransformPoint(tuple(FLIP_LPS_RAS[:3, :3] @ ras))  # ITK maps LPS points
    np.testing.assert_allclose(FLIP_LPS_RAS[:3, :3] @ np.asarray(lps), (m @ np.r_[ras, 1.0])[:3], atol=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == ["t2_sr_reference_rigid.tfm"]  # no temporary file left
    with pytest.raises(OutputError, match="already exists"):
        save_transform(m, out)
    save_transform(np.eye(4), out, force=True)
    np.testing.assert_allclose(read_transform(out), np.eye(4), atol=1e-12)


def test_non_rigid_matrices_are_refused():
    with pytest.raises(MrisrError, match="not a rigid transform"):
        itk_transform(np.diag([1.0, 1.0, 1.1, 1.0]))
    with pytest.raises(MrisrError, match="not a rigid transform"):
        itk_transform(np.diag([-1.0, 1.0, 1.0, 1.0]))


def test_transform_path_sits_beside_the_output():
    assert transform_path("out/sub-01_desc-mrisr_T2w.nii.gz").as_posix() == \
        "out/sub-01_desc-mrisr_T2w_reference_rigid.tfm"


def test_registration_refuses_non_3d_images():
    with pytest.raises(MrisrError, match="two 3D images"):
        register_rigid(np.zeros((4, 4)), np.eye(4), np.zeros((4, 4, 4)), np.eye(4))
