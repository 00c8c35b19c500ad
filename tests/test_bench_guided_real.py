"""benchmarks/bench_guided_real.py: its helpers (contrast remaps, the corrupted reference, the table) and a
tiny end-to-end run of its simulated part on synthetic heads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from mrisr.archs.recnn import ReCNN
from mrisr.inference.model_card import LoadedModel, example_card

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("bench_guided_real", ROOT / "benchmarks" / "bench_guided_real.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _head() -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij")
    r = np.sqrt(x * x + y * y + z * z)
    return (np.where(r < 0.8, 60.0, 0.0) + np.where(r < 0.5, 40.0, 0.0) + np.where(r < 0.2, -70.0, 0.0)).astype(
        np.float32)


def test_remaps_keep_anatomy_and_change_contrast() -> None:
    t1 = _head()
    mono, t2 = bench.remap(t1, "monotone"), bench.remap(t1, "t2like")
    levels = [float(v) for v in (t1[16, 16, 16], t1[16, 16, 4], t1[16, 16, 10], t1[0, 0, 0])]  # csf, gm, wm, air
    assert levels[0] < levels[1] < levels[2] and levels[3] == 0
    m = [float(mono[16, 16, 16]), float(mono[16, 16, 4]), float(mono[16, 16, 10])]
    assert m[0] < m[1] < m[2]                                   # monotone: same order
    c = [float(t2[16, 16, 16]), float(t2[16, 16, 4]), float(t2[16, 16, 10]), float(t2[0, 0, 0])]
    assert c[0] > c[1] > c[2] > c[3] and abs(c[3]) < 1e-3 * c[0]  # inverted tissue order, air dark
    np.testing.assert_array_equal(bench.remap(t1, "none"), t1)
    np.testing.assert_allclose(bench.remap(3 * t1, "t2like"), 3 * t2, rtol=1e-5)  # scale-equivariant


def test_corrupted_reference_is_close_but_not_a_copy() -> None:
    t1 = _head()
    ref = bench.corrupted_copy(t1, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(ref, bench.corrupted_copy(t1, (1.0, 1.0, 1.0)))  # seeded
    err = np.abs(ref - t1).mean() / t1.mean()
    assert 0.01 < err < 0.5


def test_table_has_one_line_per_input_and_the_difference_column() -> None:
    rows = [{"method": "spline", "model": "spline", "test": "t", "head": "h", "case": "c", "psnr": 20.0},
            {"method": "default", "model": "d 1", "test": "t", "head": "h", "case": "c", "psnr": 21.0},
            {"method": "guided", "model": "g 1", "test": "t", "head": "h", "case": "c", "psnr": 23.5}]
    text = bench.table(rows)
    assert text.splitlines()[0] == "| test | head | acquisition | spline | d 1 | g 1 | g 1 - d 1 |"
    assert text.splitlines()[2] == "| t | h | c | 20.00 | 21.00 | 23.50 | +2.50 |"


def test_psnr_rows_runs_each_method_and_skips_what_is_done(tmp_path) -> None:
    t1 = _head()
    from mrisr.training.data import VALIDATION_CASES, simulate

    acq = VALIDATION_CASES["thick4-box"]
    inp = simulate(t1, acq, np.random.default_rng(0))
    mask = t1 > 0
    single = LoadedModel("s", example_card(name="s"), ReCNN(2, 4, cond_dim=3).eval(), "0" * 64, tmp_path)
    net = ReCNN(2, 4, cond_dim=3, in_channels=2).eval()
    with torch.no_grad():
        net.body[-1].weight.zero_()
    guided = LoadedModel("g", example_card(name="g", in_channels=2), net, "0" * 64, tmp_path)
    rows = bench.psnr_rows("same-contrast", "h", "thick4-box", inp, t1, mask, acq.factors, t1, [single], [guided],
                           set(), lambda line: None)
    assert [r["model"] for r in rows] == ["spline", "reference alone", "s 0.0.0", "g 0.0.0"]
    assert rows[1]["psnr"] > 60  # the reference is the truth here
    assert abs(rows[3]["psnr"] - rows[0]["psnr"]) < 1e-3  # a zero residual is the spline
    done = {("s 0.0.0", "same-contrast", "h", "thick4-box")}
    again = bench.psnr_rows("same-contrast", "h", "thick4-box", inp, t1, mask, acq.factors, t1, [single], [guided],
                            done, lambda line: None)
    assert "s 0.0.0" not in [r["model"] for r in again]


def test_transfer_rows_run_what_upscale_runs_and_record_the_choice(tmp_path) -> None:
    t1 = _head()
    from mrisr.geometry.resample import resample_to_grid
    from mrisr.training.data import VALIDATION_CASES, simulate

    acq = VALIDATION_CASES["thick4-slice"]
    inp = simulate(t1, acq, np.random.default_rng(1234))
    lr, grid, lr_affine = bench.acquired(t1, acq)
    np.testing.assert_array_equal(resample_to_grid(lr, grid), inp)  # the rows' own spline input
    single = LoadedModel("s", example_card(name="s"), ReCNN(2, 4, cond_dim=3).eval(), "0" * 64, tmp_path)
    rows = bench.psnr_rows("same-contrast", "h", "thick4-slice", inp, t1, t1 > 0, acq.factors, t1, [single], [],
                           set(), lambda line: None, transfer=(lr, grid, lr_affine))
    by = {r["model"]: r for r in rows}
    assert by["transfer + s 0.0.0"]["method"] == "transfer"
    assert by["transfer + s 0.0.0"]["chosen"].startswith(("spline + detail", "network + detail"))
    assert by["transfer + s 0.0.0"]["psnr"] > by["spline"]["psnr"] + 3  # the reference is the truth here
