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

from codexw.core.codex import CommandRun, RunSummary
from codexw.core.models import TOKEN_KEYS, Job, JobSpec

TASK_NAME = "codexw.run_job"
PAYLOAD_VERSION = 1
STREAM_TTL = 7 * 24 * 3600  # the event stream of a task outlives any wait for it
LOCK_TTL = 20  # seconds; the running delivery refreshes its lock every few seconds
LOCK_REFRESH = 5.0


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
# and what only the submitting side's queue uses (limits, retries, dependencies).
SENT_SPEC_FIELDS = ("task", "level", "type", "cwd", "project", "sandbox", "model", "timeout",
                    "kill_grace", "codex_args", "resume_thread")
NOT_SENT_SPEC_FIELDS = ("codex_bin", "codex_home", "path_env", "env_key", "broker_url",
                        "template", "backend", "queue", "priority", "batch_id", "name", "after",
                        "global_limit", "retries", "retry_timeouts", "backoff_base",
                        "backoff_max", "resume_of")


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


def summary_from_dict(data: dict[str, Any]) -> RunSummary:
    summary = RunSummary()
    summary.thread_id = data.get("thread_id")
    for c in data.get("commands") or []:
        summary.commands[str(c.get("id"))] = CommandRun(
            str(c.get("command", "")), c.get("exit_code"), str(c.get("status") or "completed")
        )
    summary.files = {str(k): str(v) for k, v in (data.get("files") or {}).items()}
    summary.messages = [str(m) for m in data.get("messages") or []]
    summary.warnings = [str(w) for w in data.get("warnings") or []]
    usage = data.get("usage") or {}
    summary.usage = {k: int(usage.get(k, 0)) for k in TOKEN_KEYS}
    summary.error = data.get("error")
    summary.turn_failed = bool(data.get("turn_failed"))
    summary.last_action = data.get("last_action")
    summary.events = int(data.get("events") or 0)
    summary.bad_lines = int(data.get("bad_lines") or 0)
    return summary


def encode(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def decode(raw: bytes | str) -> Any:
    return json.loads(raw)
