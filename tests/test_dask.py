"""``mrisr upscale --dask-scheduler``: the batch on a Dask cluster (a LocalCluster of 2 processes here)
gives the outputs, records, skips and exit codes of the local batch."""

from __future__ import annotations

import json
from pathlib import Path

import distributed as _dask_distributed  # noqa: F401 - in the test extra: missing is a failure, not a skip
import pytest
from typer.testing import CliRunner

from mrisr.cli.app import app
from mrisr.errors import MrisrError
from mrisr.pipeline import distributed
from mrisr.pipeline.distributed import parse_scheduler, run_on_worker
from mrisr.pipeline.jobs import plan_batch
from mrisr.pipeline.settings import BatchSettings
from test_jobs import inputs, tiny_model  # noqa: F401 - the fixtures of the --jobs tests

VOLATILE = ("seconds", "timings", "output", "sidecar", "threads")


def _upscale(folder: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["upscale", str(folder), "--spacing", "1", "--output-dir", str(out), "--json",
                                    *extra])


def _records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_local_cluster_of_2_processes_matches_the_local_batch(inputs, tiny_model, tmp_path):
    net = ("--model", str(tiny_model), "--device", "cpu", "--precision", "fp32", "--threads", "1")
    local = _upscale(inputs, tmp_path / "local", *net)
    dask = _upscale(inputs, tmp_path / "dask", *net, "--dask-scheduler", "local:2")
    assert local.exit_code == dask.exit_code == 1, dask.output  # d.nii.gz fails in both
    recs_local, recs_dask = _records(local), _records(dask)
    assert [Path(r["input"]).name for r in recs_dask] == ["a.nii.gz", "b.nii", "c.nii.gz", "d.nii.gz"]
    assert [r["status"] for r in recs_dask] == ["ok", "ok", "ok", "failed"]
    strip = lambda r: {k: v for k, v in r.items() if k not in VOLATILE}  # noqa: E731
    assert [strip(r) for r in recs_dask] == [strip(r) for r in recs_local]
    for name in ("a_sr", "b_sr", "c_sr"):
        assert (tmp_path / "dask" / f"{name}.nii.gz").read_bytes() == \
            (tmp_path / "local" / f"{name}.nii.gz").read_bytes()
        assert json.loads((tmp_path / "dask" / f"{name}.json").read_text())["model"] == "tiny"
    errors = [line for line in dask.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "d.nii.gz" in errors[0]
    # Skip rules are the local batch's, planned here: with nothing left to do no cluster is even started.
    again = CliRunner().invoke(app, ["upscale", *(str(inputs / n) for n in ("a.nii.gz", "b.nii", "c.nii.gz")),
                                     "--spacing", "1", "--output-dir", str(tmp_path / "dask"), "--json", *net,
                                     "--dask-scheduler", "local:2"])
    assert again.exit_code == 0 and [r["status"] for r in _records(again)] == ["skipped"] * 3


def test_each_worker_loads_the_model_once(inputs, tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(distributed, "prepare_model", lambda s: loads.append(s.model) or None)
    monkeypatch.setattr(distributed, "_WORKER_MODEL", {})
    monkeypatch.setattr(distributed, "run_job", lambda job, settings, model: None)
    settings = BatchSettings(spacing=(1.0,), method="cnn", model="recnn-d8w32")
    jobs = plan_batch([inputs], output_dir=tmp_path / "o", settings=settings)
    for job in jobs:
        run_on_worker(job, settings)
    assert loads == ["recnn-d8w32"]
    run_on_worker(jobs[0], BatchSettings(spacing=(1.0,), method="cnn", model="rrlsrn-2x2x2"))
    assert loads == ["recnn-d8w32", "rrlsrn-2x2x2"]


def test_scheduler_values_and_usage_errors(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 1)
    assert parse_scheduler(" local:3 ") == ("local", 3)
    for bad in ("", "local", "local:0", "local:x"):
        with pytest.raises(MrisrError, match="dask-scheduler"):
            parse_scheduler(bad)
    both = _upscale(inputs, tmp_path / "o", "--method", "spline", "--dask-scheduler", "local:2", "--jobs", "2")
    assert both.exit_code == 2 and "not both" in both.stderr
    unreachable = _upscale(inputs, tmp_path / "o", "--method", "spline", "--dask-scheduler", "tcp://127.0.0.1:9")
    assert unreachable.exit_code == 2 and "cannot reach the Dask scheduler" in unreachable.stderr
    assert not any((tmp_path / "o").glob("*.nii.gz"))
