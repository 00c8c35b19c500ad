"""benchmarks/bench_gpu.py: skipped cleanly without a GPU; its measurements run (on the CPU, tiny sizes)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

from mrisr.archs.recnn import ReCNN
from mrisr.inference.model_card import LoadedModel, example_card

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
bench_gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_gpu)


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_gpu: skipped: no CUDA device")
    record = json.loads(out.read_text())
    assert "no CUDA device" in record["skipped"] and record["machine"]["cpu"]


def test_the_measurements_run_and_make_one_table():
    torch.manual_seed(0)
    net = ReCNN(3, 4, cond_dim=3).eval()
    model = LoadedModel("tiny", example_card(receptive_radius=net.receptive_radius), net, "0" * 64, None)
    args = bench_gpu.parse(["--device", "cpu", "--patch", "6", "--check-side", "10", "--repeat", "1"])
    budget = bench_gpu.Budget(60)
    rows = bench_gpu.network_rows(model, args, budget) + bench_gpu.agreement_rows(model, args, budget)
    network = [r for r in rows if r["measure"] == "network"]
    assert len(network) == 2 * 2 * 3 and all(r["value"] > 0 and r["unit"] == "Mvox/s" for r in network)
    checks = [r for r in rows if r["measure"].endswith("vs CPU fp32")]
    assert [r["precision"] for r in checks] == ["bf16", "fp32"] and all(r["ok"] for r in checks)
    assert checks[1]["value"] == 0.0
    table = bench_gpu.table(rows).splitlines()
    assert len(table) == 2 + len(rows) and all(line.count("|") == 8 for line in table)


def test_an_exhausted_budget_leaves_rows_not_run():
    net = ReCNN(2, 2).eval()
    model = LoadedModel("tiny", example_card(receptive_radius=net.receptive_radius), net, "0" * 64, None)
    args = bench_gpu.parse(["--device", "cpu", "--patch", "4", "--repeat", "1"])
    rows = bench_gpu.network_rows(model, args, bench_gpu.Budget(-1))
    assert rows and all(r.get("note") == "not run (time budget)" and "value" not in r for r in rows)
