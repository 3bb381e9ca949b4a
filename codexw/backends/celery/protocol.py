"""What the submitting side and a Celery worker say to each other (no celery import).

- The task `codexw.run_job` takes one payload: the job's spec as a dict (the worker
  replaces what is machine-specific: working dir, codex binary, CODEX_HOME).
- Progress goes through a Redis stream per Celery task, `codexw:events:<task id>`:
  a `start` entry per delivery (worker name, pid, start time), `lines` entries carrying
  codex's raw --json lines, and one `end` entry holding the result, which the task also
  returns through the Celery result backend.
- `codexw:kill:<task id>` asks the worker to stop the job (set before a revoke, so a
  worker that picks the task up later never starts it); `codexw:lock:<task id>` is held
  by the delivery that runs it, so a redelivered copy never runs alongside it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from codexw.core.codex import (
    MAX_COMMAND_CHARS,
    MAX_COMMANDS,
    MAX_ERROR_CHARS,
    MAX_FILES,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    MAX_PATH_CHARS,
    MAX_TOKENS,
    MAX_WARNING_CHARS,
    MAX_WARNINGS,
    THREAD_ID_RE,
    CommandRun,
    RunSummary,
    bounded_text,
)
from codexw.core.models import TOKEN_KEYS, Job, JobSpec

TASK_NAME = "codexw.run_job"
PAYLOAD_VERSION = 1
STREAM_TTL = 7 * 24 * 3600  # the event stream of a task outlives any wait for it
LOCK_TTL = 20  # seconds; the running delivery refreshes its lock every few seconds
LOCK_REFRESH = 5.0


# A stream entry as both sides' Redis clients read it: RESP2 replies in bytes (no
# decode_responses). redis-py types each reply as the union over protocols and
# decodings, so a reply is cast to this where it is read.
StreamEntry = tuple[bytes, dict[bytes, bytes]]


def events_key(task_id: str) -> str:
    return f"codexw:events:{task_id}"


def kill_key(task_id: str) -> str:
    return f"codexw:kill:{task_id}"


def lock_key(task_id: str) -> str:
    return f"codexw:lock:{task_id}"


def mask_url(url: str | None) -> str:
    """A broker URL without its password, for messages and --json."""
    if not url:
        return "-"
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


# -- the job ----------------------------------------------------------------------------

# What of a JobSpec crosses the broker, listed by hand on purpose: a new field stays on
# this machine until someone decides it may travel (tests/unit/test_protocol_fields.py
# fails until it is put in one of the two lists). Never sent: secrets and this machine's
# paths and programs (codex_bin, codex_home, path_env, env_key, broker_url, template),
# and what only the submitting side's queue uses (limits, retries, dependencies,
# notifications).
SENT_SPEC_FIELDS = ("task", "level", "type", "cwd", "project", "sandbox", "model", "timeout",
                    "kill_grace", "codex_args", "resume_thread", "report_sections")
NOT_SENT_SPEC_FIELDS = ("codex_bin", "codex_home", "path_env", "env_key", "broker_url",
                        "template", "backend", "queue", "priority", "batch_id", "name", "after",
                        "global_limit", "retries", "retry_timeouts", "backoff_base",
                        "backoff_max", "resume_of", "codex_native", "account",
                        # A remote job never runs in a worktree (refused at launch).
                        "isolation", "base_commit", "branch", "worktree", "branch_prefix",
                        "worktree_copy", "worktree_setup", "dirty_base",
                        "notify")  # announced here, by the stand-in that records the end


def payload_for(job: Job, usage_baseline: dict[str, int] | None = None) -> dict[str, Any]:
    spec = job.spec
    data = {name: getattr(spec, name) for name in SENT_SPEC_FIELDS}
    data["codex_args"] = list(spec.codex_args)
    return {
        "version": PAYLOAD_VERSION,
        "job_id": job.id,
        "attempt": job.attempt,
        "spec": data,
        "usage_baseline": dict(usage_baseline or {}),
    }


def spec_from_payload(payload: dict[str, Any], **machine: Any) -> JobSpec:
    """The spec as the worker runs it; `machine` sets cwd, project, codex_bin, codex_home,
    timeout and kill_grace for this worker."""
    data = dict(payload["spec"])
    data["codex_args"] = tuple(data.get("codex_args") or ())
    data.update(machine)
    return JobSpec(**{k: v for k, v in data.items() if k in JobSpec.__dataclass_fields__})


# -- the run summary --------------------------------------------------------------------


def summary_to_dict(summary: RunSummary) -> dict[str, Any]:
    return {
        "thread_id": summary.thread_id,
        "commands": [
            {"id": key, "command": c.command, "exit_code": c.exit_code, "status": c.status}
            for key, c in summary.commands.items()
        ],
        "files": dict(summary.files),
        "messages": list(summary.messages),
        "warnings": list(summary.warnings),
        "usage": {k: int(summary.usage.get(k, 0)) for k in TOKEN_KEYS},
        "error": summary.error,
        "turn_failed": summary.turn_failed,
        "last_action": summary.last_action,
        "events": summary.events,
        "bad_lines": summary.bad_lines,
    }


def summary_from_dict(data: object) -> RunSummary:
    """A worker's run summary. It crossed the broker, so each value is checked again for
    type and range, as codex's own events are (core.codex): what cannot be used is
    dropped, and nothing SQLite refuses reaches the registry."""
    summary = RunSummary()
    if not isinstance(data, dict):
        return summary
    thread = data.get("thread_id")
    if isinstance(thread, str) and THREAD_ID_RE.fullmatch(thread):
        summary.thread_id = thread
    for c in _list(data.get("commands"))[-MAX_COMMANDS:]:
        if isinstance(c, dict):
            key = bounded_text(c.get("id"), 200) or str(len(summary.commands))
            summary.commands[key] = CommandRun(
                bounded_text(c.get("command"), MAX_COMMAND_CHARS) or "",
                _exit_code(c.get("exit_code")),
                bounded_text(c.get("status"), 40) or "completed",
            )
    files = data.get("files")
    for path, kind in list(files.items() if isinstance(files, dict) else [])[:MAX_FILES]:
        summary.files[bounded_text(path, MAX_PATH_CHARS) or "?"] = bounded_text(kind, 20) or "update"
    summary.messages = [bounded_text(m, MAX_MESSAGE_CHARS) or ""
                        for m in _list(data.get("messages"))[-MAX_MESSAGES:]]
    summary.warnings = [bounded_text(w, MAX_WARNING_CHARS) or ""
                        for w in _list(data.get("warnings"))[:MAX_WARNINGS]]
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    summary.usage = {k: _bounded_int(usage.get(k), 0, MAX_TOKENS) or 0 for k in TOKEN_KEYS}
    summary.error = bounded_text(data.get("error"), MAX_ERROR_CHARS)
    summary.turn_failed = data.get("turn_failed") is True
    summary.last_action = bounded_text(data.get("last_action"), 500)
    summary.events = _bounded_int(data.get("events"), 0, 2**62) or 0
    summary.bad_lines = _bounded_int(data.get("bad_lines"), 0, 2**62) or 0
    return summary


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _exit_code(value: object) -> int | None:
    return value if type(value) is int and -(2**31) <= value < 2**31 else None


def _bounded_int(value: object, low: int, high: int) -> int | None:
    """An integer (not a bool) within [low, high], clamped; None for anything else."""
    if type(value) is not int:
        return None
    return max(low, min(high, value))


def encode(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def decode(raw: bytes | str) -> Any:
    return json.loads(raw)
