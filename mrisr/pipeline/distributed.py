"""Batches beyond one machine: the jobs of :mod:`mrisr.pipeline.batch` on a Dask distributed cluster.

``mrisr upscale ... --dask-scheduler ADDRESS`` (a running scheduler, e.g.
``tcp://10.0.0.5:8786``, or a ``dask-jobqueue`` cluster's) or
``--dask-scheduler local:N`` (a LocalCluster of N worker processes on this
machine) sends each pending job to a worker, which runs :func:`mrisr.pipeline.batch.run_job`
there. The outputs, sidecars, records, skip rules and exit codes are those of
the local batch: planning (names, clashes, skips, shards, the size
preflight) happens here before anything is sent, and records come back in
input order. Each worker process loads the model once and keeps it for
every job it runs.

The workers must see the inputs and the output folders under the same
paths (a shared file system); paths are sent absolute. Needs the ``dask``
extra: ``pip install "mrisr[dask]"``.

Example:
    >>> parse_scheduler("local:2")
    ('local', 2)
    >>> parse_scheduler("tcp://10.0.0.5:8786")
    ('address', 'tcp://10.0.0.5:8786')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from mrisr.errors import MrisrError
from mrisr.pipeline.batch import prepare_model, run_job, threads_per_job
from mrisr.pipeline.jobs import Job
from mrisr.pipeline.settings import BatchSettings

#: Seconds to wait for a scheduler (or a LocalCluster) before giving up.
CONNECT_TIMEOUT = 30
_INSTALL_HINT = 'pip install "mrisr[dask]"'

#: Per worker process: the model of the settings last seen, loaded once (``(key, model)``).
_WORKER_MODEL: dict[str, Any] = {}


def parse_scheduler(text: str) -> tuple[str, Any]:
    """``("local", N)`` for ``local:N`` (N >= 1), else ``("address", text)``.

    Raises:
        MrisrError: an empty value or a bad ``local:N``.
    """
    value = str(text).strip()
    if not value:
        raise MrisrError("--dask-scheduler takes a scheduler address (tcp://HOST:8786) or local:N")
    if value.lower().startswith("local"):
        _, sep, n = value.partition(":")
        try:
            workers = int(n) if sep else 0
        except ValueError:
            workers = 0
        if workers < 1:
            raise MrisrError(f"--dask-scheduler local:N takes a number of worker processes N >= 1, got {text!r}")
        return "local", workers
    return "address", value


def connect(scheduler: str) -> tuple[Any, Any]:
    """A ``distributed.Client`` for ``scheduler`` and the LocalCluster it started (or ``None``).

    A LocalCluster has N single-threaded worker processes.

    Raises:
        MrisrError: dask.distributed missing, or no scheduler reachable at the address.
    """
    kind, value = parse_scheduler(scheduler)
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError:
        raise MrisrError(f"--dask-scheduler needs dask.distributed: {_INSTALL_HINT}") from None
    if kind == "local":
        cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        return Client(cluster, timeout=CONNECT_TIMEOUT), cluster
    try:
        return Client(value, timeout=CONNECT_TIMEOUT), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise MrisrError(f"--dask-scheduler {value}: cannot reach the Dask scheduler ({exc})") from None


def _portable(job: Job) -> Job:
    """The job as a worker sees it: absolute paths (the worker's current folder is not ours)."""
    return dataclasses.replace(job, input=job.input.absolute(), output=job.output.absolute())


def _portable_settings(settings: BatchSettings, n_workers: int | None) -> BatchSettings:
    changes: dict[str, Any] = {}
    options = settings.options
    if options.reference is not None:
        changes["reference"] = Path(options.reference).absolute()
    if isinstance(options.model, (str, Path)) and Path(options.model).exists():
        changes["model"] = str(Path(options.model).absolute())
    if options.loads_model and options.threads is None and n_workers:
        changes["threads"] = threads_per_job(n_workers)  # N local processes share this machine's cores
    return settings.with_options(**changes) if changes else settings


def run_on_worker(job: Job, settings: BatchSettings) -> Job:
    """Run one job in a worker process with the model it loaded once (what the cluster calls)."""
    from mrisr.pipeline.settings import output_settings, settings_fingerprint

    model = None
    if settings.options.loads_model:
        key = settings_fingerprint(output_settings(settings)) or ""
        if _WORKER_MODEL.get("key") != key:
            _WORKER_MODEL.clear()
            _WORKER_MODEL.update(key=key, model=prepare_model(settings))
        model = _WORKER_MODEL["model"]
    run_job(job, settings, model)
    return job


def iter_jobs_dask(jobs: Iterable[Job], settings: BatchSettings, scheduler: str, *,
                   on_finish: Callable[[Job], None] | None = None) -> Iterator[Job]:
    """Run the pending jobs on a Dask cluster; yield every job, in input order, once finished.

    Skipped and failed jobs pass through unsent. A job whose worker died is
    failed with the cluster's reason; the others go on. On Ctrl-C (or when
    the caller stops iterating) the jobs not yet finished are cancelled and
    a LocalCluster is shut down.

    Raises:
        MrisrError: see :func:`connect` (before any job is sent).
    """
    jobs = list(jobs)
    pending = [job for job in jobs if job.status == "pending"]
    if not pending:
        yield from jobs
        return
    kind, value = parse_scheduler(scheduler)
    client, cluster = connect(scheduler)
    futures: dict[int, Any] = {}
    try:
        remote = _portable_settings(settings, value if kind == "local" else None)
        futures = {id(job): client.submit(run_on_worker, _portable(job), remote, pure=False) for job in pending}
        for job in jobs:
            future = futures.get(id(job))
            if future is not None:
                _take(job, future)
                if on_finish is not None:
                    on_finish(job)
            yield job
    finally:
        for future in futures.values():
            future.cancel()
        client.close()
        if cluster is not None:
            cluster.close()


def _take(job: Job, future: Any) -> None:
    """Copy the worker's outcome onto the local job (whose paths stay as the user typed them)."""
    from mrisr.pipeline.records import make_record

    try:
        done: Job = future.result()
    except Exception as exc:  # noqa: BLE001 - a worker that died fails its job, not the batch
        job.status, job.error = "failed", f"the Dask worker running it failed: {type(exc).__name__}: {exc}"
        job.record = make_record(job)
        return
    job.status, job.error, job.record, job.seconds, job.qc = done.status, done.error, done.record, done.seconds, done.qc


__all__ = ["parse_scheduler", "connect", "run_on_worker", "iter_jobs_dask", "CONNECT_TIMEOUT"]
