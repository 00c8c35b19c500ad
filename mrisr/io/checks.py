"""The checks every reader shares: readable paths, float32 values in range, NaN/Inf, the final Volume."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np

from mrisr.errors import GeometryError, InputError
from mrisr.geometry.grid import check_affine
from mrisr.volume import Volume

#: Largest |voxel value| accepted (1e30, float32's maximum being 3.4e38): headroom
#: for spline overshoot and for float32 sums over a whole image (the network's
#: intensity normalisation), so nothing overflows to Inf. MRI never comes near.
MAX_ABS_VALUE = float(np.float32(1e30))


#: Integers above this (2**24) are not all representable in float32, mrisr's working type.
FLOAT32_EXACT_INTEGERS = 2 ** 24


#: What ``stat`` says a path is, for the paths that are neither files nor folders.
_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_readable(p: Path) -> None:
    """Refuse missing, unreadable and special paths (FIFOs, devices) with a clear reason.

    Special files are refused from ``stat`` alone, before any ``open``: opening
    a FIFO with no writer would block for ever, and a device such as
    ``/dev/zero`` would be read without end.
    """
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise InputError(p, "broken symbolic link" if p.is_symlink() else "no such file or folder") from None
    except OSError as e:
        raise InputError(p, f"cannot open: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        if not os.access(p, os.R_OK | os.X_OK):
            raise InputError(p, "permission denied (cannot list the folder)")
        return
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "not a regular file")
        raise InputError(p, f"is {kind}, not a regular file; mrisr reads image files and folders only")
    try:
        with open(p, "rb"):
            pass
    except PermissionError:
        raise InputError(p, "permission denied (cannot read the file)") from None
    except OSError as e:
        raise InputError(p, f"cannot open: {e.strerror or e}") from None


def finish_volume(vol: Volume, p: Path | None, nan_to_num: bool) -> Volume:
    """Common checks of every reader (and of in-memory images): dtype, affine, shape, NaN/Inf."""
    try:
        vol.affine = check_affine(vol.affine)
    except GeometryError as e:
        raise InputError(p, f"invalid geometry: {e}") from None
    data = vol.data
    if data.ndim not in (3, 4) or min(data.shape) < 1:
        raise InputError(p, f"unsupported data shape {data.shape}: mrisr reads 3D or 4D images")
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    finite = np.isfinite(data)
    n_bad = int(data.size - np.count_nonzero(finite))
    if n_bad:
        n_nan = int(np.count_nonzero(np.isnan(data)))
        what = f"{n_bad:,} of {data.size:,} voxels are not finite ({n_nan:,} NaN, {n_bad - n_nan:,} Inf)"
        if not nan_to_num:
            raise InputError(p, f"{what}; use --nan-to-num (nan_to_num=True in Python) to replace them with 0")
        data = np.where(finite, data, np.float32(0))
        vol.warnings.append(f"{what}: replaced with 0 (--nan-to-num)")
    _check_value_range(p, data, vol)
    vol.data = data
    vol.path = p
    return vol


def _check_value_range(p: Path | None, data: np.ndarray, vol: Volume) -> None:
    """Refuse values near the float32 limit; warn when integers above 2**24 were rounded.

    Raises:
        InputError: for |values| above :data:`MAX_ABS_VALUE`.
    """
    peak = max(float(data.max()), -float(data.min())) if data.size else 0.0  # no |data| copy
    check_peak(p, peak)
    source = np.dtype(vol.source_dtype) if vol.source_dtype is not None else None
    if source is not None and source.kind in "iu" and peak >= FLOAT32_EXACT_INTEGERS and not _is_scaled(vol):
        step = 2.0 ** (int(np.floor(np.log2(peak))) - 23)
        vol.warnings.append(f"integer values reach {peak:,.0f}, at or above 2^24 ({FLOAT32_EXACT_INTEGERS:,}): "
                            f"mrisr computes in float32, which rounds integers above 2^24 to multiples of up to "
                            f"{step:g} (the output holds the rounded values, also with --dtype input)")


def check_peak(p: Path | None, peak: float) -> None:
    """Refuse a largest |value| above :data:`MAX_ABS_VALUE` (near or beyond float32's limit)."""
    if peak > MAX_ABS_VALUE:
        raise InputError(p, f"values reach {peak:.3g}, above the {MAX_ABS_VALUE:.3g} mrisr accepts: it computes "
                            f"in float32 (limit {float(np.finfo(np.float32).max):.3g}), where interpolation and "
                            "sums over the image would overflow to Inf; rescale the image first")


def as_float32(p: Path | None, arr: np.ndarray) -> np.ndarray:
    """``arr`` as float32, refusing float64 values float32 cannot hold (they would become Inf).

    Example:
        >>> as_float32(None, np.array([1.5, -2.0])).dtype
        dtype('float32')
    """
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and arr.size:
        finite = np.isfinite(arr)
        check_peak(p, float(np.max(np.abs(arr[finite]))) if finite.any() else 0.0)
    return arr.astype(np.float32)


def _is_scaled(vol: Volume) -> bool:
    """Whether the volume's NIfTI header scales its stored values (then they are no longer integers)."""
    hdr = vol.header
    if hdr is None or "scl_slope" not in getattr(hdr, "keys", lambda: ())():
        return False
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    return math.isfinite(slope) and slope != 0 and (slope, inter) != (1.0, 0.0)


def native_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("=")


def check_array(p: Path, data: np.ndarray) -> None:
    if data.dtype.fields is not None or data.dtype.kind == "c" or data.dtype.kind not in "iufb":
        raise InputError(p, f"has unsupported voxel type {data.dtype} (complex, RGB or structured); "
                            "mrisr processes real scalar images only")
    if data.size == 0:
        raise InputError(p, f"has a zero-sized dimension: shape {data.shape}")
