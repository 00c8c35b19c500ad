"""Faults made for real: signals to a child process, a non-root user, a full disk, concurrent writers, FIFOs.

Each test runs ``mrisr upscale`` in a child process (``python -c`` calling
:func:`mrisr.cli.app.main`, with this environment, so the child imports the
same ``mrisr``). Tests that need root powers (a tmpfs mount, another user)
skip cleanly where the machine does not allow them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
RNG = np.random.default_rng(20)
MAIN = "import sys; from mrisr.cli.app import main; sys.argv[0] = 'mrisr'; main()"
#: A child whose NIfTI writes stall once the temporary file is complete (a slow disk), announcing it.
SLOW_WRITE = """
import os, sys, time
import mrisr.io.writer as w
real = w._write_nifti
def slow(img, f, gz):
    real(img, f, gz)
    f.flush()
    open(os.environ["MRISR_TEST_MARK"], "w").close()
    time.sleep(120)
w._write_nifti = slow
from mrisr.cli.app import main
sys.argv[0] = "mrisr"
main()
"""


def save(path: Path, shape=(6, 5, 4), dtype=np.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(RNG.normal(100, 20, shape).astype(dtype), AFFINE), str(path))
    return path


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment, with the directory holding ``mrisr`` first on PYTHONPATH."""
    import mrisr

    root = str(Path(mrisr.__file__).resolve().parent.parent)
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_cli(*args, prefix: tuple[str, ...] = (), timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    cmd = [*prefix, sys.executable, "-c", MAIN, "upscale", *map(str, args), "--method", "spline"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(**env))


def records(stdout: str) -> dict[str, dict]:
    recs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {Path(r["input"]).name: r for r in recs}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mrisr: error:")]


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the child ended (rc {proc.returncode}) before {path.name}: {proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder other users can enter (pytest's own tmp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="mrisr-faults-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_signal_during_the_write_leaves_the_earlier_output_and_no_temp(tmp_path, sig):
    src = save(tmp_path / "in" / "a.nii.gz")
    out_dir = tmp_path / "out"
    first = run_cli(src, "--spacing", "1.5", "--output-dir", out_dir, "--quiet")
    assert first.returncode == 0, first.stderr
    out = out_dir / "a_sr.nii.gz"
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    mark = tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITE, "upscale", str(src), "--spacing", "1",
                             "--method", "spline", "--output-dir", str(out_dir), "--force", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(MRISR_TEST_MARK=str(mark)))
    wait_for(mark, proc)
    assert len(hidden(out_dir)) == 1  # the complete temporary file, not yet renamed
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mrisr: error: interrupted by {sig.name}"), stderr
    assert hidden(out_dir) == []
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    assert nib.load(out).shape == (8, 7, 8)  # still the 1.5 mm output


def test_sigterm_during_a_real_batch_stops_it_and_leaves_only_complete_outputs(tmp_path):
    srcs = [save(tmp_path / "in" / f"s{k:02d}.nii.gz", shape=(24, 24, 16)) for k in range(12)]
    out_dir = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "upscale", str(tmp_path / "in"), "--spacing", "0.5",
                             "--method", "spline", "--output-dir", str(out_dir), "--quiet", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    wait_for(out_dir / "s00_sr.json", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "interrupted by SIGTERM" in stderr
    written = sorted(p.name for p in out_dir.glob("*_sr.nii.gz"))
    assert 1 <= len(written) < len(srcs) and hidden(out_dir) == []
    for name in written:  # every output present is complete and has its sidecar
        assert np.isfinite(np.asarray(nib.load(out_dir / name).dataobj)).all()
        assert (out_dir / name.replace(".nii.gz", ".json")).exists()
    assert all(r["status"] == "ok" for r in records(stdout).values())


# --------------------------------------------------------------------------- permissions, as a real user


def _as_nobody() -> tuple[str, ...]:
    if os.geteuid() != 0:
        return ()  # already an ordinary user: chmod 000 is enough
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to run as an ordinary user")
    prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    probe = subprocess.run([*prefix, sys.executable, "-c", "import typer, nibabel, mrisr.cli.app"],
                           capture_output=True, text=True, timeout=60, env=child_env(HOME="/tmp"))
    if probe.returncode != 0:  # e.g. a virtual environment in a folder only root may read
        pytest.skip(f"this Python environment is not readable by an ordinary user: {probe.stderr.strip()[-200:]}")
    return prefix


@pytest.mark.parametrize("through", ["command line", "folder"])
def test_unreadable_input_fails_alone_for_a_real_user(shared_dir, through):
    prefix = _as_nobody()
    src = shared_dir / "in"
    bad, good = save(src / "locked.nii.gz"), save(src / "good.nii.gz")
    src.chmod(0o755)
    for p in (bad, good):
        p.chmod(0o644)
    bad.chmod(0)
    out = shared_dir / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    inputs = (bad, good) if through == "command line" else (src,)
    result = run_cli(*inputs, "--spacing", "1.5", "--output-dir", out, "--json", "--quiet", prefix=prefix,
                     HOME=str(shared_dir))
    if prefix == () and os.geteuid() == 0:
        pytest.skip("root reads anything")
    assert result.returncode == 1, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert lines[0] == f"mrisr: error: {bad}: permission denied (cannot read the file)"
    recs = records(result.stdout)
    assert recs["locked.nii.gz"]["status"] == "failed" and recs["good.nii.gz"]["status"] == "ok"
    assert nib.load(out / "good_sr.nii.gz").shape == (8, 7, 8)


def test_unlistable_folder_fails_alone_for_a_real_user(shared_dir):
    prefix = _as_nobody()
    locked = shared_dir / "locked"
    save(locked / "a.nii.gz").chmod(0o644)
    good = save(shared_dir / "good.nii.gz")
    good.chmod(0o644)
    locked.chmod(0)
    out = shared_dir / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    try:
        result = run_cli(locked, good, "--spacing", "1.5", "--output-dir", out, "--json", "--quiet", prefix=prefix,
                         HOME=str(shared_dir))
    finally:
        locked.chmod(0o755)
    if prefix == () and os.geteuid() == 0:
        pytest.skip("root lists anything")
    assert result.returncode == 1, result.stderr
    assert error_lines(result.stderr) == [f"mrisr: error: {locked}: permission denied (cannot list the folder)"]
    assert records(result.stdout)["good.nii.gz"]["status"] == "ok"


# --------------------------------------------------------------------------- a real full disk


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A 64 KiB tmpfs (skipped where mounting is not permitted)."""
    folder = Path(tempfile.mkdtemp(prefix="mrisr-tmpfs-"))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        folder.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)
        folder.rmdir()


def test_full_disk_fails_that_output_only_and_leaves_no_temp(tmp_path, tiny_disk):
    small = save(tmp_path / "in" / "a_small.nii.gz", shape=(4, 4, 3))
    big = save(tmp_path / "in" / "b_big.nii.gz", shape=(24, 24, 16))  # 1 mm: about 900 KB, never fits
    result = run_cli(small, big, "--spacing", "1", "--output-dir", tiny_disk, "--json", "--quiet")
    assert result.returncode == 1, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"mrisr: error: {big}: "), result.stderr
    assert "No space left on device" in lines[0]
    recs = records(result.stdout)
    assert recs["a_small.nii.gz"]["status"] == "ok" and recs["b_big.nii.gz"]["status"] == "failed"
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["a_small_sr.json", "a_small_sr.nii.gz",
                                                            "dataset_description.json"]
    assert nib.load(tiny_disk / "a_small_sr.nii.gz").shape == (8, 8, 9)


# --------------------------------------------------------------------------- two writers at once


@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
def test_two_processes_writing_the_same_output(tmp_path, force):
    src = save(tmp_path / "in" / "a.nii.gz", shape=(32, 32, 20))
    out = tmp_path / "out" / "a_sr.nii.gz"
    out.parent.mkdir()
    args = [sys.executable, "-c", MAIN, "upscale", str(src), "--spacing", "1", "--method", "spline", "-o", str(out),
            "--json", "--quiet"] + (["--force"] if force else [])
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
             for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    statuses = sorted(records(stdout)["a.nii.gz"]["status"] for _, stdout, _ in results)
    if force:
        assert [rc for rc, _, _ in results] == [0, 0] and statuses == ["ok", "ok"]
    else:  # exactly one writes; the other skips (it came late) or finds the output created meanwhile
        assert statuses.count("ok") == 1, results
        for rc, stdout, stderr in results:
            rec = records(stdout)["a.nii.gz"]
            assert (rc, rec["status"]) in ((0, "ok"), (0, "skipped"), (1, "failed")), stderr
            if rec["status"] == "failed":
                assert "already exists" in rec["error"]
    assert hidden(out.parent) == []
    data = np.asarray(nib.load(out).dataobj)
    assert data.shape == (64, 64, 60) and np.isfinite(data).all()
    assert json.loads((out.parent / "a_sr.json").read_text())["status"] == "ok"


# --------------------------------------------------------------------------- special files


def test_fifo_and_device_inputs_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "in" / "pipe.nii.gz"
    good = save(tmp_path / "in" / "good.nii.gz")
    os.mkfifo(fifo)  # no writer: opening it for reading would block for ever
    result = run_cli(fifo, "/dev/zero", good, "--spacing", "1.5", "--output-dir", tmp_path / "out", "--json",
                     "--quiet", timeout=60)
    assert result.returncode == 1, result.stderr
    assert error_lines(result.stderr) == [
        "mrisr: error: /dev/zero: is a character device, not a regular file; mrisr reads image files and folders only",
        f"mrisr: error: {fifo}: is a FIFO (named pipe), not a regular file; mrisr reads image files and folders "
        "only"]
    assert records(result.stdout)["good.nii.gz"]["status"] == "ok"
    info = subprocess.run([sys.executable, "-c", MAIN, "info", str(fifo)], capture_output=True, text=True,
                          timeout=60, env=child_env())
    assert info.returncode == 1 and "FIFO" in info.stderr and len(info.stderr.splitlines()) == 1
