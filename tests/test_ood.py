"""Input checks (:mod:`mrisr.trust.ood`): plain warnings when an input is unlike the training data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrisr.inference.model_card import example_card
from mrisr.pipeline import upscale as pipeline
from mrisr.trust.ood import MIN_VOXELS, assess_input, noise_sigma
from mrisr.volume import Volume

CARD = example_card()  # trained on 1 to 3 mm inputs, factors 1 to 3




def head_phantom(shape=(40, 48, 40), spacing=2.0, noise=0.01, seed=0) -> np.ndarray:
    """A smooth head-like phantom (a small head, ~70 x 86 x 70 mm) centred in the field of view.

    Scalp, skull, CSF, grey and white matter and two ventricles as nested
    ellipsoids, blurred by 1 mm, with Rician noise of ``noise`` times the white
    matter intensity (800).
    """
    idx = np.indices(shape, dtype=np.float32)
    centre = (np.asarray(shape, np.float32) - 1) / 2
    x, y, z = ((idx[i] - centre[i]) * spacing for i in range(3))

    def ellipsoid(a, b, c, dx=0.0):
        return ((x - dx) / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 <= 1

    img = np.zeros(shape, np.float32)
    for (a, b, c), value in [((35, 43, 35), 0.7), ((32, 40, 32), 0.1), ((30, 38, 30), 0.3),
                             ((28, 36, 28), 0.6), ((22, 29, 21), 1.0)]:
        img[ellipsoid(a, b, c)] = value
    img[ellipsoid(4, 11, 5, dx=-5) | ellipsoid(4, 11, 5, dx=5)] = 0.3
    img = ndimage.gaussian_filter(img, 1.0 / spacing)
    rng = np.random.default_rng(seed)
    img = np.hypot(img + rng.normal(0, noise, shape), rng.normal(0, noise, shape))
    return (800 * img).astype(np.float32)


def test_smooth_head_phantom_at_2mm_raises_no_warning():
    a = assess_input(head_phantom(), (2, 2, 2), (1, 1, 1), CARD)
    assert a.checked and a.warnings == []
    assert 0.2 < a.foreground_fraction < 0.6 and a.negative_fraction == 0 and a.levels >= 16
    assert a.noise_relative < 0.03 and a.structure < 0.2


def test_half_millimetre_input_warns():
    a = assess_input(head_phantom((80, 96, 80), 1.0), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), CARD)
    assert len(a.warnings) == 1 and "input voxel size (0.5 x 0.5 x 0.5 mm)" in a.warnings[0]


@pytest.mark.parametrize("make", [
    lambda rng: rng.random((24, 24, 24)),              # uniform noise
    lambda rng: rng.normal(100, 20, (24, 24, 24)),     # Gaussian noise around an offset
    lambda rng: rng.normal(0, 1, (24, 24, 24)),        # zero-mean noise (also negative)
])
def test_random_noise_input_warns(make):
    a = assess_input(make(np.random.default_rng(0)).astype(np.float32), (2, 2, 2), (1, 1, 1), CARD)
    assert any("little spatial structure" in w for w in a.warnings), a.warnings


def test_each_intensity_rule_fires_alone():
    phantom = head_phantom()
    noisy = assess_input(head_phantom(noise=0.12)).warnings
    assert len(noisy) == 1 and "very noisy" in noisy[0]
    signed = assess_input(phantom - 400).warnings  # e.g. a difference image
    assert len(signed) == 1 and "magnitude image" in signed[0]
    labels = assess_input(np.round(phantom / 200)).warnings
    assert len(labels) == 1 and "label map" in labels[0]
    empty = np.zeros_like(phantom)
    empty[3, 4, 5], empty[3, 4, 6] = 1000.0, 5.0
    warnings = assess_input(empty).warnings
    assert len(warnings) == 1 and "almost empty" in warnings[0]


def test_noise_estimate():
    rng = np.random.default_rng(2)
    assert noise_sigma(rng.normal(50, 3.0, (30, 30, 30))) == pytest.approx(3.0, rel=0.05)
    # Anatomy reads as little noise (edges are few); noise added to it is measured.
    clean = head_phantom(noise=0.0)
    assert noise_sigma(clean, clean > 240) < 0.015 * 800
    noisy = head_phantom(noise=0.05)
    assert noise_sigma(noisy, noisy > 240) == pytest.approx(0.05 * 800, rel=0.2)
    assert np.isnan(noise_sigma(np.zeros((2, 2, 2))))


def test_small_volumes_are_not_judged():
    tiny = np.random.default_rng(0).random((10, 10, 10)).astype(np.float32)
    assert tiny.size < MIN_VOXELS
    a = assess_input(tiny)
    assert not a.checked and a.warnings == [] and a.to_dict()["noise_sigma"] is None


def test_upscale_reports_input_checks_for_the_network_only():
    import torch

    from mrisr.archs.recnn import ReCNN
    from mrisr.inference.model_card import LoadedModel

    torch.manual_seed(0)
    model = LoadedModel("tiny", example_card(name="tiny"), ReCNN(3, 4, cond_dim=3).eval(), "ab" * 32, None)
    kw = dict(method="cnn", model=model, device="cpu", precision="fp32", threads=1)
    clean = pipeline.upscale_volume(Volume(head_phantom((24, 28, 24), 3.0), np.diag([3.0, 3.0, 3.0, 1.0])),
                                    spacing=(1.5, 3, 3), **kw).report
    assert clean.warnings == [] and clean.ood["checked"] and clean.ood["warnings"] == []
    noise = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    noisy = pipeline.upscale_volume(Volume(noise, np.diag([0.5, 0.5, 0.5, 1.0])), factor=(2, 1, 1), **kw).report
    assert any("spatial structure" in w for w in noisy.warnings)
    assert any("input voxel size" in w for w in noisy.warnings)
    assert noisy.to_dict()["ood"]["structure"] > 0.5
    spline = pipeline.upscale_volume(Volume(noise, np.eye(4)), factor=(2, 1, 1), method="spline").report
    assert spline.ood is None and spline.warnings == []
