"""The Celery backend: one app for the submitting side and the workers.

Imported only when the Celery backend is used. Broker and result backend are the same
Redis; the progress stream and the kill flag of a task live there too
(codexw.backends.celery.protocol).

Delivery guarantees: tasks are acknowledged late, a worker prefetches one task per
pool process, a pool process that dies puts its task back (reject on worker lost),
and the broker's visibility timeout is longer than the longest job a worker runs
(its --max-job-time plus the kill grace), so a task whose worker was killed is
redelivered to another worker. A redelivered copy runs only when no other delivery
holds the task's lock, and a task whose result is already in its stream returns that
result without running again: the submitting side records exactly one outcome.
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from codexw.backends.celery import protocol
from codexw.core import process

DEFAULT_MAX_JOB_TIME = 4 * 3600.0
VISIBILITY_MARGIN = 60.0
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class WorkerSettings:
    """How this worker runs jobs (fixed when it starts; pool processes inherit it)."""

    broker_url: str
    queue: str
    codex_bin: str
    codex_home: str | None
    workspace: str | None
    max_job_time: float
    kill_grace: float
    log_dir: str

    @property
    def hard_time_limit(self) -> float:
        """Celery kills a pool process after this; our own timeout ends a job first."""
        return self.max_job_time + self.kill_grace + 5.0


SETTINGS: WorkerSettings | None = None  # set in the worker's main process, before forking


def default_visibility_timeout(max_job_time: float, kill_grace: float) -> float:
    return max_job_time + kill_grace + VISIBILITY_MARGIN


def make_app(broker_url: str, queue: str, visibility_timeout: float | None = None) -> Celery:
    transport: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT}
    if visibility_timeout is not None:
        transport.update(
            visibility_timeout=int(math.ceil(visibility_timeout)),
            # Sweep for tasks of dead workers often enough to notice them soon after
            # the visibility timeout (kombu's default sweeps every 100 s).
            unacked_restore_interval=max(1, min(10, int(visibility_timeout // 5))),
            unacked_restore_throttle=1,
        )
    app = Celery("codexw", broker=broker_url, backend=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=queue,
        task_create_missing_queues=True,
        task_track_started=True,
        result_expires=protocol.STREAM_TTL,
        result_extended=False,
        broker_transport_options=transport,
        result_backend_transport_options={"socket_connect_timeout": CONNECT_TIMEOUT},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
    )
    app.task(name=protocol.TASK_NAME, bind=True, max_retries=None, acks_late=True)(_run_job)
    return app


def _run_job(task: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """The task: run one job to completion on this worker and return its result."""
    from codexw.backends.celery import worker

    if SETTINGS is None:  # pragma: no cover - a worker not started by `codexw worker`
        raise RuntimeError("this worker was not started by `codexw worker`")
    try:
        return worker.execute(
            payload, task_id=task.request.id, node=task.request.hostname or "?", settings=SETTINGS
        )
    except worker.Busy:
        # Another delivery of this task still runs it (or Redis did not answer): look
        # again when its lock would have run out if that delivery were dead.
        raise task.retry(countdown=protocol.LOCK_TTL, max_retries=None) from None


def _pool_process_init(**_: Any) -> None:
    # Celery gives pool processes SIGKILL when the worker dies; SIGTERM instead lets the
    # running job stop codex's whole process group before the process goes.
    process.set_parent_death_signal(signal.SIGTERM)


def run_worker(
    settings: WorkerSettings,
    *,
    concurrency: int,
    name: str,
    loglevel: str = "INFO",
    visibility_timeout: float | None = None,
) -> None:
    """Consume the queue until stopped (blocks; Celery handles SIGTERM/SIGINT)."""
    global SETTINGS
    SETTINGS = settings
    visibility = visibility_timeout or default_visibility_timeout(
        settings.max_job_time, settings.kill_grace
    )
    app = make_app(settings.broker_url, settings.queue, visibility)
    app.conf.task_time_limit = int(math.ceil(settings.hard_time_limit))
    worker_process_init.connect(_pool_process_init, weak=False)
    os.environ.setdefault("CODEXW_WORKER", name)
    app.worker_main(
        [
            "worker",
            "--queues", settings.queue,
            "--concurrency", str(concurrency),
            "--hostname", name,
            "--pool", "prefork",
            "--loglevel", loglevel,
            "--without-gossip",
        ]
    )
