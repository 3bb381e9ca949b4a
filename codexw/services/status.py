"""Which jobs exist and how they are doing."""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from codexw.core import limiter, paths, process, scheduler
from codexw.core.models import Job, JobState
from codexw.core.notify import Listener
from codexw.core.process import reap_children
from codexw.core.scheduler import reconcile
from codexw.core.store import Store
from codexw.services.common import open_store, using_store


@dataclass
class ProcessInfo:
    pid: int
    name: str
    cpu_percent: float
    rss: int
    cmdline: str
    role: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class JobDetail:
    job: Job
    processes: list[ProcessInfo] = field(default_factory=list)
    attempts: list[Job] = field(default_factory=list)
    chain: list[Job] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = self.job.to_dict()
        data["processes"] = [p.to_dict() for p in self.processes]
        data["attempts"] = [j.id for j in self.attempts]
        data["chain"] = [j.id for j in self.chain]
        return data


@dataclass(frozen=True)
class JobQuery:
    """Which jobs `status` lists: the newest `limit` (None: all) of this project, of
    every project, or of one batch, optionally of one type and state."""

    cwd: str | None = None
    all_projects: bool = False
    job_type: str | None = None
    state: str | None = None
    batch_id: int | None = None
    limit: int | None = 10

    def __post_init__(self) -> None:
        if self.state is not None:
            JobState(self.state)  # validated by the CLI; a bad value here is a bug

    @property
    def project(self) -> str | None:
        """The project the listing is limited to: none for --all-projects or a batch."""
        if self.all_projects or self.batch_id is not None:
            return None
        return str(paths.project_root(self.cwd or os.getcwd()))


def list_jobs(query: JobQuery = JobQuery(), store: Store | None = None) -> list[Job]:
    with using_store(store) as store:
        return _list(store, query)


def _list(store: Store, query: JobQuery) -> list[Job]:
    if query.batch_id is not None:
        store.get_batch(query.batch_id)  # an unknown batch is an error, not an empty list
    jobs = store.list_jobs(project=query.project, job_type=query.job_type, state=query.state,
                           batch_id=query.batch_id, limit=query.limit)
    with_waiting(store, jobs)
    return jobs


def with_waiting(store: Store, jobs: list[Job]) -> None:
    """Say why each queued job of `jobs` waits (the scheduler's own plan decides)."""
    if any(j.state == JobState.QUEUED for j in jobs):
        waiting, _ = scheduler.waiting(store)
        for job in jobs:
            if job.state == JobState.QUEUED:
                job.waiting = waiting.get(job.id, limiter.SLOT)


@dataclass
class Limits:
    """The rate limiter's state: accounts with jobs or limits in force, and the waker."""

    accounts: list[limiter.AccountState]
    waker: dict[str, Any] | None  # {"pid", "until"}: the running waker, if any

    def to_dict(self) -> dict[str, Any]:
        return {"accounts": [a.to_dict() for a in self.accounts], "waker": self.waker}


def limits(store: Store | None = None) -> Limits:
    import time

    from codexw.core import waker

    with using_store(store, reconcile_first=False) as store, store.snapshot():
        queued: dict[str, int] = {}
        for q in store.queue():
            if q.account is not None:
                queued[q.account] = queued.get(q.account, 0) + 1
        states = limiter.account_states(store, queued, time.time())
    return Limits(states, waker.info())


def watch(query: JobQuery = JobQuery(), refresh: float = 1.0) -> Generator[list[Job], None, None]:
    """`list_jobs` now, then after every registry change and at least every `refresh`
    seconds (ages and durations move on), reconciling each time as `status` does;
    until the caller stops iterating."""
    # The listener first: a change between the first listing and the wait still wakes it.
    with Listener() as listener, open_store() as store:
        while True:
            yield _list(store, query)
            listener.wait(refresh)
            reap_children()
            reconcile(store)


@dataclass
class EmptyListing:
    """Why `status` listed nothing: what was filtered, and what exists besides."""

    project: str | None  # None: every project was asked for
    filters: list[str]  # "of type Bad", "in state failed", "in batch 3"
    unfiltered: int  # jobs in the same scope without the filters
    elsewhere: int  # jobs of other projects (when one project was asked for)
    other_projects: int


def explain_empty(query: JobQuery = JobQuery(), store: Store | None = None) -> EmptyListing:
    """Why `query` found nothing (its limit aside)."""
    job_type, state, batch_id = query.job_type, query.state, query.batch_id
    filters = [f"of type {job_type}" if job_type else "", f"in state {state}" if state else "",
               f"in batch {batch_id}" if batch_id is not None else ""]
    project = query.project
    with using_store(store, reconcile_first=False) as store:
        everything = len(store.job_ids())
        here = len(store.job_ids(project)) if project is not None else everything
        projects = store.projects()
        unfiltered = len(store.batch_job_ids(batch_id)) if batch_id is not None else here
    return EmptyListing(
        project=project,
        filters=[f for f in filters if f],
        unfiltered=unfiltered,
        elsewhere=everything - here if project is not None else 0,
        other_projects=len([p for p in projects if p != project]) if project is not None else 0,
    )


def _process_tree(job: Job) -> list[ProcessInfo]:
    import psutil

    found: list[ProcessInfo] = []
    roots: list[tuple[int, str]] = []
    if job.runner_pid:
        roots.append((job.runner_pid, "runner"))
    seen: set[int] = set()
    for pid, role in roots:
        try:
            proc = psutil.Process(pid)
            if not process.is_alive(pid, job.runner_start):
                continue
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                with p.oneshot():
                    found.append(
                        ProcessInfo(
                            pid=p.pid,
                            name=p.name(),
                            cpu_percent=p.cpu_percent(interval=None),
                            rss=p.memory_info().rss,
                            cmdline=" ".join(p.cmdline())[:200],
                            role=role if p.pid == pid else "codex",
                        )
                    )
            except psutil.Error:
                continue
    if found:
        # cpu_percent needs two samples; take the second after a short interval.
        import time

        time.sleep(0.2)
        for info in found:
            try:
                info.cpu_percent = psutil.Process(info.pid).cpu_percent(interval=None)
            except psutil.Error:
                pass
    return found


def job_detail(job_id: int, store: Store | None = None) -> JobDetail:
    with using_store(store) as store:
        job = store.get_job(job_id)
        with_waiting(store, [job])
        detail = JobDetail(job)
        if job.state.is_active:
            detail.processes = _process_tree(job)
        attempts = store.attempt_chain(job.id)
        detail.attempts = attempts if len(attempts) > 1 else []
        # Conversation chain: follow resume_of links back.
        chain = [job]
        while chain[-1].spec.resume_of is not None:
            previous = store.find_job(chain[-1].spec.resume_of)
            if previous is None:
                break
            chain.append(previous)
        detail.chain = list(reversed(chain)) if len(chain) > 1 else []
        return detail
