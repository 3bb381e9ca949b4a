"""Block until jobs end, woken by registry writes and runner exits (no sleep loop)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from codexw.core import paths, process
from codexw.core.errors import UsageError
from codexw.core.models import OPEN_STATES, Job, JobState
from codexw.core.notify import Listener
from codexw.core.process import reap_children
from codexw.core.scheduler import reconcile
from codexw.core.store import Store
from codexw.services.common import using_store

SAFETY_INTERVAL = 5.0  # reconcile at least this often, in case a wake-up was missed


@dataclass
class WaitResult:
    jobs: dict[int, Job] = field(default_factory=dict)  # asked id -> its latest attempt
    timed_out: bool = False

    @property
    def all_succeeded(self) -> bool:
        return not self.timed_out and all(j.state == JobState.SUCCEEDED for j in self.jobs.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "timed_out": self.timed_out,
            "all_succeeded": self.all_succeeded,
            "jobs": [
                {"asked": asked, **job.to_dict()} for asked, job in sorted(self.jobs.items())
            ],
        }


def wait_for(
    job_ids: list[int],
    *,
    timeout: float | None = None,
    on_end: Callable[[int, Job], None] | None = None,
    store: Store | None = None,
    poll_batch: int | None = None,
) -> WaitResult:
    """Wait until each job (following its retries) is final.

    `poll_batch`: also pick up jobs added to that batch while waiting.
    """
    with using_store(store) as store:
        return _wait(store, job_ids, timeout, on_end, poll_batch)


def _wait(
    store: Store, job_ids: list[int], timeout: float | None,
    on_end: Callable[[int, Job], None] | None, poll_batch: int | None,
) -> WaitResult:
    for job_id in job_ids:
        store.get_job(job_id)  # raises NotFoundError early
    if poll_batch is not None:
        store.get_batch(poll_batch)  # an unknown batch is an error, as in kill and retry
    if not job_ids and poll_batch is None:
        raise UsageError("nothing to wait for", "give job ids or --batch N")
    deadline = None if timeout is None else time.monotonic() + timeout
    result = WaitResult()
    pidfds: dict[int, int] = {}
    reported: set[int] = set()
    with Listener() as listener:
        try:
            last_reconcile = time.monotonic()
            while True:
                if poll_batch is not None:
                    latest_by_task = store.batch_latest(poll_batch)
                else:
                    latest_by_task = {a: store.get_job(store.latest_attempt(a)) for a in job_ids}
                pending = []
                for asked, latest in latest_by_task.items():
                    result.jobs[asked] = latest
                    if latest.state.is_final:
                        if asked not in reported:
                            reported.add(asked)
                            if on_end:
                                on_end(asked, latest)
                    else:
                        pending.append(latest)
                if not pending:
                    return result
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    result.timed_out = True
                    return result
                track_runners(pending, pidfds)
                wait = SAFETY_INTERVAL
                if deadline is not None:
                    wait = min(wait, deadline - now)
                due = store.next_due(time.time())
                if due is not None:
                    wait = max(0.0, min(wait, due - time.time() + 0.05))
                ready = listener.wait(wait, list(pidfds.values()))
                runner_exited = any(fd in ready for fd in pidfds.values())
                if runner_exited or time.monotonic() - last_reconcile >= SAFETY_INTERVAL or (
                    due is not None and due <= time.time()
                ):
                    reap_children()
                    reconcile(store)
                    last_reconcile = time.monotonic()
                for job_id, fd in list(pidfds.items()):
                    if fd in ready:
                        os.close(fd)
                        del pidfds[job_id]
        finally:
            for fd in pidfds.values():
                os.close(fd)


def open_jobs(cwd: str | None = None, store: Store | None = None) -> list[int]:
    """Every job of this project that has not ended (queued, starting or running),
    oldest first: what a bare `codexw wait` waits for, like the shell's `wait`."""
    project = str(paths.project_root(cwd or os.getcwd()))
    ids: set[int] = set()
    with using_store(store) as store:  # reconciled: a job whose runner is gone is not open
        for state in OPEN_STATES:
            ids.update(j.id for j in store.list_jobs(project=project, state=state.value,
                                                     limit=None))
    return sorted(ids)


def track_runners(pending: list[Job], pidfds: dict[int, int]) -> None:
    """Hold a pidfd on each running job's runner, so its death wakes us at once."""
    wanted = {j.id: j for j in pending if j.runner_pid}
    for job_id in list(pidfds):
        if job_id not in wanted:
            os.close(pidfds.pop(job_id))
    for job_id, job in wanted.items():
        if job_id not in pidfds:
            fd = process.open_pidfd(job.runner_pid, job.runner_start)  # type: ignore[arg-type]
            if fd is not None:
                pidfds[job_id] = fd
