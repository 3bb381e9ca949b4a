"""A job's event log, turned into lines a person can read; `follow` tails it live."""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codexw.core import lifecycle
from codexw.core.codex import bounded_text
from codexw.core.errors import NoLogError
from codexw.core.events import READ_SIZE, LineSplitter, Skipped, parse_event
from codexw.core.models import Job
from codexw.core.notify import Listener
from codexw.core.store import Store
from codexw.services.common import open_store

TEXT_LIMIT = 1 << 20  # characters of one entry's text (an agent message, a command)


@dataclass
class LogEntry:
    kind: str  # message | command | command_start | file | error | warning | usage | info | raw
    text: str
    exit_code: int | None = None
    data: bytes | None = None  # --raw: the line's bytes as codex wrote them (maybe not UTF-8)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "exit_code": self.exit_code}


def _str(value: object) -> str:
    return bounded_text(value, TEXT_LIMIT) or ""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def describe(event: dict[str, Any]) -> LogEntry | None:
    """One event → one readable entry (None for events not worth a line).

    The event is codex's untrusted output: every value is checked for its type."""
    kind = event.get("type")
    if kind == "thread.started":
        return LogEntry("info", f"session {_str(event.get('thread_id'))}")
    if kind == "turn.completed":
        u = _dict(event.get("usage"))
        return LogEntry(
            "usage",
            f"turn done: {_str(u.get('input_tokens', 0))} in, {_str(u.get('output_tokens', 0))}"
            f" out, {_str(u.get('reasoning_output_tokens', 0))} reasoning tokens",
        )
    if kind == "turn.failed":
        err = event.get("error")
        message = _dict(err).get("message") if isinstance(err, dict) else err
        return LogEntry("error", f"turn failed: {_str(message)}")
    if kind == "error":
        return LogEntry("error", _str(event.get("message")))
    if kind in ("item.started", "item.completed"):
        item = _dict(event.get("item"))
        item_type = item.get("type")
        done = kind == "item.completed"
        if item_type == "command_execution":
            code = item.get("exit_code")
            exit_code = code if type(code) is int and abs(code) < 1 << 31 else None
            if done:
                return LogEntry("command", _str(item.get("command")), exit_code)
            return LogEntry("command_start", _str(item.get("command")))
        if not done:
            return None
        if item_type == "agent_message":
            return LogEntry("message", _str(item.get("text", "")))
        if item_type == "file_change":
            changes = item.get("changes")
            text = ", ".join(
                f"{_str(c.get('kind', 'update'))} {_str(c.get('path'))}"
                for c in (changes if isinstance(changes, list) else [])
                if isinstance(c, dict)
            )
            return LogEntry("file", text)
        if item_type == "error":
            return LogEntry("warning", _str(item.get("message")))
        if item_type == "reasoning":
            return LogEntry("reasoning", _str(item.get("text", "")).strip())
        if item_type:
            return LogEntry("info", _str(item_type).replace("_", " "))
    return None


def _open(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        return gzip.open(path.with_name(path.name + ".gz"), "rb")
    return path.open("rb")


def _parse(line: bytes | Skipped, raw: bool) -> LogEntry | None:
    if isinstance(line, Skipped):
        return LogEntry("warning", f"a line of {line.size} bytes is not shown (see --raw)")
    text = line.decode("utf-8", "replace")
    if raw:
        return LogEntry("raw", text, data=line)
    event, why = parse_event(line)
    if why is not None:
        return LogEntry("warning", f"a line is not shown: {why} (see --raw)")
    if event is None:
        return LogEntry("raw", text) if text.strip() else None
    return describe(event)


def _splitter(raw: bool) -> LineSplitter:
    # --raw is byte for byte, whatever a line's length; readable output skips huge lines.
    return LineSplitter(max_line=sys.maxsize) if raw else LineSplitter()


def job_log_path(job: Job) -> Path:
    return Path(job.log_path) if job.log_path else lifecycle.log_path(job.id)


def read_log(job_id: int, raw: bool = False, follow: bool = False,
             tail_bytes: int | None = None) -> tuple[Job, Iterator[LogEntry]]:
    """The job and its log's entries (to the end, or followed as they come). With
    `tail_bytes`, only the entries in the last that many bytes of an uncompressed log
    (the board shows a long log's tail without reading all of it)."""
    with open_store() as store:
        job = store.get_job(job_id)
    path = job_log_path(job)
    if not path.exists() and not path.with_name(path.name + ".gz").exists():
        if job.state.is_final and job.started_at is None:
            reason = f": {job.reason}" if job.reason else ""
            raise NoLogError(f"job {job_id} never ran ({job.state.value}{reason}), so it has no log")
        if not follow:
            raise NoLogError(f"job {job_id} has no event log at {path}")
    if follow:
        return job, _following(job, path, raw)
    return job, _with_ending(_read(path, raw, tail_bytes), job, raw)


def _following(job: Job, path: Path, raw: bool) -> Iterator[LogEntry]:
    """`_follow` with a registry of its own, open while it is iterated and closed when
    it ends or is dropped (read_log has just reconciled: no need to again)."""
    with Store.open() as store:
        yield from _follow(store, job, path, raw)


def _with_ending(entries: Iterator[LogEntry], job: Job, raw: bool) -> Iterator[LogEntry]:
    """The log, then how the job ended (a timeout or a kill leaves no event saying so)."""
    yield from entries
    if not raw and job.state.is_final:
        yield _ending(job)


def _ending(job: Job) -> LogEntry:
    reason = f": {job.reason}" if job.reason else ""
    kind = "info" if job.state.value == "succeeded" else "error"
    return LogEntry(kind, f"job {job.id} {job.state.value}{reason}")


def _read(path: Path, raw: bool, tail_bytes: int | None = None) -> Iterator[LogEntry]:
    splitter = _splitter(raw)
    with _open(path) as fh:
        partial = False
        if tail_bytes is not None and path.suffix != ".gz" and path.exists():
            size = os.fstat(fh.fileno()).st_size
            if size > tail_bytes:
                fh.seek(size - tail_bytes)
                partial = True  # the first line is cut: not shown
        while chunk := fh.read(READ_SIZE):
            lines = splitter.feed(chunk)
            if partial and lines:
                lines, partial = lines[1:], False
            yield from _entries(lines, raw)
    if not partial:
        yield from _entries(splitter.close(), raw)


def _entries(lines: list[bytes | Skipped], raw: bool) -> Iterator[LogEntry]:
    for line in lines:
        entry = _parse(line, raw)
        if entry is not None:
            yield entry


def _read_from(path: Path, position: int, limit: int = 4 << 20) -> tuple[bytes, int]:
    """Up to `limit` bytes appended to the log since `position`, and the new position."""
    if not (path.exists() or path.with_name(path.name + ".gz").exists()):
        return b"", position
    with _open(path) as fh:  # `cleanup` may have compressed it meanwhile
        fh.seek(position)
        chunk = fh.read(limit)
        return chunk, fh.tell()


def _follow(store: Store, job: Job, path: Path, raw: bool) -> Iterator[LogEntry]:
    """Yield entries as they are written, until the job (with its retries) ends."""
    position = 0
    splitter = _splitter(raw)
    current = job
    with Listener() as listener:
        while True:
            chunk, position = _read_from(path, position)
            yield from _entries(splitter.feed(chunk), raw)
            if chunk:
                continue  # more may be waiting: read it before looking at the state
            current = store.get_job(current.id)
            if current.state.is_final:
                # The runner writes its last lines and then records the end: what it
                # wrote between our read above and this look at the state is in the
                # file now, and nothing comes after it. Read once more, to the end.
                while True:
                    chunk, position = _read_from(path, position)
                    if not chunk:
                        break
                    yield from _entries(splitter.feed(chunk), raw)
                yield from _entries(splitter.close(), raw)  # a last line without \n too
                latest = store.latest_attempt(current.id)
                if latest == current.id:
                    if not raw:
                        yield _ending(current)
                    return
                yield LogEntry("info", f"job {current.id} {current.state.value}; following retry job {latest}")
                current = store.get_job(latest)
                path, position, splitter = job_log_path(current), 0, _splitter(raw)
                continue
            # Registry writes wake us; between them, look at the file a few times a second.
            listener.wait(0.25)
            if not os.path.exists(path):
                path = job_log_path(store.get_job(current.id))
