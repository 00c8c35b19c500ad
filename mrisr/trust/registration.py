"""Rigid registration of a reference to the input (SimpleITK), and its transform file.

``mrisr upscale --reference T1 --register rigid`` aligns the reference to the
input before resampling it onto the output grid. Both are scans of one head,
usually from one session, so their scanner coordinates already agree up to
head motion: the search starts from the identity (the headers' geometry) and
rotates about the centre of the input's grid. Method: a 3D Euler transform
(3 rotations, 3 translations), Mattes mutual information (32 bins; the two
images may have different contrasts), regular-step gradient descent over
three resolutions (shrink 4, 2, 1 with Gaussian smoothing of 2, 1, 0 voxels),
linear interpolation, random metric samples from a fixed seed (the result is
reproducible).

Conventions. In ITK terms the input is the *fixed* image and the reference
the *moving* one; the transform maps a point of the fixed (input) world to
the corresponding point of the moving (reference) world, which is what
resampling the reference onto the input's grid needs. mrisr returns and
records it as a 4x4 matrix in RAS (``M_ras``); ITK works in LPS, and
``M_lps = F @ M_ras @ F`` with ``F = diag(-1, -1, 1, 1)`` (``F`` is its own
inverse). :func:`save_transform` writes the ITK text transform (LPS, as ITK,
ANTs and 3D Slicer expect) as ``<output stem>_reference_rigid.tfm``.

SimpleITK is imported only by the functions that need it.

Example:
    >>> describe_rigid(np.eye(4))
    {'rotation_deg': 0.0, 'translation_mm': 0.0}
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import MrisrError
from mrisr.geometry.grid import check_affine
from mrisr.io.sitk import FLIP_LPS_RAS  # LPS <-> RAS: negate x and y (one owner: the SimpleITK boundary)

#: Suffix of the transform file beside an output.
TRANSFORM_SUFFIX = "_reference_rigid.tfm"
#: Multi-resolution schedule: shrink factors and Gaussian sigmas (voxels) per level.
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS = (2.0, 1.0, 0.0)
#: Metric samples per resolution level (random voxels of the fixed image; more gained no precision in tests).
SAMPLES_PER_LEVEL = 20_000
#: Histogram bins of the Mattes mutual information.
HISTOGRAM_BINS = 32
#: A registration moving the reference further than this is reported as a warning.
LARGE_ROTATION_DEG = 10.0
LARGE_TRANSLATION_MM = 20.0


def sitk_image(data: np.ndarray, affine: np.ndarray) -> Any:
    """A SimpleITK image of a 3D array with a voxel-to-RAS affine (converted to LPS).

    Example:
        >>> img = sitk_image(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 1.0, 1.0, 1.0]))
        >>> img.GetSize(), img.GetSpacing(), img.GetDirection()[0]
        ((4, 5, 6), (2.0, 1.0, 1.0), -1.0)
    """
    import SimpleITK as sitk

    lps = FLIP_LPS_RAS @ check_affine(affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    return img


def transform_matrix_lps(transform: Any) -> np.ndarray:
    """The 4x4 LPS matrix of an affine SimpleITK transform (from the images of 4 points)."""
    origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    m = np.eye(4)
    m[:3, 3] = origin
    for i in range(3):
        e = [0.0, 0.0, 0.0]
        e[i] = 1.0
        m[:3, i] = np.asarray(transform.TransformPoint(tuple(e))) - origin
    return m


def _levels(*shapes: Sequence[int]) -> tuple[list[int], list[float]]:
    """Shrink factors and sigmas of :data:`SHRINK_FACTORS` that leave at least 8 voxels on every axis."""
    smallest = min(min(int(n) for n in s[:3]) for s in shapes)
    keep = [k for k, f in enumerate(SHRINK_FACTORS) if f == 1 or smallest // f >= 8]
    return [SHRINK_FACTORS[k] for k in keep], [SMOOTHING_SIGMAS[k] for k in keep]


def _percentages(shrink: Sequence[int], voxels: int) -> list[float]:
    """Fraction of the (shrunk) fixed image's voxels sampled per level: :data:`SAMPLES_PER_LEVEL` each."""
    return [min(1.0, SAMPLES_PER_LEVEL * f ** 3 / voxels) for f in shrink]


def register_rigid(moving_data: np.ndarray, moving_affine: np.ndarray, fixed_data: np.ndarray,
                   fixed_affine: np.ndarray, *, seed: int = 1, iterations: int = 200) -> np.ndarray:
    """Rigidly align ``moving`` to ``fixed`` by mutual information.

    Args:
        moving_data: The image to align (the reference), 3D.
        moving_affine: Its voxel-to-RAS affine.
        fixed_data: The image it is aligned to (the input), 3D.
        fixed_affine: Its voxel-to-RAS affine.
        seed: Seed of the metric's random samples, >= 1 (SimpleITK takes 0
            as "seed from the clock").
        iterations: Most optimiser iterations per resolution level.

    Returns:
        ``M`` (4x4, RAS, rigid): the fixed-world point ``x`` corresponds to
        the moving-world point ``M @ x``. The identity when the headers
        already agree. Resample ``moving`` at ``inv(A_moving) @ M @ A_fixed``
        to put it on the fixed grid.

    Raises:
        MrisrError: when the images cannot be registered (no overlap, too
            few samples), with ITK's reason.

    Example:
        >>> yy, xx, zz = np.mgrid[:32, :32, :32] - 15.5
        >>> blob = np.exp(-(xx**2 / 60 + yy**2 / 30 + zz**2 / 90)).astype(np.float32)
        >>> m = register_rigid(blob, np.eye(4), blob, np.eye(4))
        >>> moved = describe_rigid(m)        # the same image: about the identity
        >>> moved["rotation_deg"] < 1 and moved["translation_mm"] < 0.5
        True
    """
    import SimpleITK as sitk

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
        raise MrisrError(f"seed must be an integer >= 1, got {seed!r}")
    fixed, moving = np.asarray(fixed_data), np.asarray(moving_data)
    if fixed.ndim != 3 or moving.ndim != 3:
        raise MrisrError(f"rigid registration takes two 3D images, got shapes {fixed.shape} and {moving.shape}")
    fixed_img, moving_img = sitk_image(fixed, fixed_affine), sitk_image(moving, moving_affine)
    center = fixed_img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in fixed_img.GetSize()])
    initial = sitk.Euler3DTransform()
    initial.SetCenter(center)  # identity: start from the scanner coordinates, rotate about the input's centre
    shrink, sigmas = _levels(fixed.shape, moving.shape)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel(_percentages(shrink, fixed.size), seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(initial, inPlace=False)
    try:
        result = reg.Execute(fixed_img, moving_img)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise MrisrError(f"rigid registration of the reference failed: {reason}") from None
    return FLIP_LPS_RAS @ transform_matrix_lps(result) @ FLIP_LPS_RAS


def describe_rigid(matrix: np.ndarray, center: Sequence[float] | None = None) -> dict:
    """Rotation angle (degrees) and translation (mm, of ``center``, default the origin) of a rigid matrix.

    Example:
        >>> m = np.eye(4); m[:3, 3] = [3.0, 4.0, 0.0]
        >>> describe_rigid(m)
        {'rotation_deg': 0.0, 'translation_mm': 5.0}
    """
    m = np.asarray(matrix, dtype=np.float64)
    cos = (np.trace(m[:3, :3]) - 1.0) / 2.0
    angle = math.degrees(math.acos(min(1.0, max(-1.0, cos))))
    c = np.zeros(3) if center is None else np.asarray(center, dtype=np.float64)
    shift = m[:3, :3] @ c + m[:3, 3] - c
    return {"rotation_deg": round(angle, 4), "translation_mm": round(float(np.linalg.norm(shift)), 4)}


def transform_path(output: str | os.PathLike[str]) -> Path:
    """Where the reference's transform goes: ``<output stem>_reference_rigid.tfm`` beside the output.

    Example:
        >>> transform_path("out/t2_sr.nii.gz").name
        't2_sr_reference_rigid.tfm'
    """
    from mrisr.io.naming import split_extension

    p = Path(output)
    return p.with_name(split_extension(p.name)[0] + TRANSFORM_SUFFIX)


def itk_transform(matrix_ras: np.ndarray) -> Any:
    """A SimpleITK Euler3DTransform (LPS) of a rigid RAS matrix.

    Raises:
        MrisrError: if the matrix is not rigid (rotation part not orthonormal
            with determinant 1, to 1e-6).
    """
    import SimpleITK as sitk

    lps = FLIP_LPS_RAS @ np.asarray(matrix_ras, dtype=np.float64) @ FLIP_LPS_RAS
    rot = lps[:3, :3]
    if not (np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) and np.linalg.det(rot) > 0):
        raise MrisrError(f"not a rigid transform (rotation part {rot.tolist()})")
    u, _, vt = np.linalg.svd(rot)
    tx = sitk.Euler3DTransform()
    tx.SetMatrix([float(v) for v in (u @ vt).ravel()], 1e-6)
    tx.SetTranslation([float(v) for v in lps[:3, 3]])
    return tx


def save_transform(matrix_ras: np.ndarray, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write a rigid RAS transform as an ITK text transform file (LPS), atomically and verified.

    The file maps points of the input's (fixed) world to the reference's
    (moving) world, in LPS as ITK expects: resampling the reference into the
    input's space with ITK, ANTs (``antsApplyTransforms -i ref -r input -t
    FILE``) or 3D Slicer uses it as is.

    Raises:
        OutputError: the file exists (without ``force``) or cannot be written.
        MrisrError: the matrix is not rigid.

    Example:
        >>> save_transform(np.eye(4), "t2_sr_reference_rigid.tfm")
        PosixPath('t2_sr_reference_rigid.tfm')
    """
    import SimpleITK as sitk

    from mrisr.io.writer import check_output_path, save_bytes_atomic

    out = check_output_path(path, force=force, suffixes=(".tfm",))
    tx = itk_transform(matrix_ras)
    with tempfile.TemporaryDirectory(prefix="mrisr-tfm-") as tmp:
        scratch = Path(tmp) / "transform.tfm"
        sitk.WriteTransform(tx, str(scratch))
        text = scratch.read_bytes()

    def verify(written: Path) -> None:
        back = transform_matrix_lps(sitk.ReadTransform(str(written)))
        if not np.allclose(FLIP_LPS_RAS @ back @ FLIP_LPS_RAS, matrix_ras, atol=1e-6):
            raise MrisrError("the transform read back differs from the one written")

    return save_bytes_atomic(text, out, force=force, verify=verify)


def read_transform(path: str | os.PathLike[str]) -> np.ndarray:
    """The 4x4 RAS matrix of an ITK transform file written by :func:`save_transform`.

    Example:
        >>> path = save_transform(np.eye(4), "identity_rigid.tfm")
        >>> bool(np.allclose(read_transform(path), np.eye(4)))
        True
    """
    import SimpleITK as sitk

    return FLIP_LPS_RAS @ transform_matrix_lps(sitk.ReadTransform(str(path))) @ FLIP_LPS_RAS


__all__ = ["register_rigid", "describe_rigid", "save_transform", "read_transform", "transform_path",
           "itk_transform", "sitk_image", "FLIP_LPS_RAS", "TRANSFORM_SUFFIX"]
