"""Synthetic heads from a label map (mrisr.training.labelheads) and their place in the patch sampler."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrisr.training import labelheads as lh
from mrisr.training import wholehead
from mrisr.training.config import ConfigError, config_from_dict
from mrisr.training.data import PatchSampler, Subject, head_mask


def _phantom(shape=(40, 96, 40)) -> tuple[np.ndarray, np.ndarray]:
    """A ball of brain (white matter 2 inside grey matter 1) in a shell of scalp: the brain labels and a T1."""
    grid = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij"))
    r = np.sqrt((grid ** 2).sum(0))
    brain = np.where(r < 9, 2, np.where(r < 13, 1, 0)).astype(np.uint8)
    t1 = np.where(r < 9, 80.0, np.where(r < 13, 60.0, np.where(r < 15, 10.0, np.where(r < 17, 90.0, 0.0))))
    return brain, t1.astype(np.float32)


def test_head_labels_split_the_rest_of_the_head_by_t1_intensity():
    brain, t1 = _phantom()
    labels, prior = lh.head_labels(brain, t1, t1 > 5)
    assert set(np.unique(labels[(t1 == 10.0)])) == {lh.DARK}
    assert set(np.unique(labels[(t1 == 90.0)])) == {lh.BRIGHT}
    assert (labels[t1 == 0] == 0).all() and (labels[brain > 0] == brain[brain > 0]).all()
    assert prior[2] == pytest.approx(1.0) and prior[1] == pytest.approx(0.75)
    assert prior[lh.DARK] == pytest.approx(0.125) and prior[lh.BRIGHT] == pytest.approx(1.125)


def test_sample_means_is_trilinear_interpolation_with_air_outside():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, lh.N_LABELS, (7, 6, 5)).astype(np.uint8)
    means = rng.uniform(0, 2, lh.N_LABELS).astype(np.float32)
    means[0] = 0.0
    points = rng.uniform(-1.5, 7.5, (3, 200)).astype(np.float32)
    want = ndimage.map_coordinates(np.pad(means[labels], 2), points + 2, order=1, mode="constant")
    np.testing.assert_allclose(lh.sample_means(labels, means, points), want, atol=1e-5)


def test_label_means_keep_air_at_zero_bone_dark_and_fat_in_range():
    prior = np.full(lh.N_LABELS, 0.8, np.float32)
    for seed in range(40):
        m = lh.label_means(prior, np.random.default_rng(seed))
        assert m[0] == 0.0 and 0 <= m[lh.DARK] <= 0.2 and 0 <= m[lh.BRIGHT] <= 3.0 and (m >= 0).all()


def _label_sampler(holdout: bool = True, **degradation) -> PatchSampler:
    cfg = config_from_dict({"data": {"holdout_axis": 1, "holdout_fraction": 0.4, "wholehead_dir": "unused",
                                     "label_heads_probability": 1.0, "normalisation": "foreground_median"},
                            "degradation": {"kinds": {"thick": 1.0}, "thick_factor": [2.0, 3.0],
                                            "brighten_probability": 0.0, **degradation},
                            "train": {"patch": 8, "batch": 2}})
    brain, t1 = _phantom()
    img = t1 / 80.0
    subj = Subject(img, None, None, head_mask(img), "labels", holdout=holdout, group="labels")
    subj.labels, subj.prior = lh.head_labels(brain, t1, t1 > 5)
    other = Subject(np.zeros_like(img), None, None, np.ones(img.shape, bool), "template")
    return PatchSampler(cfg, [other, subj])


def test_label_heads_are_drawn_with_their_probability_and_reproducibly():
    sampler = _label_sampler()
    x, y, _ = sampler.batch(5)
    x2, y2, _ = sampler.batch(5)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert y.max() > 0.1  # from the phantom, never the all-zero template subject
    assert np.isfinite(x).all() and (y >= 0).all()


@pytest.mark.parametrize("warp", [0.0, 1.0])
def test_label_heads_never_read_the_held_out_slab(monkeypatch, warp):
    def means(prior, rng):  # a label that exists only in the held-out slab, 20x brighter than the rest
        m = np.ones(lh.N_LABELS, np.float32)
        m[0], m[7] = 0.0, 20.0
        return m

    monkeypatch.setattr(lh, "label_means", means)
    peaks = {}
    for holdout in (True, False):
        sampler = _label_sampler(holdout, warp_probability=warp, rotation=20.0, elastic=1.0)
        subj = sampler.subjects[1]
        slab = subj.labels[:, 57:, :]  # the held-out slab: the last 40 % of axis 1
        slab[slab > 0] = 7
        peaks[holdout] = max(float(sampler.example(np.random.default_rng(s))[1].max()) for s in range(30))
    assert peaks[True] < 5.0 < peaks[False]  # the second is the proof that the test could see it


def test_label_heads_need_the_whole_head_folder_and_no_reference():
    with pytest.raises(ConfigError, match="label_heads_probability"):
        config_from_dict({"data": {"label_heads_probability": 0.3}})
    with pytest.raises(ConfigError, match="label_heads_probability"):
        config_from_dict({"data": {"label_heads_probability": 1.5, "wholehead_dir": "w"}})
    with pytest.raises(ConfigError, match="no reference"):
        config_from_dict({"data": {"label_heads_probability": 0.3, "wholehead_dir": "w", "reference": "t1"}})


def test_the_label_map_is_fetched_only_when_used_pinned_and_licensed():
    off = config_from_dict({"data": {"wholehead_dir": "w"}}).data
    on = config_from_dict({"data": {"wholehead_dir": "w", "label_heads_probability": 0.2}}).data
    assert wholehead.LABELS not in wholehead.sources_for(off)
    assert wholehead.sources_for(on)[-1] is wholehead.LABELS
    assert len(wholehead.LABELS.sha256) == 64 and "Apache" in wholehead.LABELS.licence
    assert "MNI" in wholehead.LABELS.licence and wholehead.LABELS.holdout
