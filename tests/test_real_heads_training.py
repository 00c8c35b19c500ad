"""Issue 16: the intensity normalisation, whole-head training sources, augmentations and real-head validation."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import tiny_recnn_model
from mrisr.errors import MrisrError
from mrisr.inference.engine import enhance
from mrisr.inference.intensity import foreground_median, normalising_scale, robust_scale
from mrisr.inference.model_card import LoadedModel, ModelError, example_card
from mrisr.training import augment, real_heads, wholehead
from mrisr.training.config import ConfigError, config_from_dict
from mrisr.training.data import PatchSampler, Subject
from mrisr.training.export import card_normalisation, real_head_report, real_head_table, record_real_heads

FP32 = {"device": "cpu", "precision": "fp32"}


def _head(seed: int = 0, shape=(28, 26, 24)) -> np.ndarray:
    """A smooth 'head': bright rim (fat), darker inside, zero background, noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x * x + y * y + z * z)
    img = np.where(r < 0.8, 100.0, 0.0) + np.where((r > 0.7) & (r < 0.8), 150.0, 0.0)
    img += 20 * np.sin(7 * x) * (r < 0.7)
    return (img + rng.normal(0, 2, shape) * (r < 0.8)).astype(np.float32)


def _model(normalisation: str) -> LoadedModel:
    return tiny_recnn_model(normalisation, bias=0.3, name="t")


# ------------------------------------------------------------------ normalisation


def test_foreground_median_ignores_a_small_bright_tissue():
    x = _head()
    base = foreground_median(x)
    fat = x.copy()
    fat[fat > 140] *= 3.0  # the rim (fat) three times brighter
    assert foreground_median(fat) == pytest.approx(base, rel=0.05)
    assert robust_scale(fat) > 2 * robust_scale(x)  # the 99th percentile is hijacked by it


def test_unknown_normalisation_is_refused_with_the_known_ones():
    with pytest.raises(MrisrError, match="foreground_median"):
        normalising_scale(_head(), "median")
    with pytest.raises(ModelError, match="unknown normalisation"):
        example_card(normalisation={"method": "p95"})


@pytest.mark.parametrize("normalisation", ["foreground_median", "robust_scale"])
@pytest.mark.parametrize("a", [0.01, 0.37, 1.0, 8.0, 100.0])
def test_result_is_equivariant_to_a_global_intensity_scale(normalisation, a):
    x = _head(1)
    model = _model(normalisation)
    base, _ = enhance(x, model, factors=(2.0, 2.0, 2.0), patch_size=14, **FP32)
    scaled, _ = enhance(np.float32(a) * x, model, factors=(2.0, 2.0, 2.0), patch_size=14, **FP32)
    assert not np.allclose(base, x, atol=1e-3)  # the network changed the image
    peak = float(np.abs(base).max())
    assert np.max(np.abs(scaled - np.float32(a) * base)) <= 1e-4 * a * peak


def test_the_engine_divides_by_the_cards_normalisation():
    x = _head(2)
    x[x > 140] *= 3.0
    _, stats_median = enhance(x, _model("foreground_median"), factors=(1, 1, 2), **FP32)
    _, stats_p99 = enhance(x, _model("robust_scale"), factors=(1, 1, 2), **FP32)
    assert stats_median.scale == pytest.approx(foreground_median(x))
    assert stats_p99.scale == pytest.approx(robust_scale(x))


def test_card_normalisation_follows_the_config():
    assert card_normalisation(config_from_dict({}))["method"] == "robust_scale"
    cfg = config_from_dict({"data": {"normalisation": "foreground_median"}})
    assert card_normalisation(cfg) == {"method": "foreground_median"}
    with pytest.raises(ConfigError, match="data.normalisation"):
        config_from_dict({"data": {"normalisation": "p95"}})


# ------------------------------------------------------------------ whole-head sources


def test_wholehead_verify_names_missing_and_corrupt_files(tmp_path):
    src = wholehead.SOURCES[0]
    with pytest.raises(MrisrError, match=f"{src.file}: missing"):
        wholehead.verify(tmp_path, (src,))
    (tmp_path / src.file).write_bytes(b"not the template")
    with pytest.raises(MrisrError, match="checksum mismatch"):
        wholehead.verify(tmp_path, (src,))


def test_wholehead_sources_are_pinned_and_licensed():
    for s in wholehead.SOURCES:
        assert len(s.sha256) == 64 and s.version and s.licence and s.contrast in ("t1", "t2", "flair")
    assert "mean_reg2mean" not in {s.member.rsplit("/", 1)[-1].split(".")[0] for s in wholehead.SOURCES}
    assert len({s.key for s in wholehead.SOURCES}) == len(wholehead.SOURCES)


def test_wholehead_probability_needs_a_folder():
    with pytest.raises(ConfigError, match="wholehead_probability"):
        config_from_dict({"data": {"wholehead_probability": 0.5}})


# ------------------------------------------------------------------ augmentation


def test_identity_warp_reads_the_crop_itself():
    rng = np.random.default_rng(0)
    coords = augment.random_warp(10, rng, rotation=0.0, zoom=(1.0, 1.0), asymmetry=0.0, elastic=0.0)
    vol = np.random.default_rng(1).random((20, 20, 20)).astype(np.float32)
    crop = augment.sample_crop(vol, (3, 4, 5), coords, order=1)
    np.testing.assert_allclose(crop, vol[3:13, 4:14, 5:15], atol=1e-5)


def test_a_rotation_by_90_degrees_permutes_the_crop():
    c = augment.rotation_matrix(np.array([0.0, 0.0, 90.0])) @ np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(c, [-1.0, 0.0, 0.0], atol=1e-12)


def test_warps_stay_within_their_reach():
    size = 12
    kw = dict(rotation=45.0, zoom=(0.8, 1.2), asymmetry=0.1, elastic=3.0)
    reach = augment.reach(size, **kw)
    for seed in range(20):
        coords = augment.random_warp(size, np.random.default_rng(seed), **kw)
        assert coords.min() >= -reach and coords.max() <= size - 1 + reach


def test_brighten_and_saturate_widen_the_range_as_documented():
    x = np.linspace(0, 3, 3001, dtype=np.float32)
    y = augment.brighten(x, 2.5, 1.5)
    assert y[-1] == pytest.approx(7.5, rel=1e-3) and y[500] == pytest.approx(0.5, abs=1e-4)
    s = augment.saturate(x, 2.0)
    assert s.max() == pytest.approx(2.0) and len(np.unique(s)) <= 256
    assert np.max(np.abs(s[x <= 2.0] - x[x <= 2.0])) <= 2.0 / 255


def _sampler(**degradation) -> PatchSampler:
    cfg = config_from_dict({"data": {"holdout_axis": 1, "holdout_fraction": 0.25},
                            "degradation": {"kinds": {"thick": 1.0}, "thick_factor": [2.0, 3.0], **degradation},
                            "train": {"patch": 8, "batch": 2}})
    img = np.abs(np.random.default_rng(0).normal(1.0, 0.2, (48, 96, 48))).astype(np.float32)
    return PatchSampler(cfg, [Subject(img, None, None, np.ones(img.shape, bool), "s")])


def test_warped_crops_never_read_the_held_out_slab():
    sampler = _sampler(warp_probability=1.0, rotation=30.0, zoom=[0.8, 1.2], asymmetry=0.1, elastic=2.0)
    subj = sampler.subjects[0]
    subj.image[:, 72:, :] = np.nan  # the held-out slab: any read of it would poison the crop
    for seed in range(6):
        x, y, _ = sampler.example(np.random.default_rng(seed))
        assert np.isfinite(x).all() and np.isfinite(y).all()


def test_legacy_configs_draw_the_same_examples():
    a = _sampler().batch(3)
    b = _sampler(warp_probability=0.0, brighten_probability=0.0, saturate_probability=0.0).batch(3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# ------------------------------------------------------------------ real-head validation


def test_head_cases_simulate_each_acquisition_on_the_head():
    vol = _head(3, (24, 24, 24))
    cases = real_heads.head_cases("h", vol, ["iso2-box", "thick4-box"])
    assert [c.name for c in cases] == ["iso2-box", "thick4-box"]
    for c in cases:
        assert c.inp.shape == vol.shape and c.mask.any() and not np.allclose(c.inp, vol)
    lr = real_heads.head_cases("h", vol, ["thick4-box"], scale=(1, 1, 4))[0]
    assert lr.lr.shape == (24, 24, 6) and lr.target.shape == (24, 24, 24)


def test_inplane_truths_thicken_each_inplane_axis():
    vol = _head(4, (30, 30, 12))
    cases = real_heads.inplane_cases(vol, 2.8)
    assert [c.name for c in cases] == ["inplane0-slice", "inplane1-slice"]
    assert cases[0].acquisition.factors == (2.8, 1.0, 1.0)


def test_table_has_a_column_per_head_and_the_worst():
    rows = [{"contrast": h, "case": c, "psnr_gain": g} for h, c, g in
            [("a", "iso2-box", 0.5), ("b", "iso2-box", -0.2), ("a", "thick4-box", 1.0)]]
    table = real_head_table(rows, [{"contrast": "t1", "case": "iso2-box", "psnr_gain": 3.0}])
    assert "| iso2-box | +3.00 | +0.50 | -0.20 | -0.20 |" in table
    assert "| thick4-box | | +1.00 |  | +1.00 |" in table


@pytest.mark.skipif(not real_heads.available(real_heads.Path(__file__).resolve().parents[2] / "shared" / "data"),
                    reason="the real validation heads (../shared/data) are not beside this checkout")
def test_real_heads_report_on_a_crop_of_the_real_scans():
    folder = real_heads.Path(__file__).resolve().parents[2] / "shared" / "data"

    def crop(v):
        c = [n // 2 for n in v.shape]
        return v[c[0] - 12:c[0] + 12, c[1] - 12:c[1] + 12, c[2] - 8:c[2] + 8]

    rows = real_head_report(_model("foreground_median"), ["thick4-box"], precision="fp32", log=lambda s: None,
                            folder=folder, crop=crop)
    assert [r["contrast"] for r in rows] == ["chris_t1_088mm", "mr_gd_1mm", "chris_pd_thick", "chris_pd_thick"]
    assert all(np.isfinite(r["psnr_spline"]) and np.isfinite(r["psnr_model"]) for r in rows)
    with pytest.raises(MrisrError, match="missing"):
        real_heads.all_cases(["thick4-box"], folder / "nowhere")


def test_input_check_warns_when_the_brightest_tissue_is_far_beyond_training():
    from mrisr.trust.ood import MAX_BRIGHT, assess_input

    x = _head(5, (40, 40, 40))
    assert assess_input(x).bright_ratio < MAX_BRIGHT and not assess_input(x).warnings
    x[18:22, 18:22, 5:35] = 2000.0  # a bright vessel twenty times the head's median (1 % of the voxels)
    a = assess_input(x)
    assert a.bright_ratio > MAX_BRIGHT and any("brightest tissue" in w for w in a.warnings)


def test_noisy_cases_are_noisier_than_clean_ones():
    vol = _head(6, (24, 24, 24))
    vol = vol / robust_scale(vol)
    clean, noisy = real_heads.head_cases("h", vol, ["iso2-box", "iso2-box-noise"])
    assert np.std(noisy.inp - clean.inp) > 0.005


def _rows(gain: float) -> list[dict]:
    return [{"contrast": head, "case": "1x1x4-box", "acquisition": "box", "psnr_spline": 20.0,
             "psnr_model": 20.0 + gain, "psnr_gain": gain, "ssim_spline": 0.8, "ssim_model": 0.8,
             "ssim_gain": 0.0, "precision": "fp32", "seconds": 1.0} for head in ("chris_t1_088mm", "mr_gd_1mm")]


def test_recording_real_heads_replaces_them_and_keeps_the_rest(tmp_path):
    import json
    import shutil

    from mrisr.inference.registry import load_model, models_dir

    folder = shutil.copytree(models_dir() / "rrlsrn-1x1x4", tmp_path / "m")
    (folder / "card.json").write_text(json.dumps(json.loads((folder / "card.json").read_text()), indent=1) + "\n")
    before = json.loads((folder / "card.json").read_text())
    title, _, rest = (folder / "validation.md").read_text().partition("\n\n")
    slab = rest.partition("## Template slab\n\n")[2] or rest
    (folder / "validation.md").write_text(f"{title}\n\n{slab}")  # as exported before the real heads existed
    record_real_heads(folder, _rows(-0.25))
    record_real_heads(folder, _rows(0.5))
    after = json.loads((folder / "card.json").read_text())
    assert (folder / "card.json").read_text().splitlines()[1].startswith(' "name"')  # the card's own indent kept
    text = (folder / "validation.md").read_text()
    assert after["validation"]["real_heads"]["psnr_gain_min"] == 0.5
    assert {k: v for k, v in after["validation"].items() if k != "real_heads"} == {
        k: v for k, v in before["validation"].items() if k != "real_heads"}
    assert text.startswith("# Validation of ") and text.count("## Real heads") == 1
    assert "+0.50" in text and "-0.25" not in text
    assert text.count("## Template slab") == 1 and text.endswith(slab)
    assert load_model(folder).card.version == before["version"]  # the weights' sha256 still matches
    with pytest.raises(ValueError, match="no real-head rows"):
        record_real_heads(folder, [])


@pytest.mark.parametrize("gains, warned", [((0.2, -0.3, 0.1), True), ((0.2, 0.0), False), ((), False)])
def test_a_model_below_the_spline_on_real_heads_is_named_in_the_report(gains, warned):
    import dataclasses

    from mrisr.pipeline import upscale as pipeline
    from mrisr.volume import Volume

    model = tiny_recnn_model("robust_scale", bias=0.3, name="t")
    rows = [{"contrast": "h", "case": f"c{i}", "psnr_gain": g} for i, g in enumerate(gains)]
    model = dataclasses.replace(model, card=dataclasses.replace(model.card, validation={"real_heads": {"rows": rows}}))
    vol = Volume(_head(shape=(14, 13, 6)), np.diag([1.0, 1.0, 2.0, 1.0]))
    _, _, report = pipeline.upscale_volume(vol, spacing=1, method="cnn", model=model, device="cpu", threads=1)
    notes = [w for w in report.warnings if "below the cubic spline" in w]
    assert len(notes) == (1 if warned else 0)
    if warned:
        assert "1 of its 3 real-head" in notes[0] and "worst -0.30 dB" in notes[0] and "--method spline" in notes[0]
