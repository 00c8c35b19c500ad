"""Robust per-volume intensity normalisation shared by inference and training.

The network sees ``data / scale`` where ``scale`` is a high percentile of the
foreground; the engine multiplies its output back by ``scale`` so results stay
in the input's units. Training normalises its volumes with the same function,
so the two agree by construction.
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
