"""Image-quality metrics of a super-resolved volume against a reference.

All metrics compare ``x`` (the result) with ``ref`` (the ground truth) voxel by
voxel on the same grid, optionally inside a boolean ``mask``, in float64:

- **peak**: unless given, the 99.5th percentile of ``ref`` inside the mask (a
  robust maximum: a few hot voxels, e.g. vessels or fat, do not set the
  scale). If that is not positive, the maximum of ``|ref|`` is used.
- :func:`psnr`: ``10 log10(peak**2 / MSE)`` in dB, ``MSE`` the mean squared
  error in the mask. Identical images give ``float('inf')``.
- :func:`ssim`: 3D SSIM of Wang et al. (2004) with a Gaussian window of
  ``sigma`` voxels (1.5, truncated at 3.5 sigma, mirrored at the volume's
  edges), constants ``K1 = 0.01`` and ``K2 = 0.03`` and data range ``L =
  peak``. The SSIM map is computed everywhere the window reaches and averaged
  over the mask voxels. Identical images give 1.0.
- :func:`nrmse`: ``RMSE / (p99.5 - p0.5)`` where ``p`` are percentiles of
  ``ref`` inside the mask (its robust range; ``|ref|`` when ``ref`` is
  constant there). 0 for identical images.

:func:`evaluate` takes arrays, nibabel images, :class:`~mrisr.volume.Volume`
objects or file paths, refuses volumes on different grids and returns all
three metrics in one dict. Numpy and scipy only.

Example:
    >>> import numpy as np
    >>> ref = np.full((8, 8, 8), 100.0)
    >>> round(psnr(ref + 1.0, ref), 6)  # 20 log10(100 / 1)
    40.0
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mrisr.errors import GeometryError, InputError, MrisrError

#: Percentile of the reference (inside the mask) used as the peak value.
PEAK_PERCENTILE = 99.5
#: Lower percentile of the robust range used by :func:`nrmse`.
RANGE_LOW_PERCENTILE = 0.5
#: SSIM constants of Wang et al. (2004).
K1, K2 = 0.01, 0.03
#: Gaussian SSIM window: standard deviation and truncation (in sigmas).
SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5
#: Largest world-coordinate disagreement (mm) tolerated between two grids.
GRID_TOLERANCE_MM = 1e-4


# ----------------------------------------------------------------- helpers


def _as_pair(x: Any, ref: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """float64 copies of ``x`` and ``ref`` and a boolean mask, shapes checked."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        raise GeometryError(f"image shape {a.shape} differs from reference shape {b.shape}")
    if mask is None:
        return a, b, None
    m = np.asarray(mask)
    spatial_ok = m.ndim >= 3 and m.shape == b.shape[: m.ndim]
    if m.shape != b.shape and not spatial_ok:
        raise GeometryError(f"mask shape {m.shape} does not match image shape {b.shape}")
    m = m.astype(bool)
    if m.ndim < b.ndim:  # a 3D mask applies to every volume of a 4D image
        m = np.broadcast_to(m.reshape(m.shape + (1,) * (b.ndim - m.ndim)), b.shape)
    if not m.any():
        raise MrisrError("the mask is empty: no voxel to evaluate")
    return a, b, m


def _select(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return values.ravel() if mask is None else values[mask]


def default_peak(ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The peak used when none is given: the 99.5th percentile of ``ref`` in ``mask``.

    Falls back to ``max(|ref|)`` when that percentile is not positive.

    Raises:
        MrisrError: if the reference is zero everywhere in the mask.

    Example:
        >>> default_peak(np.arange(1001.0))
        995.0
    """
    vals = _select(np.asarray(ref, dtype=np.float64), None if mask is None else np.asarray(mask, bool))
    peak = float(np.percentile(vals, PEAK_PERCENTILE))
    if peak <= 0:
        peak = float(np.max(np.abs(vals)))
    if not peak > 0:
        raise MrisrError("the reference is zero inside the mask: give peak explicitly")
    return peak


def _check_peak(peak: float | None, ref: np.ndarray, mask: np.ndarray | None) -> float:
    if peak is None:
        return default_peak(ref, mask)
    p = float(peak)
    if not (math.isfinite(p) and p > 0):
        raise MrisrError(f"peak must be finite and > 0, got {peak!r}")
    return p


# ----------------------------------------------------------------- metrics


def psnr(x: Any, ref: Any, mask: Any = None, peak: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(peak**2 / MSE)``.

    Args:
        x: Result image (array-like).
        ref: Reference image, same shape.
        mask: Boolean array restricting the voxels (None: all).
        peak: Peak value; default the 99.5th percentile of ``ref`` in the mask.

    Returns:
        PSNR in dB; ``float('inf')`` when ``x`` equals ``ref`` in the mask.

    Example:
        >>> ref = np.full((4, 4, 4), 50.0)
        >>> round(psnr(ref + 5.0, ref, peak=100.0), 6)  # 20 log10(100 / 5)
        26.0206
    """
    a, b, m = _as_pair(x, ref, mask)
    p = _check_peak(peak, b, m)
    mse = float(np.mean(_select((a - b) ** 2, m)))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(p * p / mse)


def nrmse(x: Any, ref: Any, mask: Any = None) -> float:
    """Root-mean-square error divided by the robust range of ``ref``.

    The range is ``p99.5 - p0.5`` of ``ref`` inside the mask (linear
    interpolation between order statistics, as :func:`numpy.percentile`).
    When ``ref`` is constant inside the mask the range runs from 0 to that
    constant (its absolute value).

    Raises:
        MrisrError: if ``ref`` is zero everywhere inside the mask.

    Example:
        >>> ref = np.arange(1001.0)  # range p99.5 - p0.5 = 995 - 5 = 990
        >>> round(nrmse(ref + 9.9, ref), 12)
        0.01
    """
    a, b, m = _as_pair(x, ref, mask)
    vals = _select(b, m)
    lo, hi = np.percentile(vals, [RANGE_LOW_PERCENTILE, PEAK_PERCENTILE])
    span = float(hi - lo)
    if not span > 0:  # constant inside the mask: the range from 0 to that value
        span = float(np.max(np.abs(vals)))
    if not span > 0:
        raise MrisrError("the reference is zero everywhere inside the mask: NRMSE is undefined")
    rmse = math.sqrt(float(np.mean(_select((a - b) ** 2, m))))
    return rmse / span


def _crop_to_mask(a: np.ndarray, b: np.ndarray, m: np.ndarray | None, radius: int) -> tuple:
    """Crop to the mask's bounding box plus the window radius (same SSIM there)."""
    if m is None:
        return a, b, m
    idx = np.nonzero(m)
    box = tuple(slice(max(0, int(i.min()) - radius), int(i.max()) + radius + 1) for i in idx)
    return a[box], b[box], m[box]


def ssim_map(x: np.ndarray, ref: np.ndarray, peak: float, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Voxel-wise SSIM (Wang et al. 2004) with a Gaussian window of ``sigma`` voxels.

    The window spans the first three axes (further axes are independent
    volumes); it is mirrored at the array's edges.

    Example:
        >>> x = np.random.default_rng(0).random((8, 8, 8))
        >>> float(ssim_map(x, x, 1.0).min())
        1.0
    """
    sig = [sigma] * min(x.ndim, 3) + [0.0] * max(0, x.ndim - 3)

    def blur(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, sig, mode="reflect", truncate=SSIM_TRUNCATE)

    c1, c2 = (K1 * peak) ** 2, (K2 * peak) ** 2
    mx, my = blur(x), blur(ref)
    # in-place updates keep the peak memory near ten arrays of the input's size
    cov = blur(x * ref)
    cov -= mx * my
    var = blur(x * x)
    var -= mx * mx
    var_ref = blur(ref * ref)
    var_ref -= my * my
    var += var_ref  # kept apart so that identical images give exactly 1
    del var_ref
    num = (2 * mx * my + c1) * (2 * cov + c2)
    del cov
    mx *= mx
    my *= my
    mx += my
    mx += c1
    var += c2
    var *= mx
    return num / var


def ssim(x: Any, ref: Any, mask: Any = None, sigma: float = SSIM_SIGMA, peak: float | None = None) -> float:
    """Mean 3D structural similarity of ``x`` to ``ref`` over ``mask``.

    Args:
        x: Result image.
        ref: Reference image, same shape.
        mask: Boolean array of the voxels averaged (None: all).
        sigma: Standard deviation of the Gaussian window in voxels.
        peak: Data range ``L`` of the constants; default as :func:`psnr`.

    Returns:
        Mean SSIM (1.0 for identical images, lower for worse agreement).

    Example:
        >>> ref = np.full((8, 8, 8), 100.0)
        >>> # constant images: only the luminance term, (2*100*110 + C1) / (100**2 + 110**2 + C1)
        >>> round(ssim(ref + 10.0, ref, peak=100.0), 6)
        0.995475
    """
    if not (math.isfinite(float(sigma)) and sigma > 0):
        raise MrisrError(f"SSIM window sigma must be > 0 voxels, got {sigma!r}")
    a, b, m = _as_pair(x, ref, mask)
    p = _check_peak(peak, b, m)
    radius = int(SSIM_TRUNCATE * float(sigma) + 0.5)
    a, b, m = _crop_to_mask(a, b, m, radius)
    return float(np.mean(_select(ssim_map(a, b, p, sigma), m)))


# ----------------------------------------------------------------- evaluate


def _load(obj: Any, what: str) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """``(data, affine or None, path or None)`` of an array, image, Volume or path."""
    if isinstance(obj, (str, Path)):
        from mrisr.io.read import load_volume

        vol = load_volume(obj)
        return np.asarray(vol.data), np.asarray(vol.affine, np.float64), str(obj)
    if hasattr(obj, "dataobj") and hasattr(obj, "affine"):  # nibabel image
        return np.asanyarray(obj.dataobj), np.asarray(obj.affine, np.float64), None
    if hasattr(obj, "data") and hasattr(obj, "affine"):  # mrisr Volume
        path = getattr(obj, "path", None)
        return np.asarray(obj.data), np.asarray(obj.affine, np.float64), None if path is None else str(path)
    try:
        return np.asarray(obj), None, None
    except Exception as exc:  # noqa: BLE001 - any unconvertible object
        raise MrisrError(f"{what}: cannot use a {type(obj).__name__} as an image ({exc})") from None


def _grid_corners(shape: tuple[int, ...]) -> np.ndarray:
    """Homogeneous voxel coordinates of the 8 corner voxel centres, (4, 8)."""
    n = [max(int(s) - 1, 0) for s in shape[:3]]
    pts = np.array(np.meshgrid([0, n[0]], [0, n[1]], [0, n[2]], indexing="ij")).reshape(3, -1)
    return np.vstack([pts, np.ones((1, pts.shape[1]))])


def _fmt_affine(a: np.ndarray) -> str:
    return "[" + "; ".join(" ".join(f"{v:.6g}" for v in row) for row in a[:3]) + "]"


def check_same_grid(shape_a: tuple[int, ...], affine_a: np.ndarray | None, shape_b: tuple[int, ...],
                    affine_b: np.ndarray | None, names: tuple[str, str] = ("sr", "ref")) -> None:
    """Refuse two images that are not on the same voxel grid.

    Shapes must match exactly; when both affines are known, the voxel centres
    of the grid (checked at its 8 corners, which bound every voxel) must agree
    to :data:`GRID_TOLERANCE_MM`.

    Raises:
        GeometryError: stating both shapes or both affines and the difference.

    Example:
        >>> check_same_grid((4, 4, 4), np.eye(4), (4, 4, 4), np.eye(4))  # same grid: no error
    """
    a, b = names
    if tuple(shape_a) != tuple(shape_b):
        diff = tuple(int(p) - int(q) for p, q in zip(shape_a, shape_b)) if len(shape_a) == len(shape_b) else "n/a"
        raise GeometryError(
            f"{a} and {b} are on different grids: {a} shape {tuple(shape_a)} vs {b} shape {tuple(shape_b)} "
            f"(difference {diff}); resample {a} onto the grid of {b} first")
    if affine_a is None or affine_b is None:
        return
    corners = _grid_corners(shape_b)
    shift = np.linalg.norm((affine_a @ corners - affine_b @ corners)[:3], axis=0)
    worst = float(shift.max())
    if worst > GRID_TOLERANCE_MM:
        raise GeometryError(
            f"{a} and {b} are on different grids: voxel centres differ by up to {worst:.6g} mm "
            f"(tolerance {GRID_TOLERANCE_MM:g} mm); {a} affine {_fmt_affine(affine_a)} vs {b} affine "
            f"{_fmt_affine(affine_b)}; difference {_fmt_affine(affine_a - affine_b)}")


def _resolve_mask(mask: Any, ref: np.ndarray, ref_affine: np.ndarray | None) -> tuple[np.ndarray | None, str]:
    """The boolean mask and a label for it ("none", "auto", a path or "array")."""
    if mask is None or (isinstance(mask, str) and mask.lower() == "none"):
        return None, "none"
    if isinstance(mask, str) and mask.lower() == "auto":
        from mrisr.evaluation.masks import head_mask

        return head_mask(ref), "auto"
    data, affine, path = _load(mask, "mask")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    label = path or "array"
    try:
        check_same_grid(data.shape, affine, ref.shape[: data.ndim], ref_affine, ("mask", "ref"))
    except GeometryError as exc:
        raise (InputError(path, str(exc)) if path else exc) from None
    m = np.asarray(data) > 0
    if not m.any():
        raise InputError(path, "the mask is empty (no voxel > 0)") if path else MrisrError("the mask is empty")
    return m, label


def evaluate(sr: Any, ref: Any, mask: Any = "auto", peak: float | None = None) -> dict[str, Any]:
    """PSNR, SSIM and NRMSE of a super-resolved volume against a reference.

    Args:
        sr: The result: an array, a nibabel image, a :class:`~mrisr.volume.Volume`
            or a path readable by :func:`mrisr.io.read.load_volume`.
        ref: The ground truth, same kinds, on the same grid.
        mask: ``"auto"`` (:func:`mrisr.evaluation.masks.head_mask` of ``ref``), ``None`` or
            ``"none"`` (all voxels), a boolean array, or a mask image/path on
            the same grid (voxels > 0 are in).
        peak: Peak / data range; default the 99.5th percentile of ``ref`` in the mask.

    Returns:
        ``{"psnr": dB, "ssim": float, "nrmse": float, "peak": float,
        "mask_voxels": int, "mask": label, "shape": [...]}``; ``psnr`` is
        ``inf`` for identical images.

    Raises:
        GeometryError: if the shapes differ or the affines disagree by more
            than 1e-4 mm (the message gives both and the difference).
        MrisrError: for unreadable inputs or an empty mask.

    Example:
        >>> ref = np.zeros((12, 12, 12)); ref[3:9, 3:9, 3:9] = 100.0
        >>> r = evaluate(ref, ref, mask=None)
        >>> r["psnr"], r["ssim"], r["nrmse"]
        (inf, 1.0, 0.0)
    """
    x, x_aff, x_path = _load(sr, "sr")
    r, r_aff, r_path = _load(ref, "ref")
    check_same_grid(x.shape, x_aff, r.shape, r_aff, (x_path or "sr", r_path or "ref"))
    m, label = _resolve_mask(mask, r, r_aff)
    x64, r64, m_full = _as_pair(x, r, m)
    p = _check_peak(peak, r64, m_full)
    return {
        "psnr": psnr(x64, r64, m_full, peak=p),
        "ssim": ssim(x64, r64, m_full, peak=p),
        "nrmse": nrmse(x64, r64, m_full),
        "peak": p,
        "mask_voxels": int(np.prod(r64.shape)) if m is None else int(m.sum()),
        "mask": label,
        "shape": list(r64.shape),
    }
