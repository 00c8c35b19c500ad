"""Is this input like what the model was trained on? Plain-language warnings.

The network was trained on magnitude brain images (T1-, T2-, FLAIR- and
PD-weighted, plus random tissue contrasts) degraded from 1 mm data, with
Rician noise up to 4 % of the robust scale. :func:`assess_input` measures a
few robust properties of the input (before any interpolation) and says, in
plain words, when the input lies outside that:

1. **Voxel size and factor** outside the model card's trained ranges
   (:func:`mrisr.inference.registry.range_warnings`; e.g. a 0.5 mm input when the
   model was trained on 1 mm and coarser).
2. **Not a magnitude image**: more than ``NEGATIVE_FRACTION`` (2 %) of the
   voxels are below ``-NEGATIVE_LEVEL`` (5 %) of the robust scale (phase,
   difference, z-scored or filtered data).
3. **Almost empty**: fewer than ``MIN_FOREGROUND`` (1 %) of the voxels are
   above ``FOREGROUND`` (10 %) of the robust scale (the threshold of the
   training head masks).
4. **A label map or mask**: fewer than ``MIN_LEVELS`` (16) distinct
   intensities in the foreground.
5. **Very noisy**: the noise sigma, estimated below, is above
   ``MAX_NOISE`` (8 %, twice the noisiest training data) of the robust scale.
6. **Brightest tissue far beyond training**: the 99.5th percentile of the
   foreground is above ``MAX_BRIGHT`` (6) times its median (training covers
   the templates' 1.3-2.9, with the brightest tissue boosted up to 2.5x).
7. **No spatial structure**: the noise sigma is above ``MAX_STRUCTURE``
   (50 %) of the standard deviation of the foreground intensities:
   neighbouring voxels are nearly unrelated, as in random noise.

Robust scale: :func:`mrisr.inference.intensity.robust_scale` (the 99th percentile of
the foreground, the intensity the network sees as 1.0).

Noise sigma: for each voxel axis ``k`` with at least 3 voxels, the second
difference ``d = x[i-1] - 2 x[i] + x[i+1]`` over tissue voxels (the three
voxels above ``TISSUE``, 30 %, of the robust scale: in the background,
magnitude noise is Rayleigh-distributed and would bias the estimate low); for white
noise of std sigma, ``d`` has std ``sqrt(6) sigma``, so
``sigma_k = 1.4826 MAD(d) / sqrt(6)``. Anatomy adds to every ``sigma_k``
(least along the axis that samples it finest), so the estimate is the
smallest ``sigma_k``. Spatially correlated noise (smoothed, or zero-filled
k-space) reads lower than it is.

The tissue peaks of the histogram are deliberately not tested: the model is
trained on random contrasts as well, and at 3 to 6 mm the peaks merge.
Volumes with fewer than ``MIN_VOXELS`` voxels are too small to judge: only
rule 1 applies to them.

Example:
    >>> rng = np.random.default_rng(0)
    >>> a = assess_input(rng.random((24, 24, 24)).astype(np.float32))
    >>> a.checked, any("structure" in w for w in a.warnings)
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mrisr.inference.intensity import foreground_median, robust_scale

#: Voxels above this fraction of the robust scale are foreground.
FOREGROUND = 0.1
#: Voxels above this fraction of the robust scale are tissue, where the noise is measured (the
#: magnitude noise of the background is Rayleigh-distributed and would bias it low).
TISSUE = 0.3
#: Warn when more than this fraction of voxels is below ``-NEGATIVE_LEVEL * scale``.
NEGATIVE_FRACTION = 0.02
NEGATIVE_LEVEL = 0.05
#: Warn when less than this fraction of the voxels is foreground.
MIN_FOREGROUND = 0.01
#: Warn when the foreground holds fewer distinct intensities than this.
MIN_LEVELS = 16
#: Warn when the noise sigma exceeds this fraction of the robust scale.
MAX_NOISE = 0.08
#: Warn when the noise sigma exceeds this fraction of the foreground's standard deviation.
MAX_STRUCTURE = 0.5
#: Warn when the brightest tissue (99.5th percentile of the foreground) exceeds this many times the
#: foreground median: training covers the templates' 1.3-2.9 with the brightest tissue boosted up to 2.5x.
MAX_BRIGHT = 6.0
#: Volumes smaller than this are not checked (too few voxels to judge).
MIN_VOXELS = 4096
#: Largest number of voxels used for the histogram measures (a strided subsample).
_MAX_SAMPLES = 2_000_000
_MAD_TO_SIGMA = 1.4826


@dataclass
class InputAssessment:
    """Measures of an input and the warnings they raise.

    Attributes:
        checked: Whether the intensity rules ran (False for tiny volumes).
        scale: Robust scale of the input (input units).
        foreground_fraction: Share of voxels above 10 % of the scale.
        negative_fraction: Share of voxels below -5 % of the scale.
        levels: Distinct foreground intensities (capped at 1000).
        noise_sigma: Estimated noise sigma (input units).
        noise_relative: ``noise_sigma / scale``.
        structure: ``noise_sigma`` over the foreground's standard deviation.
        bright_ratio: 99.5th percentile of the foreground over its median
            (:func:`mrisr.inference.intensity.foreground_median`): how far the brightest
            tissue (scalp fat, vessels, contrast agent) sits above the bulk.
        warnings: One plain sentence per rule that fired.
    """

    checked: bool = False
    scale: float | None = None
    foreground_fraction: float | None = None
    negative_fraction: float | None = None
    levels: int | None = None
    noise_sigma: float | None = None
    noise_relative: float | None = None
    structure: float | None = None
    bright_ratio: float | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready copy (floats rounded to 6 digits).

        Example:
            >>> InputAssessment().to_dict()["checked"]
            False
        """
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _subsample(data: np.ndarray) -> np.ndarray:
    flat = np.asarray(data, dtype=np.float32).ravel()
    sample = flat[::max(1, flat.size // _MAX_SAMPLES)]
    return sample[np.isfinite(sample)]


def noise_sigma(data: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Noise std from the MAD of second differences, least over the voxel axes.

    Args:
        data: 3D volume.
        mask: Voxels to use (default: all). A second difference is used where
            its centre voxel and both neighbours are in the mask.

    Returns:
        The estimate in the data's units (``nan`` when no axis has 3 voxels
        or no second difference lies in the mask).

    Example:
        >>> x = np.random.default_rng(1).normal(0, 2.0, (40, 40, 40))
        >>> round(noise_sigma(x), 1)
        2.0
    """
    x = np.asarray(data, dtype=np.float32)
    m = np.ones(x.shape, bool) if mask is None else np.asarray(mask, bool)
    best = math.nan
    for k in range(3):
        n = x.shape[k]
        if n < 3:
            continue
        def part(a: np.ndarray, lo: int, k: int = k, n: int = n) -> np.ndarray:
            index: list[slice] = [slice(None)] * 3
            index[k] = slice(lo, lo + n - 2)  # voxels lo .. lo + n - 3 along axis k
            return a[tuple(index)]
        keep = part(m, 0) & part(m, 1) & part(m, 2)
        if not keep.any():
            continue
        d = (part(x, 0) - 2 * part(x, 1) + part(x, 2))[keep].astype(np.float64)
        d = d[::max(1, d.size // _MAX_SAMPLES)]
        sigma = _MAD_TO_SIGMA * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(6.0)
        best = sigma if math.isnan(best) else min(best, sigma)
    return best


def _pct(v: float) -> str:
    return f"{100 * v:.3g} %"


def assess_input(data: np.ndarray, input_spacing: Sequence[float] | None = None,
                 output_spacing: Sequence[float] | None = None, card: Any = None) -> InputAssessment:
    """Measure an input (3D, before interpolation) and warn where it is unlike the training data.

    Args:
        data: The input volume (3D; for a 4D series pass one volume).
        input_spacing, output_spacing: Voxel sizes in mm, for the range rules.
        card: The model's :class:`~mrisr.inference.model_card.ModelCard`; with both
            spacings, its trained ranges are checked
            (:func:`mrisr.inference.registry.range_warnings`).

    Returns:
        The :class:`InputAssessment` (``warnings`` in plain language).
    """
    out = InputAssessment()
    if card is not None and input_spacing is not None and output_spacing is not None:
        from mrisr.inference.registry import range_warnings

        out.warnings += range_warnings(card, input_spacing, output_spacing)
    x = np.asarray(data, dtype=np.float32)
    if x.ndim != 3 or x.size < MIN_VOXELS:
        return out
    out.checked = True
    sample = _subsample(x)
    scale = float(robust_scale(x))
    out.scale = scale
    out.negative_fraction = float(np.mean(sample < -NEGATIVE_LEVEL * scale))
    fg_sample = sample[sample > FOREGROUND * scale]
    out.foreground_fraction = float(fg_sample.size / max(sample.size, 1))
    out.levels = int(np.unique(fg_sample[:200_000]).size) if fg_sample.size else 0
    out.levels = min(out.levels, 1000)
    if fg_sample.size:
        out.bright_ratio = float(np.percentile(fg_sample, 99.5) / foreground_median(x))
    sigma = noise_sigma(x, x > TISSUE * scale)
    if not math.isnan(sigma):
        out.noise_sigma = sigma
        out.noise_relative = sigma / scale
        fg_std = float(np.std(fg_sample, dtype=np.float64)) if fg_sample.size > 1 else 0.0
        out.structure = sigma / fg_std if fg_std > 0 else None
    w = out.warnings
    if out.negative_fraction > NEGATIVE_FRACTION:
        w.append(f"{_pct(out.negative_fraction)} of the voxels are clearly negative: this does not look like a "
                 "magnitude image (the model was trained on T1, T2, FLAIR and PD magnitude images); phase, "
                 "difference or normalised images may come out wrong.")
    if out.foreground_fraction < MIN_FOREGROUND:
        w.append(f"only {_pct(out.foreground_fraction)} of the voxels carry signal (above 10 % of the image's "
                 "robust maximum): the image is almost empty, or a few very bright voxels dominate it.")
    elif out.levels < MIN_LEVELS:
        w.append(f"the image holds only {out.levels} distinct intensities: it looks like a label map or a mask, "
                 "not an MR image; the network is meant for MR images.")
    if out.bright_ratio is not None and out.bright_ratio > MAX_BRIGHT:
        w.append(f"the brightest tissue is {out.bright_ratio:.1f} times the median intensity of the head (training "
                 f"covers up to about {MAX_BRIGHT:g}x): bright structures far beyond the training contrast may be "
                 "over-sharpened; compare with --method spline or use --consistency.")
    if out.structure is not None and out.structure > MAX_STRUCTURE:
        w.append(f"neighbouring voxels are nearly unrelated (estimated noise {_pct(out.structure)} of the "
                 "intensity spread): the image has little spatial structure, like random noise; the network "
                 "will not add real detail to it.")
    elif out.noise_relative is not None and out.noise_relative > MAX_NOISE:
        w.append(f"the image is very noisy (estimated noise sigma {_pct(out.noise_relative)} of its robust "
                 f"maximum; the model was trained with at most 4 %): the network may sharpen noise into "
                 "false detail.")
    return out


__all__ = ["assess_input", "noise_sigma", "InputAssessment", "MAX_NOISE", "MAX_STRUCTURE", "MIN_VOXELS"]
