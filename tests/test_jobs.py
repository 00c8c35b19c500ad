"""``mrisr upscale --jobs N``: several inputs at once, same outputs and records as one at a time."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli.app import app
from mrisr.pipeline import batch
from mrisr.pipeline.batch import iter_jobs, run_jobs, threads_per_job
from mrisr.pipeline.jobs import plan_batch
from mrisr.pipeline.settings import BatchSettings

RNG = np.random.default_rng(11)
TRAINING = {"data": "none", "licence": "none", "degradations": [], "input_spacing_mm": [1.0, 6.0],
            "factor": [1.0, 6.0]}
#: Record fields that legitimately differ between two runs (wall-clock times, and where outputs went).
VOLATILE = ("seconds", "timings", "output", "sidecar", "qc")


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, shape in (("a.nii.gz", (6, 5, 4)), ("b.nii", (5, 6, 3)), ("c.nii.gz", (7, 4, 4))):
        affine = np.diag([2.0, 2.0, 3.0, 1.0])
        nib.save(nib.Nifti1Image(RNG.normal(100, 20, size=shape).astype(np.float32), affine), folder / name)
    (folder / "d.nii.gz").write_bytes(b"not an image")  # fails the same way in both runs
    return folder


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    import torch

    from mrisr.archs.recnn import ReCNN
    from mrisr.inference.model_card import save_model

    torch.manual_seed(0)
    save_model(ReCNN(3, 4), tmp_path / "tiny", name="tiny", training=TRAINING)
    return tmp_path / "tiny"


def _upscale(folder: Path, out: Path, jobs: int, *extra: str):
    return CliRunner().invoke(app, ["upscale", str(folder), "--spacing", "1", "--output-dir", str(out), "--json",
                                    "--jobs", str(jobs), *extra])


def _stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def _compare_runs(first, second, out1: Path, out2: Path) -> list[dict]:
    assert first.exit_code == second.exit_code == 1  # d.nii.gz fails in both
    recs1 = [json.loads(line) for line in first.stdout.splitlines()]
    recs2 = [json.loads(line) for line in second.stdout.splitlines()]
    assert [Path(r["input"]).name for r in recs1] == [Path(r["input"]).name for r in recs2] == \
        ["a.nii.gz", "b.nii", "c.nii.gz", "d.nii.gz"]  # input order, whatever finished first
    assert [_stable(r) for r in recs1] == [_stable(r) for r in recs2]
    for name in ("a_sr", "b_sr", "c_sr"):
        assert (out1 / f"{name}.nii.gz").read_bytes() == (out2 / f"{name}.nii.gz").read_bytes()
        side1 = json.loads((out1 / f"{name}.json").read_text())
        side2 = json.loads((out2 / f"{name}.json").read_text())
        assert _stable(side1) == _stable(side2) and side1["status"] == "ok"
    err1 = [line for line in first.stderr.splitlines() if "error" in line]
    err2 = [line for line in second.stderr.splitlines() if "error" in line]
    assert err1 == err2 and len(err1) == 1 and "d.nii.gz" in err1[0]
    assert "3 ok, 1 failed" in first.stderr and "3 ok, 1 failed" in second.stderr
    return recs2


def test_jobs_2_spline_gives_the_sequential_outputs_and_records(inputs, tmp_path):
    out1, out2 = tmp_path / "seq", tmp_path / "par"
    _compare_runs(_upscale(inputs, out1, 1, "--method", "spline"),
                  _upscale(inputs, out2, 2, "--method", "spline"), out1, out2)
    lines = [line for line in _upscale(inputs, tmp_path / "par3", 3, "--method", "spline").stderr.splitlines()
             if line.startswith("[")]
    assert [line.split()[0] for line in lines] == ["[1/4]", "[2/4]", "[3/4]"]  # the failure has its error line


def test_jobs_2_network_matches_sequential_and_splits_threads(inputs, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "available_cores", lambda: 2)  # 2 cores / 2 jobs: one torch thread each
    net = ("--model", str(tiny_model), "--device", "cpu", "--precision", "fp32")
    out1, out2 = tmp_path / "seq", tmp_path / "par"
    recs = _compare_runs(_upscale(inputs, out1, 1, *net, "--threads", "1"), _upscale(inputs, out2, 2, *net),
                         out1, out2)
    assert [r["threads"] for r in recs[:3]] == [1, 1, 1] and recs[0]["model"] == "tiny"


def test_threads_per_job():
    assert threads_per_job(1, cores=8) == 8
    assert threads_per_job(3, cores=8) == 2
    assert threads_per_job(4, cores=2) == 1
    assert batch.available_cores() >= 1


def test_iter_jobs_reports_every_job_and_refuses_bad_counts(inputs, tmp_path):
    settings = BatchSettings(spacing=1.0, method="spline")
    settings.check()
    jobs = plan_batch([inputs], output_dir=tmp_path / "o")
    started, finished = [], []
    order = [job.input.name for job in iter_jobs(jobs, settings, n_jobs=3, on_start=lambda j: started.append(j),
                                                 on_finish=finished.append)]
    assert order == ["a.nii.gz", "b.nii", "c.nii.gz", "d.nii.gz"]
    assert sorted(j.input.name for j in finished) == sorted(order) and len(started) == 4
    again = plan_batch([inputs], output_dir=tmp_path / "o")  # outputs exist now: skipped, the failure stays
    assert [r["status"] for r in run_jobs(again, settings, n_jobs=2)] == ["skipped", "skipped", "skipped", "failed"]
    with pytest.raises(Exception, match="positive integer"):
        list(iter_jobs(jobs, settings, n_jobs=0))


def test_interrupt_stops_the_batch_and_leaves_no_partial_files(inputs, tmp_path):
    settings = BatchSettings(spacing=1.0, method="spline")
    settings.check()
    jobs = plan_batch([inputs], output_dir=tmp_path / "o")
    (tmp_path / "o").mkdir()

    def interrupt(job):
        if job.input.name == "a.nii.gz":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(iter_jobs(jobs, settings, n_jobs=2, on_start=interrupt))
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]  # no temporary files
    assert jobs[0].status == "pending"


def test_jobs_option_is_validated(inputs, tmp_path):
    result = _upscale(inputs, tmp_path / "o", 0, "--method", "spline")
    assert result.exit_code == 2 and not (tmp_path / "o").exists()
