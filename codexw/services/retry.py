"""`codexw retry`: re-run ended jobs as new attempts linked to the old ones."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

from codexw.core import envfile, lifecycle
from codexw.core.config import load_config
from codexw.core.errors import UsageError
from codexw.core.models import REMOTE_BACKENDS, Job, JobState
from codexw.core.scheduler import fill_slots
from codexw.core.store import Store
from codexw.core.validate import check_depth, check_spec
from codexw.services.common import open_store
from codexw.services.launch import inherited_depth, save_launch_env, with_launch_env

RETRYABLE_BY_HAND = {
    JobState.FAILED, JobState.TIMED_OUT, JobState.KILLED, JobState.LOST, JobState.CANCELLED
}


@dataclass
class Retried:
    old_id: int
    new_id: int

    def to_dict(self) -> dict[str, int]:
        return {"old_id": self.old_id, "new_id": self.new_id}


def _latest(store: Store, job_id: int) -> Job:
    return store.get_job(store.latest_attempt(job_id))


def retry_jobs(job_ids: list[int], batch_id: int | None = None, failed_only: bool = False) -> list[Retried]:
    """Explicit ids must be ended and not succeeded; `--failed --batch` picks them."""
    with open_store() as store:
        return _retry(store, job_ids, batch_id, failed_only)


def _retry(store: Store, job_ids: list[int], batch_id: int | None,
           failed_only: bool) -> list[Retried]:
    chosen: list[Job] = []
    if batch_id is not None:
        store.get_batch(batch_id)
        for job_id in store.batch_job_ids(batch_id):
            job = store.get_job(job_id)
            if job.retry_of is not None:
                continue  # reached through its first attempt
            latest = _latest(store, job.id)
            if latest.state in RETRYABLE_BY_HAND and (not failed_only or latest.state != JobState.KILLED):
                chosen.append(latest)
    for job_id in job_ids:
        latest = _latest(store, job_id)
        if latest.id != job_id and not latest.state.is_final:
            raise UsageError(f"job {job_id} is already being retried as job {latest.id}")
        if latest.state == JobState.SUCCEEDED:
            raise UsageError(f"job {latest.id} succeeded; nothing to retry",
                             "use `codexw launch` to run the task again")
        if not latest.state.is_final:
            raise UsageError(f"job {latest.id} is still {latest.state.value}",
                             "wait for it or kill it first")
        chosen.append(latest)
    if not chosen:
        if batch_id is not None:
            return []
        raise UsageError("nothing to retry", "give job ids, or --failed --batch N")
    chosen = _dependencies_first(sorted({j.id: j for j in chosen}.values(), key=lambda j: j.id))
    for job in chosen:  # a row recorded before today's checks must not kill a runner again
        try:
            check_spec(job.spec)
        except UsageError as exc:
            raise UsageError(f"job {job.id} cannot be retried: {exc.message}", exc.hint) from None
    # A retry by hand runs with the environment of the command that asks for it,
    # so it is bounded by that command's depth like a launch.
    check_depth(os.environ, load_config(chosen[0].spec.project).max_depth, inherited_depth())
    _, env_key = with_launch_env([j.spec for j in chosen])
    done: list[Retried] = []
    try:
        _queue_retries(store, chosen, env_key, done)
    except BaseException:
        if env_key is not None:  # rolled back: nobody needs it
            envfile.remove(env_key)
        raise
    fill_slots(store)
    return done


def _queue_retries(store: Store, chosen: list[Job], env_key: str | None,
                   done: list[Retried]) -> None:
    with store.transaction():
        for job in chosen:
            if store.latest_attempt(job.id) != job.id:
                continue  # another retry of this job was queued since we looked
            # Dependencies point at the newest attempt of each dependency.
            after = tuple(store.latest_attempt(d) for d in job.spec.after)
            new_id = lifecycle.queue_with_report(
                store,
                replace(job.spec, after=after,
                        env_key=None if job.spec.backend in REMOTE_BACKENDS else env_key),
                time.time(),
                attempt=job.attempt + 1, retry_of=job.id,
            )
            store.repoint_deps(job.id, new_id)
            if job.spec.batch_id is not None:
                store.clear_halt(job.spec.batch_id)
            done.append(Retried(job.id, new_id))
        if done:
            save_launch_env(env_key)


def _dependencies_first(jobs: list[Job]) -> list[Job]:
    """Order so that a job comes after the jobs it depends on (when both are retried)."""
    pending = {j.id: j for j in jobs}
    ordered: list[Job] = []
    while pending:
        ready = [j for j in pending.values() if not set(j.spec.after) & pending.keys()]
        if not ready:  # a cycle cannot be queued in the first place; keep id order
            ready = list(pending.values())
        for job in ready:
            ordered.append(job)
            del pending[job.id]
    return ordered
