"""Submit a batch (validated whole, queued in one transaction) and watch it run."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from codexw.core import batchfile, limiter, paths
from codexw.core.config import load_config
from codexw.core.errors import UsageError
from codexw.core.models import ACTIVE_STATES, Job, JobSpec, JobState
from codexw.core.notify import Listener
from codexw.core.process import reap_children
from codexw.core.scheduler import fill_slots, reconcile
from codexw.core.store import Store
from codexw.core.validate import check_int, check_max_parallel, check_notify, int_range
from codexw.services.common import open_store
from codexw.services.launch import LaunchRequest, enqueue, prepare

if TYPE_CHECKING:
    from codexw.services.isolation import Overlap

DEFAULT_MAX_PARALLEL = 4
# Seconds between two snapshots of a watched batch: a snapshot reads every job of the
# batch, and the live display redraws four times a second anyway.
MIN_REFRESH = 0.25


@dataclass
class BatchRequest:
    source: str
    text: str
    # Flags for every task; a task's own level/type/model/timeout/retries win.
    defaults: LaunchRequest = field(default_factory=lambda: LaunchRequest(task=""))
    fmt: str | None = None
    max_parallel: int | None = None
    halt_on_failure: bool = False
    # Stop starting the batch's jobs once its attempts used this many tokens.
    budget_tokens: int | None = None
    # The batch's end is announced once (defaults.notify, else the config's `notify`);
    # with `notify_each`, every job's end too.
    notify_each: bool = False


@dataclass
class BatchSubmitted:
    batch_id: int
    job_ids: list[int]
    max_parallel: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_id": self.batch_id,
            "job_ids": self.job_ids,
            "max_parallel": self.max_parallel,
            "warnings": self.warnings,
        }


def submit(req: BatchRequest) -> BatchSubmitted:
    """Parse and validate every task first; queue all of them or none."""
    if req.max_parallel is not None:
        check_max_parallel(req.max_parallel)
    entries = batchfile.parse(req.source, req.text, req.fmt)
    base = req.defaults
    project = paths.project_root(base.cwd or os.getcwd())
    config = load_config(project)
    max_parallel = req.max_parallel or config.max_parallel or DEFAULT_MAX_PARALLEL
    if req.budget_tokens is not None:
        check_int(req.budget_tokens, "--budget-tokens", *int_range("budget_tokens"))
    notify = base.notify if base.notify is not None else config.notify
    check_notify(notify, "--notify" if base.notify is not None
                 else config.sources.get("notify", "--notify"))
    base = replace(base, notify=notify if req.notify_each else ())
    specs: list[JobSpec] = []
    warnings: list[str] = []
    accounts: dict[str, dict[str, object]] = {}
    for entry in entries:
        try:
            prepared = prepare(
                replace(
                    base,
                    task=entry.task,
                    level=entry.level or base.level,
                    type=entry.type or base.type,
                    model=entry.model or base.model,
                    timeout=entry.timeout or base.timeout,
                    retries=entry.retries if entry.retries is not None else base.retries,
                    priority=entry.priority,
                    name=entry.name,
                    worktree=entry.worktree if entry.worktree is not None else base.worktree,
                    include_dirty=base.include_dirty and (
                        entry.worktree if entry.worktree is not None else base.worktree
                    ) is not False,
                ),
                config,
            )
        except UsageError as exc:
            raise UsageError(f"{entry.where}: {exc.message}", exc.hint) from None
        specs.append(prepared.spec)
        accounts.update(prepared.account)
        warnings.extend(w for w in prepared.warnings if w not in warnings)
    shared = [s for s in specs if s.isolation == "none" and s.sandbox != "read-only"]
    if len(shared) > 1 and max_parallel > 1:
        warnings.append(
            f"{len(shared)} jobs of this batch may write to one working tree at once"
            f" (-j {max_parallel}); --worktree gives each its own (docs/isolation.md)"
        )
    index = {e.name: i for i, e in enumerate(entries) if e.name}
    deps = [(i, index[name]) for i, e in enumerate(entries) for name in e.after]
    with open_store() as store:
        batch_id, ids = enqueue(
            store,
            specs,
            deps=deps,
            batch={
                "project": str(project),
                "source": req.source,
                "max_parallel": max_parallel,
                "halt_on_failure": req.halt_on_failure,
                "budget_tokens": req.budget_tokens,
                "notify": notify,
            },
            accounts=accounts,
        )
        fill_slots(store)
    assert batch_id is not None
    return BatchSubmitted(batch_id, ids, max_parallel, warnings)


@dataclass
class BatchSnapshot:
    batch_id: int
    jobs: list[Job]  # the latest attempt of each task, in submission order
    started_at: float
    # Isolated jobs of the batch that touched the same files (services.isolation), as
    # of the last look (at most every OVERLAP_INTERVAL).
    overlaps: list[Overlap] = field(default_factory=list)
    # Accounts of its jobs that hold starts back now (rate-limited, budget spent).
    accounts: list[limiter.AccountState] = field(default_factory=list)

    @property
    def unstarted(self) -> list[int]:
        """Jobs never started because the batch used its token budget."""
        return [j.id for j in self.jobs if j.state == JobState.CANCELLED
                and j.started_at is None and limiter.BUDGET_SPENT in (j.reason or "")]

    def count(self, *states: JobState) -> int:
        return sum(1 for j in self.jobs if j.state in states)

    @property
    def done(self) -> bool:
        return all(j.state.is_final for j in self.jobs)

    @property
    def succeeded(self) -> int:
        return self.count(JobState.SUCCEEDED)

    @property
    def failed(self) -> int:
        return sum(1 for j in self.jobs if j.state.is_final and j.state != JobState.SUCCEEDED)

    @property
    def running(self) -> int:
        return self.count(*ACTIVE_STATES)

    @property
    def queued(self) -> int:
        return self.count(JobState.QUEUED)

    @property
    def tokens(self) -> dict[str, int]:
        """Every job's token counts, added up."""
        tokens: dict[str, int] = {}
        for job in self.jobs:
            for key, value in job.tokens.items():
                tokens[key] = tokens.get(key, 0) + value
        return tokens

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_id": self.batch_id,
            "total": len(self.jobs),
            "succeeded": self.succeeded,
            "failed": self.failed,
            "running": self.running,
            "queued": self.queued,
            "tokens": self.tokens,
            "unstarted": self.unstarted,
            "accounts": [a.to_dict() for a in self.accounts],
            "jobs": [j.to_dict() for j in self.jobs],
            "overlaps": [o.to_dict() for o in self.overlaps],
        }


def snapshot(store: Store, batch_id: int, started_at: float | None = None) -> BatchSnapshot:
    batch = store.get_batch(batch_id)
    latest = store.batch_latest(batch_id)
    jobs = [latest[k] for k in sorted(latest)]
    mine = {j.spec.account for j in jobs if not j.state.is_final}
    queued: dict[str, int] = {}
    for job in jobs:
        if job.state == JobState.QUEUED and job.spec.account is not None:
            queued[job.spec.account] = queued.get(job.spec.account, 0) + 1
    accounts = [a for a in limiter.account_states(store, queued, time.time())
                if a.id in mine and (a.throttled or a.budget_spent)] if mine else []
    return BatchSnapshot(batch_id, jobs, started_at or batch.created_at, accounts=accounts)


OVERLAP_INTERVAL = 3.0  # seconds between two looks at isolated jobs' changes (git diffs)


def watch(batch_id: int, safety_interval: float = 2.0) -> Iterator[BatchSnapshot]:
    """Yield a snapshot now and after every registry change until the batch is done.

    Also reconciles now and then, so a crashed runner's slot is refilled even if
    nothing else runs.
    """
    with open_store(reconcile_first=False) as store, Listener() as listener:
        store.get_batch(batch_id)
        last_reconcile = last_snapshot = last_overlaps = 0.0
        overlaps: list[Overlap] = []
        ended = 0
        while True:
            if time.monotonic() - last_reconcile >= safety_interval:
                reap_children()
                reconcile(store)
                last_reconcile = time.monotonic()
            # Coalesce bursts of registry writes: at most ten snapshots a second.
            time.sleep(max(0.0, last_snapshot + MIN_REFRESH - time.monotonic()))
            last_snapshot = time.monotonic()
            snap = snapshot(store, batch_id)
            now_ended = sum(1 for j in snap.jobs if j.state.is_final)
            if any(j.spec.branch for j in snap.jobs) and (
                    now_ended != ended or snap.done
                    or time.monotonic() - last_overlaps >= OVERLAP_INTERVAL):
                from codexw.services.isolation import compare

                overlaps = compare(snap.jobs)[1]
                last_overlaps, ended = time.monotonic(), now_ended
            snap.overlaps = overlaps
            yield snap
            if snap.done:
                return
            wait = safety_interval
            due = store.next_due(time.time())
            if due is not None:
                wait = max(0.0, min(wait, due - time.time() + 0.05))
            listener.wait(wait)
