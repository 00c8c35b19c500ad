"""Synthetic MRI contrasts from tissue probability maps.

So that T2-weighted, FLAIR-like and PD-like inputs are not out of
distribution for a network trained on one T1 template, training images are
re-synthesised per patch: grey and white matter get (random) intensities
weighted by their probability maps (partial volume preserved), and the rest of
the head (CSF, skull, scalp) gets a random piecewise-linear remapping of its
T1 intensity, so CSF can turn bright (T2), dark (FLAIR) or anything between.
Everything is voxel-wise, so it can be applied to a crop.
"""

from __future__ import annotations

import numpy as np

CONTRASTS = ("t1", "t2", "flair", "pd", "random")

#: T1 intensity (normalised to its robust max) at the knots of the remapping.
KNOTS = np.array([0.0, 0.15, 0.3, 0.5, 0.75, 1.0, 1.6])
#: Preset tissue intensities: (grey matter, white matter, values of the remapping at KNOTS).
PRESETS: dict[str, tuple[float, float, tuple[float, ...]]] = {
    "t2": (0.55, 0.35, (0.05, 1.0, 0.9, 0.6, 0.5, 0.6, 0.7)),
    "flair": (0.75, 0.5, (0.02, 0.1, 0.15, 0.4, 0.55, 0.7, 0.8)),
    "pd": (0.85, 0.7, (0.05, 0.95, 0.9, 0.8, 0.8, 0.85, 0.9)),
}


def contrast_parameters(kind: str, rng: np.random.Generator | None,
                        jitter: float = 0.1) -> tuple[float, float, np.ndarray]:
    """Grey, white and remapping values of a contrast, with optional jitter.

    ``rng=None`` gives the preset exactly (used for validation).
    """
    if kind == "random":
        if rng is None:
            rng = np.random.default_rng(0)
        values = rng.uniform(0.0, 1.0, KNOTS.size)
        values[0] = rng.uniform(0.0, 0.1)  # air stays dark
        return float(rng.uniform(0.1, 1.0)), float(rng.uniform(0.1, 1.0)), values
    gm, wm, vals = PRESETS[kind]
    values = np.array(vals, dtype=np.float64)
    if rng is not None and jitter > 0:
        gm += rng.uniform(-jitter, jitter)
        wm += rng.uniform(-jitter, jitter)
        values = np.clip(values + rng.uniform(-jitter, jitter, values.size), 0.0, None)
    return float(gm), float(wm), values


def synthesize(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, kind: str,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """A contrast of the head from its T1 (normalised to ~1) and tissue maps (0..1).

    Args:
        t1: T1 intensities normalised by their robust maximum.
        gm: Grey-matter probability (0..1).
        wm: White-matter probability (0..1).
        kind: One of :data:`CONTRASTS`; ``t1`` returns ``t1`` unchanged.
        rng: Random generator for jitter (None: the exact preset).

    Example:
        >>> t1 = np.array([0.0, 0.2, 1.0]); z = np.zeros(3)
        >>> [round(float(v), 2) for v in synthesize(t1, z, np.array([0.0, 0.0, 1.0]), "t2")]
        [0.05, 0.97, 0.35]
    """
    if kind == "t1":
        return np.asarray(t1, dtype=np.float32)
    g, w, values = contrast_parameters(kind, rng)
    rest = np.clip(1.0 - gm - wm, 0.0, 1.0)
    other = np.interp(np.asarray(t1, dtype=np.float64), KNOTS, values)
    return (gm * g + wm * w + rest * other).astype(np.float32)
