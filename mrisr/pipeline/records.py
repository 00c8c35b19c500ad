"""One record per input (what ``--json`` prints and the batch returns), the summary and the exit code."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrisr import __version__
from mrisr.pipeline.report import UpscaleReport
from mrisr.pipeline.settings import settings_fingerprint

if TYPE_CHECKING:  # the records are of jobs, and a job keeps its record: mrisr.pipeline.jobs imports this module
    from mrisr.pipeline.jobs import Job

#: Job states: planned, done, left alone (output exists), or failed.
STATUSES = ("pending", "ok", "skipped", "failed")

#: Fields of a record that come from the :class:`~mrisr.pipeline.report.UpscaleReport`.
REPORT_FIELDS = tuple(f.name for f in dataclasses.fields(UpscaleReport) if f.name != "input")


def make_record(job: Job, report: UpscaleReport | None = None, input_sha256: str | None = None) -> dict:
    """The JSON record of a job: status, error, paths, version, report fields.

    Every record has the same keys; report fields are ``None`` for jobs that
    did not run.

    Example:
        >>> from mrisr.pipeline.jobs import Job
        >>> rec = make_record(Job(Path("a.nii"), Path("a_sr.nii.gz"), "skipped"))
        >>> rec["status"], rec["method"]
        ('skipped', None)
    """
    rec: dict[str, Any] = {
        "status": job.status, "error": job.error, "input": absolute_path(job.input),
        "output": absolute_path(job.output),
        "sidecar": absolute_path(job.sidecar), "mrisr_version": __version__, "input_sha256": input_sha256,
        "qc": None if job.qc is None else absolute_path(job.qc),
        "settings": job.settings, "settings_sha256": settings_fingerprint(job.settings),
    }
    values = report.to_dict() if report is not None else {}
    rec.update({name: values.get(name) for name in REPORT_FIELDS})
    if isinstance(rec.get("reference"), dict) and rec["reference"].get("path"):
        rec["reference"] = {**rec["reference"], "path": absolute_path(rec["reference"]["path"])}
    rec["seconds"] = round(job.seconds, 3)
    return round_floats(rec)


def absolute_path(path: Path) -> str:
    """Records name files by absolute paths: they stay valid wherever they are read from."""
    return str(Path(path).absolute())


def round_floats(value: Any, digits: int = 12) -> Any:
    """Round every float in a JSON-like value to ``digits`` significant digits (no float noise).

    Example:
        >>> round_floats({"spacing": [3.9999999999999827, 1.0], "n": 2, "x": 1e-20})
        {'spacing': [4.0, 1.0], 'n': 2, 'x': 1e-20}
    """
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_floats(v, digits) for v in value]
    return value


def exit_code(jobs: Iterable[Job]) -> int:
    """0 when no job failed, else 1.

    Example:
        >>> from mrisr.pipeline.jobs import Job
        >>> exit_code([Job(Path("a"), Path("b"), "skipped")])
        0
    """
    return 1 if any(j.status == "failed" for j in jobs) else 0


def summarise(jobs: Sequence[Job]) -> dict[str, int]:
    """Count jobs per status.

    Example:
        >>> from mrisr.pipeline.jobs import Job
        >>> summarise([Job(Path("a"), Path("b"), "ok")])["ok"]
        1
    """
    counts = dict.fromkeys(STATUSES[1:], 0)
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    return counts
