"""Synthetic heads from a label map, in the spirit of SynthSR: sharp boundaries, random contrasts.

The other training volumes are averages of many brains, smooth where a single
subject's scan has sharp tissue boundaries. Here every crop is *drawn* from a
label map instead: each label gets its own random intensity, a smooth random
texture, and a small random blur (the partial volume of the fine grid), so
boundaries are as sharp as a real 1 mm scan and the contrast is new each time.

The label map (:func:`head_labels`) is the 32-class brain segmentation that
melage ships for the ICBM152 2009a template (``LABELS``: labels 1..31; it is on
the voxel grid of the 2009a whole-head T1), with the rest of the head split by
that T1's intensity into three extra-cerebral classes: dark (bone, air
cavities, outer CSF), soft tissue (muscle, skin) and bright (fat, marrow).

Per crop (:func:`label_means`, :func:`random_head`): half the time each label's mean is
its T1 mean jittered (a T1-like head with random fat 1-3x white matter), half
the time it is uniform in [0, 1] (any contrast, as SynthSR draws them); the dark
class stays near 0 (bone is dark in almost every sequence) and air is 0.

Example:
    >>> labels = np.zeros((4, 4, 4), np.uint8); labels[1:3, 1:3, 1:3] = 2
    >>> means = np.zeros(N_LABELS, np.float32); means[2] = 0.7
    >>> image = finish(means[labels], texture=0.0, blur=0.0, rng=np.random.default_rng(0))
    >>> round(float(image[1, 1, 1]), 6), float(image[0, 0, 0])
    (0.7, 0.0)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Brain labels of the melage segmentation (1..31); 0 is everything else.
BRAIN_LABELS = 31
#: The extra-cerebral classes :func:`head_labels` adds, by T1 intensity relative to white matter.
DARK, SOFT, BRIGHT = 32, 33, 34
N_LABELS = 35
#: White matter in the melage segmentation (left, right): the T1's reference intensity.
WHITE_MATTER = (2, 19)
#: T1 / white-matter thresholds between the dark, soft and bright extra-cerebral classes.
SOFT_FROM, BRIGHT_FROM = 0.3, 0.8


def head_labels(brain: np.ndarray, t1: np.ndarray, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label map of a whole head and each label's mean T1 (relative to white matter).

    Args:
        brain: Brain labels 0..31 (0 outside the brain), on the grid of ``t1``.
        t1: The head's T1 intensities.
        head: The head mask (True inside the head).

    Returns:
        ``(labels, prior)``: uint8 labels 0..34 (0 air, 1..31 brain, 32..34 the extra-cerebral classes
        :data:`DARK`, :data:`SOFT`, :data:`BRIGHT`), and float32 ``prior[label]``, the label's mean T1 / white matter.

    Example:
        >>> brain = np.zeros((6, 1, 1), np.uint8); brain[:2] = 2
        >>> t1 = np.array([80, 80, 10, 50, 90, 0], np.float32).reshape(6, 1, 1)
        >>> labels, prior = head_labels(brain, t1, t1 > 5)
        >>> labels.ravel().tolist(), [round(float(prior[k]), 3) for k in (2, DARK, SOFT, BRIGHT)]
        ([2, 2, 32, 33, 34, 0], [1.0, 0.125, 0.625, 1.125])
    """
    brain = np.asarray(brain).astype(np.uint8)
    wm = float(np.median(t1[np.isin(brain, WHITE_MATTER)])) if np.isin(brain, WHITE_MATTER).any() else 1.0
    ratio = np.asarray(t1, np.float32) / np.float32(max(wm, 1e-12))
    labels = np.where(brain > 0, np.minimum(brain, BRAIN_LABELS), 0).astype(np.uint8)
    outside = head & (labels == 0)
    labels[outside] = np.where(ratio[outside] < SOFT_FROM, DARK, np.where(ratio[outside] < BRIGHT_FROM, SOFT, BRIGHT))
    counts = np.bincount(labels.ravel(), minlength=N_LABELS)
    sums = np.bincount(labels.ravel(), weights=ratio.ravel(), minlength=N_LABELS)
    prior = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32)
    prior[0] = 0.0
    return labels, prior


def label_means(prior: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random mean intensities per label (white matter ~1 in the T1-like half).

    Example:
        >>> prior = np.linspace(0, 1, N_LABELS).astype(np.float32)
        >>> m = label_means(prior, np.random.default_rng(0))
        >>> m.shape, float(m[0]), bool(m[DARK] <= 0.2), bool((m >= 0).all())
        ((35,), 0.0, True, True)
    """
    if rng.random() < 0.5:  # T1-like: each label near its own mean, fat 1-3x white matter
        means = prior * np.exp(rng.normal(0.0, 0.15, prior.size))
        means[BRIGHT] = rng.uniform(1.0, 3.0)
    else:  # any contrast
        means = rng.uniform(0.0, 1.0, prior.size)
        means[BRIGHT] = rng.uniform(0.0, 2.5)
    means[DARK] = rng.uniform(0.0, 0.2)
    means[0] = 0.0
    return means.astype(np.float32)


def sample_means(labels: np.ndarray, means: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The image ``means[labels]`` read at voxel coordinates ``points`` (3, ...) by trilinear interpolation
    (a boundary between labels becomes a one-voxel ramp: partial volume), air (0) outside ``labels``.

    Example:
        >>> labels = np.zeros((2, 1, 1), np.uint8); labels[1] = 1
        >>> means = np.array([0.0, 1.0], np.float32)
        >>> sample_means(labels, means, np.array([[0.0, 0.25, 1.0, 1.5], [0] * 4, [0] * 4])).tolist()
        [0.0, 0.25, 1.0, 0.5]
    """
    points = np.asarray(points, np.float32)
    base = np.floor(points).astype(np.int64)
    frac = points - base
    out = np.zeros(points.shape[1:], np.float32)
    shape = np.array(labels.shape).reshape((3,) + (1,) * (points.ndim - 1))
    for corner in np.ndindex(2, 2, 2):
        c = np.array(corner).reshape((3,) + (1,) * (points.ndim - 1))
        idx = base + c
        inside = np.all((idx >= 0) & (idx < shape), axis=0)
        safe = np.where(inside, idx, 0)
        value = np.where(inside, means[labels[safe[0], safe[1], safe[2]]], 0.0)
        weight = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=0)
        out += (weight * value).astype(np.float32)
    return out


def finish(image: np.ndarray, texture: float, blur: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` with a smooth random multiplicative texture of relative size ``texture`` (none in air)
    and a Gaussian blur of ``blur`` voxels (partial volume at the fine grid), float32 >= 0."""
    image = np.array(image, dtype=np.float32)
    if texture > 0:
        field = ndimage.gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), 1.0)
        field /= max(float(field.std()), 1e-6)
        image *= 1.0 + np.float32(texture) * field
    if blur > 0.05:
        image = ndimage.gaussian_filter(image, blur, mode="nearest")
    return np.clip(image, 0.0, None).astype(np.float32)


def random_head(labels: np.ndarray, prior: np.ndarray, points: np.ndarray, whole: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random synthetic head read from the label map ``labels`` at ``points`` (:func:`sample_means`;
    texture 0-8 %, blur 0.2-0.5 voxel), and the same label means on ``whole`` (a strided label map of
    the whole volume, for its intensity scale).

    Example:
        >>> labels = np.full((8, 8, 8), 2, np.uint8); prior = np.ones(N_LABELS, np.float32)
        >>> points = np.stack(np.meshgrid(*[np.arange(4.0) + 2] * 3, indexing="ij"))
        >>> crop, whole = random_head(labels, prior, points, labels, np.random.default_rng(1))
        >>> crop.shape, whole.shape, bool(crop.min() >= 0)
        ((4, 4, 4), (8, 8, 8), True)
    """
    means = label_means(prior, rng)
    image = sample_means(labels, means, points)
    return finish(image, float(rng.uniform(0.0, 0.08)), float(rng.uniform(0.2, 0.5)), rng), means[whole]
