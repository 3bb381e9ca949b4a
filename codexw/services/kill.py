"""Stop jobs: running ones lose their whole process tree, queued ones are cancelled."""

from __future__ import annotations

import time
from dataclasses import dataclass

from codexw.core.backend import backend_for
from codexw.core.lifecycle import Ending, end_without_runner
from codexw.core.models import Job, JobState
from codexw.core.notify import Listener
from codexw.core.scheduler import fill_slots, reconcile
from codexw.core.store import Store
from codexw.services.common import open_store


@dataclass
class KillResult:
    job_id: int
    before: str
    after: str
    note: str

    def to_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def kill_jobs(job_ids: list[int], batch_id: int | None = None) -> list[KillResult]:
    # Reconcile without filling slots first: a queued job being killed must not be
    # started here a moment before it is stopped (its runner would not even have its
    # signal handlers yet). The slots this kill frees are filled at its end.
    with open_store(reconcile_first=False) as store:
        reconcile(store, fill=False)
        return _kill(store, job_ids, batch_id)


def _kill(store: Store, job_ids: list[int], batch_id: int | None) -> list[KillResult]:
    if batch_id is not None:
        store.get_batch(batch_id)
    for job_id in job_ids:
        store.get_job(job_id)  # an unknown id is an error before anything is stopped
    results: dict[int, KillResult] = {}
    for _ in range(5):  # a batch or a chain can grow while we work (a retry queued by a failure)
        ids = list(job_ids)
        if batch_id is not None:
            ids += store.batch_job_ids(batch_id)
        # A job asked for by id stands for its whole chain of attempts, as in `wait`:
        # a failed job whose retry is queued or running is stopped there.
        ids += [store.latest_attempt(i) for i in job_ids]
        jobs = [store.get_job(i) for i in dict.fromkeys(ids)]
        todo = [j for j in jobs if not j.state.is_final]
        # Cancel queued ones first so that stopping running ones frees no slot for them.
        for job in sorted(todo, key=lambda j: j.state != JobState.QUEUED):
            job = store.get_job(job.id)
            if job.state == JobState.QUEUED:
                results[job.id] = _cancel(store, job)
            elif job.state.is_active:
                results[job.id] = _stop(store, job)
        for job in jobs:
            results.setdefault(job.id, KillResult(job.id, job.state.value, job.state.value,
                                                  "already ended"))
        if not todo:
            break
    fill_slots(store)  # slots freed here go to other queued work, as with any ending
    return sorted(results.values(), key=lambda r: r.job_id)


def _cancel(store: Store, job: Job) -> KillResult:
    if end_without_runner(store, job, Ending(JobState.CANCELLED, "cancelled by `codexw kill`")):
        return KillResult(job.id, "queued", "cancelled", "removed from the queue")
    now = store.get_job(job.id)
    if now.state.is_active:
        return _stop(store, now)
    return KillResult(job.id, "queued", now.state.value, "ended meanwhile")


def _stop(store: Store, job: Job) -> KillResult:
    with store.transaction():
        store.request_kill(job.id)
    job = store.get_job(job.id)
    if job.state.is_final:
        return KillResult(job.id, "running", job.state.value, "ended meanwhile")
    grace = job.spec.kill_grace
    backend = backend_for(job.spec.backend)
    if backend.request_stop(job):
        ended = _wait_final(store, job.id, grace + backend.stop_wait)
        if ended is not None:
            return KillResult(job.id, job.state.value, ended.state.value, "stopped by its runner")
    # The runner is gone or stuck: stop the tree ourselves and record it.
    job = store.get_job(job.id)
    if job.state.is_final:
        return KillResult(job.id, "running", job.state.value, "ended meanwhile")
    backend.force_stop(job)
    end_without_runner(store, job, Ending(JobState.KILLED, "killed by `codexw kill` (runner did not respond)"))
    final = store.get_job(job.id)
    return KillResult(job.id, job.state.value, final.state.value, "process tree killed")


def _wait_final(store: Store, job_id: int, timeout: float) -> Job | None:
    deadline = time.monotonic() + timeout
    with Listener() as listener:
        while True:
            job = store.get_job(job_id)
            if job.state.is_final:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            listener.wait(min(left, 1.0))
