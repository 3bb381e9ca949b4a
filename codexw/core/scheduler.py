"""The daemonless queue: claim free slots, spawn runners, reconcile vanished ones.

A job starts only inside an IMMEDIATE transaction that sees a free slot (its batch
limit and its global limit), so any number of codexw processes can call
`fill_slots` at once without exceeding a bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from codexw.core import paths, process
from codexw.core.lifecycle import Ending, end_without_runner
from codexw.core.models import Job, JobState
from codexw.core.store.rows import Unreadable
from codexw.core.store import Store

# Popen objects of runners we spawned; polled so they never linger as zombies.
_children: list[subprocess.Popen[bytes]] = []


@dataclass
class ReconcileResult:
    lost: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    taken: Job | None = None  # a job claimed for the caller's own fork to run (take_one)


def reap_children() -> None:
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def forget_children() -> None:
    """In a forked process: the runners spawned before the fork are not its children."""
    _children.clear()


# The runner module per backend: a remote job's runner stands in for it on this machine.
RUNNER_MODULES = {"local": "codexw.runner", "celery": "codexw.backends.remote"}


def spawn_runner(
    job_id: int, backend: str = "local", job_key: str | None = None
) -> tuple[int, float | None]:
    """Start `python -m codexw.runner JOB KEY` detached: new session, stdin /dev/null."""
    reap_children()
    out = os.open(
        paths.logs_dir() / f"{job_id}.runner.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
    )
    env = dict(os.environ)
    env["CODEXW_STATE_DIR"] = str(paths.state_dir().resolve())
    try:
        child = subprocess.Popen(
            # -P: never import codexw from the current directory.
            [sys.executable, "-P", "-m", RUNNER_MODULES[backend], str(job_id),
             *([job_key] if job_key else [])],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
            cwd="/",
            env=env,
        )
    finally:
        os.close(out)
    _children.append(child)
    return child.pid, process.create_time(child.pid)


@dataclass
class _Plan:
    start: list[Job] = field(default_factory=list)
    cancel: list[tuple[Job, str]] = field(default_factory=list)
    damaged: list[Unreadable] = field(default_factory=list)  # queued rows that cannot be read

    def __bool__(self) -> bool:
        return bool(self.start or self.cancel or self.damaged)


def _plan(store: Store, now: float) -> _Plan:
    """Inside a transaction: which queued jobs start now, which are cancelled."""
    plan = _Plan()
    queued = store.queued_jobs(damaged=plan.damaged)
    if not queued:
        return plan
    start, cancel = plan.start, plan.cancel
    total, per_batch = store.active_counts()
    limits = store.batch_limits()
    halted = store.halted_batches()
    dep_states = store.states_of({d for job in queued for d in job.spec.after})
    for job in queued:
        batch = job.spec.batch_id
        if batch in halted:
            cancel.append((job, f"batch {batch} halted after a failure ({halted[batch]})"))
            continue
        if job.not_before is not None and job.not_before > now:
            continue
        blocked = None
        for dep in job.spec.after:
            state = dep_states.get(dep)
            if state is None:
                blocked = f"dependency job {dep} does not exist"
                break
            if state == JobState.SUCCEEDED:
                continue
            if state.is_final:
                blocked = f"dependency job {dep} {state.value}"
                break
            blocked = ""
        if blocked:
            cancel.append((job, blocked))
            continue
        if blocked == "":
            continue
        if job.spec.global_limit is not None and total >= job.spec.global_limit:
            continue
        limit = limits.get(batch) if batch is not None else None
        if limit is not None and per_batch.get(batch, 0) >= limit:
            continue
        start.append(job)
        total += 1
        if batch is not None:
            per_batch[batch] = per_batch.get(batch, 0) + 1
    return plan


def fill_slots(
    store: Store, result: ReconcileResult | None = None, take_one: bool = False
) -> ReconcileResult:
    """Start every queued job that has a free slot; cancel those that never can.

    `take_one` (a runner whose job just ended): the first startable local job is
    claimed for the caller (`result.taken`) instead of getting a new runner; the
    caller forks a child that adopts and runs it, which saves a Python start per job
    in a batch while each job still gets a process (and PID) of its own.
    """
    result = result or ReconcileResult()
    me = os.getpid()
    my_start = process.create_time(me)
    for _ in range(100):  # cancellations can cascade through dependencies
        # A look first, without the write lock: an idle `status --watch` or `wait`
        # must not queue behind writers (or wake anyone) to learn there is nothing to do.
        # Skipping on a consistent snapshot is safe: whoever changes the queue after it
        # (a launch, an ending runner, a kill) fills the slots itself.
        with store.snapshot():
            if not _plan(store, time.time()):
                break
        with store.transaction():
            plan = _plan(store, time.time())
            cancel = plan.cancel
            for damaged in plan.damaged:
                store.end_unreadable(damaged, time.time())
            claimed = [job for job in plan.start if store.mark_starting(job.id, me, my_start)]
            if take_one and result.taken is None:
                mine = next((j for j in claimed if j.spec.backend == "local"), None)
                if mine is not None:
                    result.taken = mine
                    claimed.remove(mine)
        for job, reason in cancel:
            if end_without_runner(store, job, Ending(JobState.CANCELLED, reason)):
                result.cancelled.append(job.id)
        spawned: list[tuple[int, int, float | None]] = []
        for job in claimed:
            try:
                pid, start_time = spawn_runner(job.id, job.spec.backend, job.job_key)
            except OSError as exc:
                job = store.get_job(job.id)
                end_without_runner(
                    store,
                    job,
                    Ending(JobState.FAILED, f"could not start the runner: {exc.strerror or exc}"),
                )
                continue
            spawned.append((job.id, pid, start_time))
            result.started.append(job.id)
        if spawned:
            with store.transaction():
                for job_id, pid, start_time in spawned:
                    store.adopt(job_id, pid, start_time)
        if not cancel:
            break
    return result


def reconcile(store: Store, fill: bool = True) -> ReconcileResult:
    """Mark jobs whose runner is gone as lost (killing what is left of their codex
    group), give back claims of dead claimers, then fill free slots.

    A row that cannot be read is handled on its own (`_end_unreadable`): one damaged
    job must not stop every command of every project."""
    result = ReconcileResult()
    damaged: list[Unreadable] = []
    for job in store.active_jobs(damaged=damaged):
        if job.state == JobState.STARTING and job.runner_pid is None:
            if not process.is_alive(job.claimed_by_pid, job.claimed_by_start):
                with store.transaction():
                    if store.unclaim(job.id):
                        result.requeued.append(job.id)
            continue
        if process.is_alive(job.runner_pid, job.runner_start):
            continue
        kill_leftover_group(job)
        ending = Ending(
            JobState.LOST,
            f"runner (pid {job.runner_pid}) ended without recording an outcome",
            retryable=True,
        )
        if end_without_runner(store, job, ending):
            result.lost.append(job.id)
    for row in damaged:
        if _end_unreadable(store, row):
            result.lost.append(row.job.id)
    if fill:
        fill_slots(store, result)
    return result


def _end_unreadable(store: Store, row: Unreadable) -> bool:
    """An active job whose row cannot be read: left to its runner while that provably
    runs (its outcome may still be recorded), else ended `lost` with the reason."""
    job = row.job
    if process.is_alive(job.runner_pid, job.runner_start):
        return False
    if job.spec.backend == "local":  # the group is checked by its marker before any signal
        try:
            kill_leftover_group(job)
        except OSError:
            pass
    with store.transaction():
        return store.end_unreadable(row, time.time())


def kill_leftover_group(job: Job) -> None:
    """After a runner vanished, nothing of its codex process group may survive.

    The group is signalled only if one of its members still carries this job's
    marker in its environment: a recorded pgid can have been reused by an unrelated
    group (long after, or after a reboot), and that one must never be touched.
    A remote job's codex runs on a worker: its task is flagged killed and revoked."""
    if job.spec.backend != "local":
        from codexw.backends.remote import revoke  # imports celery: remote jobs only

        revoke(job)
        return
    if not job.codex_pgid or not process.group_exists(job.codex_pgid):
        return
    marker = process.job_marker(job.id, str(paths.state_dir().resolve()))
    if process.group_carries(job.codex_pgid, marker):
        process.terminate_group(job.codex_pgid, grace=min(job.spec.kill_grace, 5.0))
