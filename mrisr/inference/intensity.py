"""Robust per-volume intensity normalisation shared by inference and training.

The network sees ``data / scale`` and the engine multiplies its output back by
``scale``, so results stay in the input's units. Training normalises its
volumes with the same function, so the two agree by construction. A model's
card names its method (:data:`NORMALISATIONS`):

- ``robust_scale``: the 99th percentile of the foreground (models up to
  recnn-d8w32 2.1.0). The brightest tissue sets it: on a whole head the
  scalp fat, so white matter sits at ~0.65 where a skull-stripped brain puts
  it near 0.8.
- ``foreground_median``: the median of the foreground, set by the bulk of the
  tissue, which no small bright structure can hijack (white matter at ~1.2 on
  skull-stripped and whole heads alike).

Both are proportional to the image: ``scale(a * x) == a * scale(x)`` for
``a > 0``, so a model's result is equivariant to a global intensity scale.

Example:
    >>> x = np.zeros((10, 10, 10), np.float32); x[2:8, 2:8, 2:8] = 300.0; x[4, 4, 4] = 3000.0
    >>> normalising_scale(x, {"method": "foreground_median"})
    300.0
"""

from __future__ import annotations

import numpy as np

#: Percentile of the foreground intensities that maps to 1.0.
SCALE_PERCENTILE = 99.0
#: Largest number of voxels used to estimate the scale (a strided subsample).
_MAX_SAMPLES = 2_000_000


def robust_scale(data: np.ndarray) -> float:
    """Intensity that maps to 1.0: the 99th percentile of the foreground.

    Foreground is every voxel above the mean of the (absolute) image, a cheap
    head/background split that works for T1, T2, FLAIR and PD magnitude images.
    Falls back to the maximum absolute value, then to 1.0 for an all-zero image.

    Example:
        >>> x = np.zeros((10, 10, 10), np.float32); x[2:8, 2:8, 2:8] = 300.0
        >>> robust_scale(x)
        300.0
    """
    flat = np.abs(np.asarray(data, dtype=np.float32)).ravel()
    step = max(1, flat.size // _MAX_SAMPLES)
    sample = flat[::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 1.0
    fg = sample[sample > sample.mean()]
    scale = float(np.percentile(fg, SCALE_PERCENTILE)) if fg.size else float(sample.max())
    return scale if scale > 0 else 1.0


def _foreground(data: np.ndarray) -> np.ndarray:
    """Finite absolute values above their mean (strided subsample), or all finite ones."""
    flat = np.abs(np.asarray(data, dtype=np.float32)).ravel()
    sample = flat[::max(1, flat.size // _MAX_SAMPLES)]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return sample
    fg = sample[sample > sample.mean()]
    return fg if fg.size else sample


def foreground_median(data: np.ndarray) -> float:
    """Intensity that maps to 1.0: the median of the foreground (voxels above the image mean).

    Falls back to 1.0 for an all-zero or non-finite image.

    Example:
        >>> x = np.zeros((10, 10, 10), np.float32); x[2:8, 2:8, 2:8] = 200.0; x[2:8, 2:8, 2] = 400.0
        >>> foreground_median(x)
        200.0
    """
    fg = _foreground(data)
    scale = float(np.median(fg)) if fg.size else 0.0
    return scale if scale > 0 else 1.0


#: Normalisation methods a model card may name, and the function giving each one's scale.
NORMALISATIONS = {"robust_scale": robust_scale, "foreground_median": foreground_median}
#: Method of cards that name none (the method of every model before there was a choice).
LEGACY_NORMALISATION = "robust_scale"


def normalising_scale(data: np.ndarray, normalisation: dict | str | None = None) -> float:
    """The scale ``data`` is divided by for a model whose card names ``normalisation``
    (a card's ``{"method": ...}`` object, a method name, or None for the legacy method).

    Raises:
        MrisrError: for an unknown method, naming the known ones.

    Example:
        >>> x = np.full((4, 4, 4), 5.0, np.float32)
        >>> normalising_scale(x, "robust_scale"), normalising_scale(x, {"method": "foreground_median"})
        (5.0, 5.0)
    """
    from mrisr.errors import look_up_option

    method = normalisation.get("method") if isinstance(normalisation, dict) else normalisation
    method = look_up_option(method or LEGACY_NORMALISATION, tuple(NORMALISATIONS), "normalisation")
    return float(NORMALISATIONS[method](data))
