"""Guided training pairs: same-contrast whole-head pairs, and a reference misregistered like a real one."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mrisr.training.config import config_from_dict
from mrisr.training.data import PatchSampler, Subject, _guided_partners, head_mask
from test_training import _blobs


def _cfg(**deg):
    base = {"kinds": {"iso": 1.0}, "iso_factor": [2.0, 2.0], "noise_probability": 0.0, "bias_probability": 0.0,
            "reference_shift": 0.0, "reference_blur": [0.0, 0.0], "reference_noise": [0.0, 0.0],
            "gamma": [1.0, 1.0], "scale": [1.0, 1.0], "flips": False, "permute": False}
    base.update(deg)
    return config_from_dict({"data": {"reference": "t1", "contrasts": {"t1": 1.0}, "holdout_axis": 2},
                             "model": {"depth": 3, "width": 8},
                             "train": {"patch": 12, "batch": 2, "validation_cases": ["iso2-box"]},
                             "degradation": base})


def _subject(name: str = "icbm2009c_t1") -> Subject:
    texture = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(40, 40, 56)), 1.0)
    t1 = (_blobs((40, 40, 56)) / 100.0 * (1 + 2 * texture)).clip(0, None).astype(np.float32)
    return Subject(t1, None, None, head_mask(t1), name, holdout=False, group="wholehead")


def test_wholehead_t1_is_its_own_reference_t2_gets_its_t1_and_flair_is_left_out() -> None:
    t1, t2, flair = _subject("icbm2009c_t1"), _subject("icbm2009c_t2"), _subject("swane_mean_flair")
    t2.image = t2.image ** 2
    out = _guided_partners([t1, t2, flair])
    assert [s.name for s in out] == ["icbm2009c_t1", "icbm2009c_t2"]
    assert out[0].reference is t1.image and out[1].reference is t1.image


def test_uncorrupted_same_contrast_pair_is_the_target_itself() -> None:
    subj = _subject()
    subj.reference = subj.image
    x, y, _ = PatchSampler(_cfg(), [subj]).batch(0)
    np.testing.assert_array_equal(x[:, 1], y[:, 0])  # reference channel == target, voxel for voxel
    assert not np.allclose(x[:, 0], y[:, 0])          # the input is the degraded one


def test_rigid_misregistration_moves_the_reference_by_about_the_drawn_amount() -> None:
    subj = _subject()
    subj.reference = subj.image
    exact = PatchSampler(_cfg(reference_rotation=1e-6), [subj]).batch(3)  # the warped path, no movement
    np.testing.assert_allclose(exact[0][:, 1], exact[1][:, 0], atol=1e-4)
    x, y, _ = PatchSampler(_cfg(reference_shift=2.0, reference_rotation=2.0, reference_elastic=0.5),
                           [subj]).batch(3)
    err = np.abs(x[:, 1] - y[:, 0]).mean() / np.abs(y[:, 0]).mean()
    exact_err = np.abs(exact[0][:, 1] - exact[1][:, 0]).mean() / np.abs(exact[1][:, 0]).mean()
    assert err > 0.002 and err > 50 * exact_err and err < 0.5  # moved, but still the same anatomy
    np.testing.assert_array_equal(x, PatchSampler(_cfg(reference_shift=2.0, reference_rotation=2.0,
                                                       reference_elastic=0.5), [subj]).batch(3)[0])


def test_coarser_reference_is_smoother() -> None:
    subj = _subject()
    subj.reference = subj.image
    x, y, _ = PatchSampler(_cfg(reference_resolution=[1.6, 1.6]), [subj]).batch(1)
    ref, truth = x[:, 1], y[:, 0]

    def grad(v):
        return float(np.abs(np.diff(v, axis=-1)).mean())

    assert grad(ref) < 0.95 * grad(truth)
    assert abs(ref.mean() - truth.mean()) < 0.1 * truth.mean()


def test_reference_follows_the_truths_warp() -> None:
    subj = _subject()
    subj.reference = subj.image
    cfg = _cfg(warp_probability=1.0, rotation=20.0, zoom=[0.9, 1.1], reference_rotation=1e-6)
    x, y, _ = PatchSampler(cfg, [subj]).batch(2)
    np.testing.assert_allclose(x[:, 1], y[:, 0], atol=1e-3)


def test_the_v2_candidate_config_loads_with_its_reference_corruptions() -> None:
    from pathlib import Path

    from mrisr.training.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "guided-v2-train.toml")
    d = cfg.degradation
    assert cfg.data.reference == "t1" and cfg.data.normalisation == "foreground_median"
    assert (d.reference_rotation, d.reference_elastic, tuple(d.reference_resolution)) == (1.15, 0.5, (0.8, 1.2))
    assert cfg.train.threads == 1 and cfg.train.steps == 1800


def test_reference_has_its_own_intensity_jitter_and_legacy_configs_share_the_targets() -> None:
    subj = _subject()
    subj.reference = subj.image
    plain = PatchSampler(_cfg(), [subj]).batch(0)  # no jitter anywhere: the reference is the target's crop
    jittered = {"gamma": [0.7, 1.4], "scale": [0.5, 2.0]}
    x, y, _ = PatchSampler(_cfg(**jittered, reference_gamma=[1.0, 1.0], reference_scale=[1.0, 1.0]),
                           [subj]).batch(0)
    np.testing.assert_array_equal(x[:, 1], plain[1][:, 0])  # same crops, the reference left as read
    assert not np.allclose(y, plain[1], rtol=0.05)         # while the target was jittered
    legacy = PatchSampler(_cfg(**jittered), [subj]).batch(0)
    same = PatchSampler(_cfg(**jittered, reference_gamma=[0.7, 1.4], reference_scale=[0.5, 2.0]), [subj]).batch(0)
    np.testing.assert_array_equal(legacy[0], same[0])  # None means the target's ranges, draw for draw
    assert not np.allclose(legacy[0][:, 1], x[:, 1], rtol=0.05)
