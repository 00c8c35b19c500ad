"""What scripts see: ``--json`` records on stdout whatever the terminal, progress on stderr.

The CLI runs in a subprocess under a pseudo-terminal (stdin and stderr on the
pty, stdout redirected to a file), which is how ``mrisr upscale ... --json >
records.jsonl`` runs from an interactive shell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import mrisr

pty = pytest.importorskip("pty")  # POSIX only

ROOT = Path(mrisr.__file__).resolve().parent.parent


def _save(path: Path, seed: int) -> None:
    data = np.random.default_rng(seed).normal(100, 20, size=(6, 5, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), path)


def run_under_pty(args: list[str], stdout_path: Path, timeout: float = 120) -> tuple[int, str]:
    """Run ``python -m mrisr ARGS`` with stdin/stderr on a pty and stdout into a file.

    Returns the exit code and what the terminal showed.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "80", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    master, slave = pty.openpty()
    with open(stdout_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mrisr", *args], stdin=slave, stdout=out, stderr=slave,
                                env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO once the child has closed the pty
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")


def test_json_records_reach_a_redirected_stdout_from_a_terminal(tmp_path):
    for i, name in enumerate(("a.nii.gz", "b.nii.gz")):
        _save(tmp_path / name, i)
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    records_file = tmp_path / "records.jsonl"
    code, terminal = run_under_pty(["upscale", str(tmp_path), "--spacing", "1", "--method", "spline", "--json",
                                    "--output-dir", str(tmp_path / "out")], records_file)
    assert code == 1, terminal  # bad.nii.gz failed, the others ran
    lines = records_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object, nothing else
    assert [(Path(r["input"]).name, r["status"]) for r in records] == [
        ("a.nii.gz", "ok"), ("b.nii.gz", "ok"), ("bad.nii.gz", "failed")]
    assert records[0]["output_shape"] == [12, 10, 12]
    assert '"status"' not in terminal  # the records went to the file only
    assert "bad.nii.gz" in terminal and "error" in terminal  # errors and summary on the terminal (stderr)
    assert "2 ok" in terminal and "1 failed" in terminal


def test_quiet_json_from_a_terminal_prints_only_records(tmp_path):
    _save(tmp_path / "a.nii.gz", 0)
    records_file = tmp_path / "records.jsonl"
    code, terminal = run_under_pty(["upscale", str(tmp_path / "a.nii.gz"), "--factor", "2", "--method", "spline",
                                    "--json", "-q"], records_file)
    assert code == 0, terminal
    assert [json.loads(line)["status"] for line in records_file.read_text().splitlines()] == ["ok"]
    assert terminal.strip() == ""


def test_output_to_stdout_is_a_usage_error(tmp_path):
    from typer.testing import CliRunner

    from mrisr.cli.app import app

    _save(tmp_path / "a.nii.gz", 0)
    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "a.nii.gz"), "--spacing", "1", "--method", "spline",
                                      "-o", "-"])
    assert result.exit_code == 2 and "not a stream on stdout" in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]
