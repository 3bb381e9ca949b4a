"""`codexw continue`: a follow-up job in an earlier job's codex conversation."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from codexw.core import validate
from codexw.core.errors import UsageError
from codexw.core.models import REMOTE_BACKENDS, Job
from codexw.core.scheduler import fill_slots
from codexw.core.store import Store
from codexw.services.common import open_store
from codexw.services.launch import (
    LaunchRequest,
    LaunchResult,
    enqueue,
    not_started_because,
    prepare,
    validate_task,
)


@dataclass
class ContinueRequest:
    job_id: int
    task: str
    level: str | None = None
    model: str | None = None
    timeout: str | None = None
    retries: int | None = None


def conversation_of(store: Store, job_id: int) -> Job:
    """The job whose codex thread a follow-up to `job_id` resumes: its newest attempt
    that has a thread id."""
    job = store.get_job(job_id)
    attempts = store.attempt_chain(store.latest_attempt(job.id))
    newest = attempts[-1] if attempts else job
    if newest.state.is_open:
        raise UsageError(
            f"job {newest.id} is still {newest.state.value}: a conversation takes one turn at a time",
            f"wait for it first: codexw wait {newest.id}",
        )
    for attempt in reversed(attempts or [job]):
        if attempt.thread_id:
            busy = [j for j in store.active_jobs() + store.queued_jobs()
                    if attempt.thread_id in (j.thread_id, j.spec.resume_thread)]
            if busy:
                raise UsageError(
                    f"job {busy[0].id} is already {busy[0].state.value} in this conversation:"
                    " it takes one turn at a time",
                    f"wait for it first (codexw wait {busy[0].id}), then continue job {busy[0].id}",
                )
            return attempt
    raise UsageError(
        f"job {job_id} has no codex conversation to continue (it never started a thread)",
        f"start a new job instead: codexw launch, or codexw retry {job_id}",
    )


def continue_job(req: ContinueRequest) -> LaunchResult:
    """A new job that resumes job `req.job_id`'s codex conversation with a follow-up.

    It runs in the same directory, with the same CODEX_HOME (where codex keeps the
    session), sandbox and codex options; level, model, timeout and retries follow the
    earlier job unless given.
    """
    validate_task(req.task)
    validate.check_fields(req)  # before any registry read: ids and numbers fit it
    with open_store() as store:
        return _continue(store, req)


def _continue(store: Store, req: ContinueRequest) -> LaunchResult:
    parent = conversation_of(store, req.job_id)
    ps = parent.spec
    if "--ephemeral" in ps.codex_args:
        raise UsageError(
            f"job {parent.id} ran with --ephemeral: codex kept no session to resume",
            "start a new job instead",
        )
    if not os.path.isdir(ps.cwd):
        raise UsageError(f"job {parent.id}'s working directory {ps.cwd} no longer exists")
    prepared = prepare(
        LaunchRequest(
            task=req.task,
            level=req.level or ps.level,
            type=ps.type,
            model=req.model or ps.model,
            sandbox=ps.sandbox,
            cwd=ps.cwd,
            timeout=req.timeout,
            retries=req.retries if req.retries is not None else ps.retries,
            # A remote conversation lives in the workers' shared CODEX_HOME: stay there.
            backend=ps.backend,
            broker_url=ps.broker_url,
            queue=ps.queue,
            worktree=False,  # a follow-up runs where its conversation ran: set below
        )
    )
    spec = replace(
        prepared.spec,
        timeout=prepared.spec.timeout if req.timeout else ps.timeout,
        retry_timeouts=ps.retry_timeouts,
        report_sections=ps.report_sections,
        codex_args=ps.codex_args,
        codex_home=ps.codex_home,
        resume_thread=parent.thread_id,
        resume_of=parent.id,
        # An isolated conversation goes on in its worktree, on its branch (made again from
        # the branch if the worktree was removed; core.worktree.prepare).
        isolation=ps.isolation, base_commit=ps.base_commit, branch=ps.branch,
        worktree=ps.worktree, branch_prefix=ps.branch_prefix, worktree_copy=ps.worktree_copy,
        worktree_setup=ps.worktree_setup, dirty_base=ps.dirty_base,
        account=ps.account or prepared.spec.account,
    )
    validate.check_spec(spec)  # the thread id came from codex; old rows predate the checks
    warnings = [w for w in prepared.warnings if "git repository" not in w]
    if ps.backend not in REMOTE_BACKENDS and (os.environ.get("CODEX_HOME") or None) != ps.codex_home:
        warnings.append(
            f"using job {parent.id}'s CODEX_HOME ({ps.codex_home or '~/.codex'}), where its"
            " session is"
        )
    # Two follow-ups racing for one conversation: only one gets in.
    (job_id,) = enqueue(store, [spec], recheck=lambda st: conversation_of(st, req.job_id),
                        accounts={k: v for k, v in prepared.account.items() if k == spec.account})[1]
    fill_slots(store)
    job = store.get_job(job_id)
    return LaunchResult(job, warnings, not_started_because(store, job))
