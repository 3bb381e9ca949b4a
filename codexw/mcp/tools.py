"""The work behind each MCP tool, without the SDK: arguments in, (structured content,
one-line summary) out, or a CodexwError whose message is the CLI's.

Each function calls the service the CLI command calls; this module only checks what
MCP lets through that the CLI's parser would have refused (a list of ids, a state
name, a number of seconds), refuses what a server must not do for a remote caller
(danger-full-access without --allow-full-access), and shapes the answers for a model:
short, and the same job fields as `status --json`. It holds no state of its own:
the registry is the state, so a server that dies loses nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codexw.core import paths, validate
from codexw.core.config import load_config
from codexw.core.errors import UsageError
from codexw.core.models import Job, JobState
from codexw.services.launch import LaunchRequest, LaunchResult

STATES = ", ".join(s.value for s in JobState)
DEFAULT_WAIT = 50  # seconds: under the 60 s MCP clients such as Codex give a tool call
MAX_WAIT = 3600
DEFAULT_TAIL = 40
MAX_TAIL = 1000
ENTRY_CHARS = 4000  # of one log entry shown to a model (the log itself keeps everything)
FULL_ACCESS = "danger-full-access"


@dataclass
class Reply:
    """A tool's answer: `data` is the structured content, `text` the summary a model
    reads first."""

    data: dict[str, Any]
    text: str


@dataclass
class Settings:
    allow_full_access: bool = False


# -- helpers ------------------------------------------------------------------------------


def _ids(values: Sequence[int], what: str = "job id") -> list[int]:
    return [validate.check_id(v, what) for v in values]


def _cwd(cwd: str | None) -> str:
    """A tool's working directory: the server's, or `cwd` relative to it."""
    return str(Path(os.getcwd(), os.path.expanduser(cwd))) if cwd else os.getcwd()


def _check_sandbox(settings: Settings, sandbox: str | None, cwd: str) -> None:
    """danger-full-access only from a server started with --allow-full-access: an
    agent calling a tool must not get more than the person who started the server
    allowed, whether it asks for it or the config gives it."""
    if settings.allow_full_access:
        return
    effective = sandbox
    if effective is None:
        effective = load_config(paths.project_root(cwd)).sandbox
    if effective == FULL_ACCESS:
        raise UsageError(
            "sandbox danger-full-access is refused over MCP",
            "start the server with `codexw mcp --allow-full-access` to allow it",
        )


def _launched(result: LaunchResult) -> Reply:
    job = result.job
    data = {
        "job_id": job.id,
        "state": job.state.value,
        "report_path": job.report_path,
        "waiting_for": result.waiting_for or None,
        "warnings": result.warnings,
    }
    text = f"job {job.id} {job.state.value}"
    if result.waiting_for:
        text += f" ({result.waiting_for})"
    text += f"; report {job.report_path}. Call wait([{job.id}]) to block until it ends."
    return Reply(data, text)


def _brief(asked: int, job: Job) -> dict[str, Any]:
    return {
        "job_id": asked,
        "attempt_id": job.id,
        "state": job.state.value,
        "reason": job.reason,
        "duration": None if job.duration is None else round(job.duration, 1),
        "report_path": job.report_path,
    }


# -- tools --------------------------------------------------------------------------------


def launch(
    settings: Settings, task: str, level: str | None = None, type: str | None = None,
    cwd: str | None = None, model: str | None = None, sandbox: str | None = None,
    timeout: str | None = None, worktree: bool | None = None,
    after: Sequence[int] | None = None,
) -> Reply:
    from codexw.services.launch import launch as launch_job

    where = _cwd(cwd)
    request = LaunchRequest(task=task, level=level, type=type, cwd=where, model=model,
                            sandbox=sandbox, timeout=timeout, worktree=worktree,
                            after=tuple(_ids(after or (), "after job id")))
    if not os.path.isdir(where):
        raise UsageError(f"working directory {where} does not exist", "check cwd")
    _check_sandbox(settings, sandbox, where)
    return _launched(launch_job(request))


def batch(
    settings: Settings, tasks: Sequence[str | dict[str, Any]], max_parallel: int | None = None,
    retries: int | None = None, cwd: str | None = None,
) -> Reply:
    from codexw.services.batch import BatchRequest, submit

    if not tasks:
        raise UsageError("tasks is empty", "give a list of tasks (strings or objects)")
    lines = []
    for entry in tasks:
        if isinstance(entry, str):
            entry = {"task": entry}
        if not isinstance(entry, dict):
            raise UsageError("each task must be a string or an object with a 'task' key")
        lines.append(json.dumps(entry, ensure_ascii=False))
    where = _cwd(cwd)
    if not os.path.isdir(where):
        raise UsageError(f"working directory {where} does not exist", "check cwd")
    if retries is not None:
        validate.check_int(retries, "retries", 0, validate.MAX_RETRIES)
    _check_sandbox(settings, None, where)
    submitted = submit(BatchRequest(
        source="tasks", text="\n".join(lines) + "\n", fmt="jsonl",
        defaults=LaunchRequest(task="", cwd=where, retries=retries),
        max_parallel=max_parallel,
    ))
    data = submitted.to_dict()
    text = (f"batch {submitted.batch_id}: jobs {', '.join(map(str, submitted.job_ids))}, at most"
            f" {submitted.max_parallel} at once. Call wait({submitted.job_ids}) to block until"
            " they end.")
    return Reply(data, text)


def status(
    settings: Settings, job_id: int | None = None, latest: int | None = None,
    state: str | None = None, batch_id: int | None = None, all_projects: bool = False,
) -> Reply:
    from codexw.services import status as svc

    if job_id is not None:
        if latest is not None or state is not None or batch_id is not None or all_projects:
            raise UsageError("job_id shows one job: give it alone, without list options")
        detail = svc.job_detail(validate.check_id(job_id))
        job = detail.job
        return Reply({"jobs": [detail.to_dict()]}, _line(job))
    if state is not None and state not in {s.value for s in JobState}:
        raise UsageError(f"unknown state {state!r}", f"use one of {STATES}")
    limit = 10 if latest is None else validate.check_int(latest, "latest", 1, 10_000)
    if batch_id is not None:
        validate.check_id(batch_id, "batch id")
    query = svc.JobQuery(cwd=os.getcwd(), all_projects=all_projects, state=state,
                         batch_id=batch_id, limit=limit)
    jobs = svc.list_jobs(query)
    if not jobs:
        return Reply({"jobs": []}, "no jobs" + (f" in state {state}" if state else "")
                     + ("" if all_projects or batch_id else " in this project"))
    return Reply({"jobs": [j.to_dict() for j in jobs]}, "\n".join(_line(j) for j in jobs))


def _line(job: Job) -> str:
    head = job.spec.task.strip().splitlines()[0][:80] if job.spec.task.strip() else ""
    reason = f" ({job.reason})" if job.reason else ""
    return f"job {job.id} {job.state.value}{reason}: {head}"


def wait_once(
    job_ids: Sequence[int], seconds: float, on_end: Callable[[int, Job], None] | None = None,
) -> tuple[dict[int, Job], bool]:
    """Wait up to `seconds` for every job's chain to end: (asked id → last attempt,
    timed out). The MCP `wait` tool calls it in slices, reporting progress between."""
    from codexw.services.wait import wait_for

    result = wait_for(list(job_ids), timeout=seconds, on_end=on_end)
    return result.jobs, result.timed_out


def check_wait(job_ids: Sequence[int], timeout_s: int | None) -> tuple[list[int], int]:
    ids = list(dict.fromkeys(_ids(job_ids)))
    if not ids:
        raise UsageError("nothing to wait for", "give job_ids")
    seconds = DEFAULT_WAIT if timeout_s is None else timeout_s
    validate.check_int(seconds, "timeout_s", 0, MAX_WAIT)
    return ids, seconds


def waited(jobs: dict[int, Job], seconds: int) -> Reply:
    done = [_brief(a, j) for a, j in sorted(jobs.items()) if j.state.is_final]
    pending = [_brief(a, j) for a, j in sorted(jobs.items()) if not j.state.is_final]
    ok = sum(1 for d in done if d["state"] == "succeeded")
    text = f"{len(done)} done ({ok} succeeded, {len(done) - ok} not)" if done else "none done yet"
    if pending:
        ids = [p["job_id"] for p in pending]
        text += (f", {len(pending)} still open after {seconds} s: call wait({ids}) again"
                 " (they run on whether you wait or not)")
    return Reply({"done": done, "pending": pending}, text)


def result(settings: Settings, job_id: int) -> Reply:
    from codexw.services.result import job_result

    found = job_result(validate.check_id(job_id))
    data = found.to_dict()
    job = found.job
    text = f"job {job.id} {job.state.value}" + (f": {job.reason}" if job.reason else "")
    if found.asked != job.id:
        text = f"job {found.asked} → attempt {text}"
    if found.files:
        text += f"; {len(found.files)} file{'s' if len(found.files) != 1 else ''} changed"
    if found.final_message:
        text += "\n\n" + found.final_message
    return Reply(data, text)


def logs(settings: Settings, job_id: int, tail: int | None = None) -> Reply:
    from collections import deque

    from codexw.services.logs import read_log

    count = DEFAULT_TAIL if tail is None else validate.check_int(tail, "tail", 1, MAX_TAIL)
    job, entries = read_log(validate.check_id(job_id))
    last = deque(entries, maxlen=count)
    shown = []
    for entry in last:
        item = entry.to_dict()
        if len(item["text"]) > ENTRY_CHARS:
            item["text"] = item["text"][:ENTRY_CHARS] + f"… ({len(entry.text)} characters)"
        shown.append(item)
    text = "\n".join(_log_line(e) for e in shown) or "(empty log)"
    return Reply({"job_id": job.id, "state": job.state.value, "entries": shown}, text)


def _log_line(entry: dict[str, Any]) -> str:
    code = f"  → exit {entry['exit_code']}" if entry["kind"] == "command" else ""
    return f"[{entry['kind']}] {entry['text']}{code}"


def kill(settings: Settings, job_ids: Sequence[int]) -> Reply:
    from codexw.services.kill import kill_jobs

    ids = _ids(job_ids)
    if not ids:
        raise UsageError("nothing to kill", "give job_ids")
    results = kill_jobs(ids)
    text = "; ".join(f"job {r.job_id}: {r.before} → {r.after} ({r.note})" for r in results)
    return Reply({"jobs": [r.to_dict() for r in results]}, text)


def continue_(settings: Settings, job_id: int, task: str) -> Reply:
    from codexw.services.followup import ContinueRequest, continue_job
    from codexw.services.status import job_detail

    validate.check_id(job_id)
    if not settings.allow_full_access and job_detail(job_id).job.spec.sandbox == FULL_ACCESS:
        raise UsageError(
            f"job {job_id} ran with sandbox danger-full-access: continuing it is refused over MCP",
            "start the server with `codexw mcp --allow-full-access` to allow it",
        )
    return _launched(continue_job(ContinueRequest(job_id=job_id, task=task)))


# -- resources ----------------------------------------------------------------------------


def report_text(job_id: int) -> str:
    from codexw.services.result import read_report

    return read_report(validate.check_id(job_id))[1]


def log_text(job_id: int) -> str:
    from codexw.services.logs import read_log

    _job, entries = read_log(validate.check_id(job_id))
    return "\n".join(_log_line(e.to_dict()) for e in entries) + "\n"
