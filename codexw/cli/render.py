"""Output helpers: rich for people at a terminal, plain text otherwise, JSON for scripts."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from codexw.core.durations import format_duration
from codexw.core.models import Job, JobState
from codexw.core.validate import MAX_ID

JSON_VERSION = 1
# Bounds of every job/batch id (and count) argument: past SQLite's INTEGER the parser
# refuses it in one line (exit 2), instead of an OverflowError from the registry.
ID: dict[str, Any] = {"min": 1, "max": MAX_ID}

STATE_STYLE = {
    JobState.QUEUED: "cyan",
    JobState.STARTING: "blue",
    JobState.RUNNING: "bold blue",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "bold red",
    JobState.TIMED_OUT: "red",
    JobState.KILLED: "magenta",
    JobState.LOST: "yellow",
    JobState.CANCELLED: "dim",
}


def is_tty() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def emit_json(command: str, payload: dict[str, Any]) -> None:
    """One versioned object with stable keys."""
    data = {"version": JSON_VERSION, "command": command, **payload}
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def error(message: str) -> None:
    sys.stderr.write(f"codexw: {message}\n")


def warn(message: str) -> None:
    sys.stderr.write(f"codexw: warning: {message}\n")


def age_or_duration(job: Job) -> str:
    if (job.state.is_final or job.state.is_active) and job.started_at is not None:
        return format_duration(job.duration)
    return format_duration(time.time() - job.queued_at) + " ago"


def task_head(task: str, width: int = 50) -> str:
    line = " ".join(task.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def state_text(job: Job) -> str:
    text = job.state.value
    if job.spec.retries and (job.attempt > 1 or job.state.is_active or job.state == JobState.QUEUED):
        text += f" {job.attempt}/{job.spec.retries + 1}"
    if job.state == JobState.QUEUED and job.not_before and job.not_before > time.time():
        text += f" (retry in {format_duration(job.not_before - time.time())})"
    return text


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
