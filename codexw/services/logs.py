"""A job's event log, turned into lines a person can read; `follow` tails it live."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from codexw.core import lifecycle
from codexw.core.errors import NotFoundError
from codexw.core.models import Job
from codexw.core.notify import Listener
from codexw.core.store import Store
from codexw.services.common import open_store


@dataclass
class LogEntry:
    kind: str  # message | command | command_start | file | error | warning | usage | info | raw
    text: str
    exit_code: int | None = None
    data: bytes | None = None  # --raw: the line's bytes as codex wrote them (maybe not UTF-8)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "exit_code": self.exit_code}


def describe(event: dict[str, Any]) -> LogEntry | None:
    """One event → one readable entry (None for events not worth a line)."""
    kind = event.get("type")
    if kind == "thread.started":
        return LogEntry("info", f"session {event.get('thread_id')}")
    if kind == "turn.completed":
        u = event.get("usage") or {}
        return LogEntry(
            "usage",
            f"turn done: {u.get('input_tokens', 0)} in, {u.get('output_tokens', 0)} out,"
            f" {u.get('reasoning_output_tokens', 0)} reasoning tokens",
        )
    if kind == "turn.failed":
        err = event.get("error") or {}
        return LogEntry("error", f"turn failed: {err.get('message') if isinstance(err, dict) else err}")
    if kind == "error":
        return LogEntry("error", str(event.get("message")))
    if kind in ("item.started", "item.completed"):
        item = event.get("item") or {}
        item_type = item.get("type")
        done = kind == "item.completed"
        if item_type == "command_execution":
            if done:
                return LogEntry("command", str(item.get("command")), item.get("exit_code"))
            return LogEntry("command_start", str(item.get("command")))
        if not done:
            return None
        if item_type == "agent_message":
            return LogEntry("message", str(item.get("text", "")))
        if item_type == "file_change":
            changes = item.get("changes") or []
            text = ", ".join(f"{c.get('kind', 'update')} {c.get('path')}" for c in changes if isinstance(c, dict))
            return LogEntry("file", text)
        if item_type == "error":
            return LogEntry("warning", str(item.get("message")))
        if item_type == "reasoning":
            return LogEntry("reasoning", str(item.get("text", "")).strip())
        if item_type:
            return LogEntry("info", str(item_type).replace("_", " "))
    return None


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        return gzip.open(path.with_name(path.name + ".gz"), "rb")
    return path.open("rb")


def _parse(line: bytes, raw: bool) -> LogEntry | None:
    text = line.decode("utf-8", "replace").rstrip("\n")
    if raw:
        return LogEntry("raw", text, data=line.rstrip(b"\n"))
    if not text.strip():
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return LogEntry("raw", text)
    return describe(event) if isinstance(event, dict) else LogEntry("raw", text)


def job_log_path(job: Job) -> Path:
    return Path(job.log_path) if job.log_path else lifecycle.log_path(job.id)


def read_log(job_id: int, raw: bool = False, follow: bool = False) -> tuple[Job, Iterator[LogEntry]]:
    store = open_store()
    job = store.get_job(job_id)
    path = job_log_path(job)
    if not follow and not path.exists() and not path.with_name(path.name + ".gz").exists():
        if job.state.is_final and job.started_at is None:
            raise NotFoundError(f"job {job_id} never ran ({job.state.value}): it has no log")
        raise NotFoundError(f"job {job_id} has no event log at {path}")
    return job, (_follow(store, job, path, raw) if follow else _read(path, raw))


def _read(path: Path, raw: bool) -> Iterator[LogEntry]:
    with _open(path) as fh:
        for line in fh:
            entry = _parse(line, raw)
            if entry is not None:
                yield entry


def _read_from(path: Path, position: int) -> tuple[bytes, int]:
    """What was appended to the log since `position`, and the new position."""
    if not (path.exists() or path.with_name(path.name + ".gz").exists()):
        return b"", position
    with _open(path) as fh:  # `cleanup` may have compressed it meanwhile
        fh.seek(position)
        chunk = fh.read()
        return chunk, fh.tell()


def _follow(store: Store, job: Job, path: Path, raw: bool) -> Iterator[LogEntry]:
    """Yield entries as they are written, until the job (with its retries) ends."""
    position = 0
    pending = b""
    current = job
    with Listener() as listener:
        while True:
            chunk, position = _read_from(path, position)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                entry = _parse(line, raw)
                if entry is not None:
                    yield entry
            current = store.get_job(current.id)
            if current.state.is_final:
                # The runner writes its last lines and then records the end: what it
                # wrote between our read above and this look at the state is in the
                # file now, and nothing comes after it. Read once more, to the end.
                chunk, position = _read_from(path, position)
                *lines, last = (pending + chunk).split(b"\n")
                for line in [*lines, last] if last else lines:  # a last line without \n too
                    entry = _parse(line, raw)
                    if entry is not None:
                        yield entry
                latest = store.latest_attempt(current.id)
                if latest == current.id:
                    return
                yield LogEntry("info", f"job {current.id} {current.state.value}; following retry job {latest}")
                current = store.get_job(latest)
                path, position, pending = job_log_path(current), 0, b""
                continue
            # Registry writes wake us; between them, look at the file a few times a second.
            listener.wait(0.25)
            if not os.path.exists(path):
                path = job_log_path(store.get_job(current.id))
