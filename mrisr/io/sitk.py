"""The SimpleITK boundary: the ONE LPS <-> RAS conversion (:data:`FLIP_LPS_RAS`, :func:`sitk_to_ras`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import InputError
from mrisr.io.checks import as_float32, check_array, native_dtype
from mrisr.volume import Volume

#: LPS <-> RAS (its own inverse): negate x and y. ITK, SimpleITK and DICOM are LPS; NIfTI and mrisr are RAS.
FLIP_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a voxel-to-LPS affine (ITK, DICOM) to voxel-to-RAS (NIfTI, mrisr).

    Example:
        >>> lps_to_ras(np.eye(4))[:3, :3].diagonal().tolist()
        [-1.0, -1.0, 1.0]
    """
    return FLIP_LPS_RAS @ np.asarray(affine_lps, dtype=np.float64)


def sitk_to_ras(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Data and voxel-to-RAS affine of a SimpleITK image (2D, 3D or 4D).

    The ONE place where SimpleITK's conventions are undone: the array comes
    out ``(z, y, x)`` and is transposed to ``(x, y, z)`` (``(x, y, z, t)`` for
    4D) so that index ``i, j, k`` matches the affine's columns, and the LPS
    geometry ``[[direction * spacing, origin], [0, 1]]`` is flipped to RAS.
    2D images get a third axis of size 1 (spacing 1, along the normal).

    Args:
        image: A ``SimpleITK.Image`` with scalar pixels.

    Returns:
        ``(data, affine)``: the array in the image's own pixel type (a
        transposed view, not a copy) and the 4x4 float64 RAS affine.

    Example:
        >>> import SimpleITK as sitk
        >>> img = sitk.Image([4, 3, 2], sitk.sitkInt16)
        >>> data, aff = sitk_to_ras(img)
        >>> data.shape, float(aff[0, 0])
        ((4, 3, 2), -1.0)
    """
    import SimpleITK as sitk

    dim = image.GetDimension()
    arr = sitk.GetArrayFromImage(image)
    arr = arr.transpose(tuple(range(arr.ndim - 1, -1, -1)))
    n = min(dim, 3)
    direction = np.eye(3)
    direction[:n, :n] = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:n, :n]
    if n == 2:
        direction[:, 2] = np.cross(direction[:, 0], direction[:, 1])
        arr = arr[:, :, None]
    spacing = np.ones(3)
    spacing[:n] = image.GetSpacing()[:n]
    origin = np.zeros(3)
    origin[:n] = image.GetOrigin()[:n]
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = origin
    return arr, lps_to_ras(lps)


def read_sitk_image(p: Path) -> Any:
    """Read ``p`` with SimpleITK, turning its exceptions into an InputError.

    Example:
        >>> from mrisr.io.sample import sample_path
        >>> read_sitk_image(sample_path()).GetSize()   # any format SimpleITK reads; here NIfTI
        (98, 116, 94)
    """
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[-1] if lines else "unknown error"
        if "Unable to determine ImageIO reader" in str(e):
            raise InputError(p, "not a recognised image format (mrisr reads NIfTI, DICOM, MGH/MGZ, "
                                "NRRD and MetaImage)") from None
        raise InputError(p, f"SimpleITK cannot read it: {detail}") from None


def sitk_volume(p: Path, image: Any) -> Volume:
    """Wrap a SimpleITK image read from ``p`` as a Volume (scalar pixels only)."""
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(p, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                            "(RGB or vector image); mrisr processes scalar images only")
    if image.GetDimension() > 4:
        raise InputError(p, f"is a {image.GetDimension()}D image; mrisr processes 3D and 4D images only")
    data, affine = sitk_to_ras(image)
    check_array(p, data)
    meta: dict = {}
    if data.ndim == 4:
        if data.shape[3] == 1:
            data = data[..., 0]
        else:
            meta["tr"] = float(image.GetSpacing()[3])
    return Volume(data=as_float32(p, data), affine=affine, source_dtype=native_dtype(data.dtype), meta=meta)
