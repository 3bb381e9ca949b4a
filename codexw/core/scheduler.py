"""The daemonless queue: claim free slots, start jobs, reconcile vanished ones.

A job starts only inside an IMMEDIATE transaction that sees a free slot (its batch
limit and its global limit), so any number of codexw processes can call
`fill_slots` at once without exceeding a bound. Jobs are started, checked and
cleaned up through their backend (core.backend), which this module never imports.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from codexw.core import announce, limiter, process
from codexw.core.backend import Backend, backend_for
from codexw.core.lifecycle import Ending, end_without_runner, forget_launch_env
from codexw.core.models import Job, JobState
from codexw.core.store import Store
from codexw.core.store.rows import Unreadable


@dataclass
class ReconcileResult:
    lost: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    taken: Job | None = None  # a job the caller adopted to run itself (take_one)
    deadline: float | None = None  # the earliest time a queued job's wait ends by itself


@dataclass
class _Plan:
    start: list[Job] = field(default_factory=list)
    cancel: list[tuple[Job, str]] = field(default_factory=list)
    damaged: list[Unreadable] = field(default_factory=list)  # queued rows that cannot be read
    # Why each queued job that does not start waits (limiter.THROTTLED, BUDGET, SLOT,
    # AFTER), and the earliest time one of these waits ends by itself (a backoff, a
    # cool-down, the start bucket, a token window): the waker's alarm.
    waiting: dict[int, str] = field(default_factory=dict)
    deadline: float | None = None
    gate: limiter.Gate | None = None

    def __bool__(self) -> bool:
        return bool(self.start or self.cancel or self.damaged)


def _plan(store: Store, now: float) -> _Plan:
    """Inside a transaction: which queued jobs start now, which are cancelled, and why
    the others wait.

    Decided on a few columns per queued job (store.queue()); whole rows are read only
    for the jobs acted on, and a damaged one goes to `damaged`, never to a slot."""
    plan = _Plan()
    queued = store.queue()
    if not queued:
        return plan
    start: list[int] = []
    cancel: list[tuple[int, str]] = []
    waiting = plan.waiting
    suspects = [q.id for q in queued if q.suspect]
    total, per_batch = store.active_counts()
    limits = store.batch_limits()
    halted = store.halted_batches()
    budgets = store.batch_budgets()
    gate = plan.gate = limiter.Gate(store, (q.account for q in queued), now)
    dep_states = store.states_of({d for q in queued for d in q.after})
    deadline: float | None = None
    for q in queued:
        if q.suspect:
            continue
        batch = q.batch_id
        if batch in halted:
            cancel.append((q.id, f"batch {batch} halted after a failure ({halted[batch]})"))
            continue
        if batch in budgets and budgets[batch][1] >= budgets[batch][0]:
            budget, used = budgets[batch]
            cancel.append((q.id, f"not started: batch {batch} {limiter.BUDGET_SPENT}"
                                 f" ({used} of {budget} tokens)"))
            continue
        blocked = None
        for dep in q.after:
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
            cancel.append((q.id, blocked))
            continue
        if blocked == "":
            waiting[q.id] = limiter.AFTER
            continue
        why = gate.check(q.account)
        if why is not None:
            waiting[q.id] = why
            continue
        if q.not_before is not None and q.not_before > now:
            waiting[q.id] = limiter.AFTER  # a retry's backoff
            deadline = q.not_before if deadline is None else min(deadline, q.not_before)
            continue
        if q.global_limit is not None and total >= q.global_limit:
            waiting[q.id] = limiter.SLOT
            continue
        if batch is not None:
            limit = limits.get(batch)
            if limit is not None and per_batch.get(batch, 0) >= limit:
                waiting[q.id] = limiter.SLOT
                continue
            per_batch[batch] = per_batch.get(batch, 0) + 1
        gate.started(q.account)
        start.append(q.id)
        total += 1
    if gate.deadline is not None:
        deadline = gate.deadline if deadline is None else min(deadline, gate.deadline)
    plan.deadline = deadline
    jobs = store.jobs_by_id(start + [i for i, _ in cancel] + suspects, damaged=plan.damaged)
    plan.start = [jobs[i] for i in start if i in jobs]
    plan.cancel = [(jobs[i], why) for i, why in cancel if i in jobs]
    return plan


def waiting(store: Store) -> tuple[dict[int, str], float | None]:
    """Why each queued job waits, and when the earliest time-bound wait ends (on a read
    snapshot: for listings and the waker)."""
    with store.snapshot():
        plan = _plan(store, time.time())
    return plan.waiting, plan.deadline


def fill_slots(
    store: Store, result: ReconcileResult | None = None, take_one: bool = False
) -> ReconcileResult:
    """Start every queued job that has a free slot; cancel those that never can.

    A queued job left waiting for a time (a backoff, a cool-down, a budget window)
    gets the state dir's waker (core/waker.py), which starts it then.

    `take_one` (the fork of a runner whose job just ended): the first startable local
    job is adopted by the calling process in the same transaction (`result.taken`)
    instead of getting a new runner, which saves a Python start per job in a batch
    while each job still gets a process (and PID) of its own.
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
            plan = _plan(store, time.time())
            result.deadline = plan.deadline
            if not plan:
                break
        with store.transaction():
            plan = _plan(store, time.time())
            result.deadline = plan.deadline
            cancel = plan.cancel
            for damaged in plan.damaged:
                if store.end_unreadable(damaged, time.time()):
                    forget_launch_env(store, damaged.job.spec.env_key)
            claimed = [job for job in plan.start if store.mark_starting(job.id, me, my_start)]
            if claimed and plan.gate is not None:
                plan.gate.book()
            if take_one and result.taken is None:
                mine = next((j for j in claimed if j.spec.backend == "local"), None)
                if mine is not None and store.adopt(mine.id, me, my_start, mine.job_key):
                    result.taken = mine
                    claimed.remove(mine)
        for job, reason in cancel:
            if end_without_runner(store, job, Ending(JobState.CANCELLED, reason)):
                result.cancelled.append(job.id)
        spawned: list[tuple[int, int, float | None]] = []
        for job in claimed:
            try:
                pid, start_time = backend_for(job.spec.backend).start(job)
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
    if result.deadline is not None:
        # A queued job waits for a time: whoever leaves, the waker starts it then.
        from codexw.core import waker

        waker.ensure(result.deadline)
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
        backend = backend_for(job.spec.backend)
        if backend.is_alive(job):
            continue
        backend.stop_leftovers(job)
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
    announce.pick_up(store, time.time())  # a job-end announcement nobody is sending
    return result


def _end_unreadable(store: Store, row: Unreadable) -> bool:
    """An active job whose row cannot be read: left to its runner while that provably
    runs (its outcome may still be recorded), else ended `lost` with the reason."""
    job = row.job
    if process.is_alive(job.runner_pid, job.runner_start):
        return False
    backend = _known_backend(job)
    if backend is not None and job.spec.backend == "local":  # the group's marker is checked
        try:
            backend.stop_leftovers(job)
        except OSError:
            pass
    with store.transaction():
        ended = store.end_unreadable(row, time.time())
        if ended:
            forget_launch_env(store, job.spec.env_key)
        return ended


def _known_backend(job: Job) -> Backend | None:
    try:
        return backend_for(job.spec.backend)
    except (KeyError, TypeError, ImportError):
        return None
