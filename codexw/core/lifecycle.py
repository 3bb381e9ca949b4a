"""How a job ends: the final report, the recorded outcome, and the retry that may follow.

Used by the process that ran a job (`finalize`: the local runner, a remote job's
stand-in), by reconcile (a runner that vanished) and by kill/cancel (a job that never
got a runner): `end_without_runner`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codexw.core import (
    announce,
    envfile,
    events,
    limiter,
    naming,
    paths,
    process,
    reports,
    templates,
)
from codexw.core.codex import RunSummary
from codexw.core.errors import CodexwError
from codexw.core.models import TOKEN_KEYS, Job, JobSpec, JobState
from codexw.core.store import Store

# What `--halt-on-failure` reacts to: failures, not what a user cancelled or killed.
HALTING = frozenset({JobState.FAILED, JobState.TIMED_OUT, JobState.LOST})
RECORD_RETRY_LIMIT = 900.0  # keep trying this long to record an outcome (disk full)


@dataclass
class Ending:
    state: JobState
    reason: str | None = None
    exit_code: int | None = None
    retryable: bool = False
    # Rate-limited (core/limiter.py): requeued without counting against --retries;
    # `retry_after`: seconds until the limit lifts, when codex said so.
    rate_limited: bool = False
    retry_after: float | None = None


def log_path(job_id: int) -> Path:
    return paths.logs_dir() / naming.job_log(job_id)


def summary_from_log(job: Job) -> RunSummary:
    """Rebuild what a run did from its event log (for jobs whose runner is gone)."""
    summary = RunSummary()
    path = Path(job.log_path) if job.log_path else log_path(job.id)
    try:
        # Fixed-size reads through the splitter: a 50 MB line is never held whole.
        with path.open("rb", buffering=0) as fh:
            while chunk := fh.read(events.READ_SIZE):
                summary.feed_bytes(chunk)
    except OSError:
        pass
    summary.end_of_stream()
    return summary


def write_temp_report(
    job: Job, summary: RunSummary | None = None, path: Path | None = None
) -> Path:
    path = path or reports.temp_report_path(job)
    reports.atomic_replace(path, reports.render_temp(job, summary), durable=False)
    return path


def record_progress(store: Store, job: Job, summary: RunSummary) -> None:
    """Best effort, while a job runs: its last action and tokens, and its live TEMP report.
    The outcome is recorded at the end whatever happens here."""
    try:
        with store.transaction():
            store.update_progress(
                job.id, summary.last_action, summary.usage, summary.thread_id, job.job_key
            )
    except CodexwError:
        pass
    try:
        write_temp_report(job, summary)
    except (OSError, CodexwError):
        pass


def queue_with_report(
    store: Store, spec: JobSpec, now: float, *, report_required: bool = True, **kw: Any
) -> int:
    """Inside a transaction: insert a job and write its TEMP report before anyone can
    claim it, so the report path is recorded once and never races a fast runner.

    A TEMP report that cannot be written raises OSError (the caller's transaction rolls
    back) unless `report_required` is False: then the job is queued without one and
    its runner writes it."""
    job_id = store.insert_job(spec, now=now, **kw)
    job = store.get_job(job_id)
    if spec.isolation != "none":
        from codexw.core import worktree

        where = worktree.assign(spec, job_id, job.job_key)
        if where is not None:  # a branch and worktree of its own (or of the conversation)
            store.set_worktree(job_id, *where)
            job = store.get_job(job_id)
    try:
        path = write_temp_report(job, path=reports.new_temp_report_path(job))
    except OSError:
        if report_required:
            raise
        return job_id
    store.set_paths(job_id, str(path), None)
    return job_id


def write_final_report(job: Job, summary: RunSummary | None) -> tuple[Path | None, str | None]:
    """Render and write the final report, remove the TEMP one.

    Returns (path, problem). A template that fails (an error, or past the bounds of
    templates.render_final) falls back to the built-in template, then to the plain live
    format, so that the outcome is never lost; a report that cannot be written at
    all returns (None, why) and the caller records why.
    """
    temp = reports.temp_report_path(job)
    text, problem = _render_report(job, summary)
    try:
        final = reports.atomic_create(temp.with_name(reports.final_report_name(job)), text)
    except OSError as exc:
        return _report_elsewhere(job, temp, text, exc)
    if job.job_key is not None and not reports.carries_key(temp, job.job_key):
        return final, problem  # not provably this attempt's TEMP (or gone): never removed
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problem = (problem + "; " if problem else "") + f"TEMP report not removed: {exc.strerror}"
    return final, problem


def _render_report(job: Job, summary: RunSummary | None) -> tuple[str, str | None]:
    """The final report's text, and what went wrong with the job's own template."""
    template: Path | None = None
    try:
        template = templates.template_for(job.spec.type, _templates_dir(job))
        return templates.render_final(template, job, summary), None
    except CodexwError as exc:
        problem = f"report template failed: {exc.message}"
    try:
        builtin = templates.template_for(job.spec.type, None)
        if builtin != template:
            text = templates.render_final(builtin, job, summary)
            return text + f"\n\n> {problem}; the built-in template was used\n", problem
    except CodexwError:
        pass
    text = reports.render_temp(job, summary, state=job.state.value) + f"\n\n> {problem}\n"
    return text, problem


def _report_elsewhere(
    job: Job, temp: Path, text: str, exc: OSError
) -> tuple[Path | None, str]:
    """The report folder cannot take the final report (deleted and not re-creatable,
    read-only, full): write it under <state dir>/reports/<type>/ instead; failing
    that, point at the last live report if it is still there, else at the event log.
    Returns (where the report is or None, what happened and where the output went)."""
    why = f"report could not be written in {temp.parent} ({exc.strerror or exc})"
    log = job.log_path or str(log_path(job.id))
    try:
        name = reports.final_report_name(job)
        fallback = reports.atomic_create(paths.state_dir() / "reports" / job.spec.type / name, text)
    except OSError:
        pass
    else:
        return fallback, f"{why}; it was written to {fallback} instead"
    if temp.is_file():
        return temp, f"{why}; the last live report is {temp}, the event log is {log}"
    return None, f"{why}; the event log is {log}"


def warm_final_report(job: Job) -> None:
    """Load the renderer while codex shuts down, so the outcome is recorded sooner."""
    try:
        templates.warm(templates.template_for(job.spec.type, _templates_dir(job)))
    except CodexwError:
        pass


def _templates_dir(job: Job) -> str | None:
    return str(Path(job.spec.template).parent) if job.spec.template else None


def backoff_delay(job: Job) -> float:
    """Exponential backoff with jitter; each attempt waits longer than the one before."""
    base = job.spec.backoff_base * (2.0 ** (job.attempt - 1))
    jitter = int.from_bytes(os.urandom(2), "big") / 65535  # no `random`: keeps the runner small
    return min(job.spec.backoff_max, base) * (1 + 0.25 * jitter)


def wants_retry(job: Job, ending: Ending) -> bool:
    if job.attempt - job.rate_limited > job.spec.retries:  # rate-limited ones are free
        return False
    if ending.state == JobState.TIMED_OUT:
        return job.spec.retry_timeouts
    if ending.state in (JobState.FAILED, JobState.LOST):
        return ending.retryable
    return False


def record_end(
    store: Store,
    job: Job,
    ending: Ending,
    *,
    ended_at: float,
    summary: RunSummary | None,
    report_path: str | None,
    only_runner_pid: int | None = None,
    expect_state: JobState | None = None,
    announce_after_commit: bool = True,
) -> tuple[bool, int | None]:
    """Record the outcome, once, and queue a retry in the same transaction, and the
    announcement of the end (core.announce) when no retry follows.

    Returns (recorded, retry job id). A sender for the announcement starts after the
    commit, unless `announce_after_commit` is False (the caller writes the report
    first, then starts it: the message names the final report).
    """
    retry_id = None
    with store.transaction():
        recorded = store.finish(
            job.id,
            ending.state,
            ended_at=ended_at,
            exit_code=ending.exit_code,
            reason=ending.reason,
            retryable=ending.retryable,
            tokens=summary.usage if summary is not None and summary.events else None,
            thread_id=summary.thread_id if summary is not None else None,
            report_path=report_path,
            last_action=summary.last_action if summary is not None else None,
            files=dict(summary.files) if summary is not None else None,
            only_runner_pid=only_runner_pid,
            expect_state=expect_state,
            job_key=job.job_key,
        )
        if not recorded:
            return False, None
        limited_until = None
        if ending.rate_limited:
            limited_until = limiter.rate_limited(store, job, ended_at, ending.retry_after)
        elif ending.state == JobState.SUCCEEDED:
            limiter.succeeded(store, job, ended_at)
        free = ending.rate_limited and job.rate_limited < limiter.retries_allowed(store, job)
        retrying = free or wants_retry(job, ending)
        if announce.record_ending(store, job, retrying=retrying, now=ended_at) and (
            announce_after_commit
        ):
            store.after_commit(announce.spawn_sender)
        if retrying:
            # No TEMP report possible (disk full): still retry once, the runner writes it.
            # A rate-limited attempt is requeued without counting against --retries, for
            # when the account's cool-down ends (the job's own backoff if not adaptive).
            retry_id = queue_with_report(
                store,
                job.spec,
                time.time(),
                report_required=False,
                attempt=job.attempt + 1,
                retry_of=job.id,
                not_before=limited_until or ended_at + backoff_delay(job),
                rate_limited=job.rate_limited + int(free),
            )
            store.repoint_deps(job.id, retry_id)
        elif (ending.state in HALTING and job.spec.batch_id is not None
              and not ending.rate_limited):  # a rate limit is no failure of the batch
            store.halt_batch(job.spec.batch_id, f"job {job.id} {ending.state.value}")
        forget_launch_env(store, job.spec.env_key)
    return True, retry_id


def forget_launch_env(store: Store, key: str | None) -> None:
    """Inside the transaction that ends a job: once no open attempt needs its launch
    environment (an automatic retry would be open by now, in this same transaction),
    the file goes, after the commit."""
    if key is not None and not store.env_key_in_use(key):
        store.after_commit(lambda: envfile.remove(key))


def finalize(store: Store, job: Job, ending: Ending, summary: RunSummary | None) -> None:
    """The process that ran `job` (or stood in for it) records how it ended, once: the
    final report first, then the outcome and any retry in one transaction.

    A registry that no longer holds this attempt (made anew meanwhile: `job_key`
    differs) still gets the report written; nothing is recorded over another job."""
    ended_at = time.time()
    current = store.find_job(job.id)
    if current is None or current.job_key != job.job_key:
        current = job
    current.state = ending.state
    current.ended_at = ended_at
    current.exit_code = ending.exit_code
    current.reason = ending.reason
    final, problem = write_final_report(current, summary)
    if problem:
        ending.reason = f"{ending.reason}; {problem}" if ending.reason else problem
    _record_patiently(store, current, ending, ended_at, summary, final)


def _record_patiently(
    store: Store, job: Job, ending: Ending, ended_at: float, summary: RunSummary | None,
    final: Path | None,
) -> None:
    """Record the outcome. A registry that cannot be written right now (disk full, I/O
    error) is tried again for a while: the recording process is alive, so nobody marks
    the job lost meanwhile, and the outcome lands as soon as there is room."""
    give_up = time.monotonic() + RECORD_RETRY_LIMIT
    delay = 0.5
    while True:
        try:
            with store.transaction():
                recorded, _ = record_end(
                    store, job, ending, ended_at=ended_at, summary=summary,
                    report_path=str(final) if final else None,
                )
                if recorded and final is None:  # no report anywhere: not even the TEMP
                    store.set_report_path(job.id, None)
            if (not recorded and final is not None and not naming.is_temp_report(final.name)
                    and store.owns(job.id, job.job_key)):
                # Someone else ended this very attempt and wrote its report: ours, which
                # we just created, is the duplicate. A registry that no longer holds the
                # attempt proves nothing: our report stays.
                final.unlink(missing_ok=True)
            return
        except CodexwError as exc:
            if time.monotonic() >= give_up:
                raise
            try:
                sys.stderr.write(f"codexw: job {job.id} not recorded yet: {exc}\n")
                sys.stderr.flush()
            except OSError:
                pass
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def usage_before(store: Store, job_id: int | None) -> dict[str, int]:
    """Tokens the earlier runs of a resumed conversation used (codex reports the total)."""
    total = dict.fromkeys(TOKEN_KEYS, 0)
    seen: set[int] = set()
    while job_id is not None and job_id not in seen:
        seen.add(job_id)
        earlier = store.find_job(job_id)
        if earlier is None:
            break
        for key in TOKEN_KEYS:
            total[key] += earlier.tokens.get(key, 0)
        job_id = earlier.spec.resume_of
    return total


def end_without_runner(store: Store, job: Job, ending: Ending) -> bool:
    """End a job nobody else will finish (lost runner, cancelled, killed from outside).

    The conditional update in `record_end` decides who finalizes: only the winner
    writes the report.
    """
    now = time.time()
    summary = summary_from_log(job) if job.started_at else None
    with process.signals_deferred():  # recorded final ⇒ its report is written too
        return _end_and_report(store, job, ending, now, summary)


def _end_and_report(
    store: Store, job: Job, ending: Ending, now: float, summary: RunSummary | None
) -> bool:
    recorded, _ = record_end(
        store,
        job,
        ending,
        ended_at=now,
        summary=summary,
        report_path=None,
        only_runner_pid=job.runner_pid if job.state.is_active else None,
        expect_state=job.state,
        announce_after_commit=False,
    )
    if not recorded:
        return False
    ended = store.get_job(job.id)
    final, problem = write_final_report(ended, summary)
    with store.transaction():
        # None: no report exists anywhere; never leave a path to a TEMP that is gone.
        store.set_report_path(job.id, str(final) if final is not None else None)
    if job.spec.notify or job.spec.batch_id is not None:
        announce.pick_up(store, time.time(), stale_after=0.0)  # the report is written: send
    return True
