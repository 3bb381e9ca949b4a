"""Batch input: plain text, JSONL or TOML task lists, validated whole before anything runs."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from typing import Any

from codexw.core.errors import UsageError
from codexw.core.models import JOB_NAME_RE

KEYS = {"task", "level", "type", "model", "priority", "timeout", "retries", "name", "after",
        "worktree"}


@dataclass
class BatchEntry:
    task: str
    where: str  # "tasks.jsonl line 3", for error messages
    level: str | None = None
    type: str | None = None
    model: str | None = None
    priority: int = 0
    timeout: str | None = None
    retries: int | None = None
    name: str | None = None
    after: list[str] = field(default_factory=list)
    worktree: bool | None = None  # a git worktree of its own (None: the batch's choice)


def detect_format(source: str, text: str) -> str:
    lowered = source.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith(".toml"):
        return "toml"
    if source in ("-", "<stdin>"):
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("{"):
                return "jsonl"
            if stripped.startswith("[[task]]") or stripped.startswith("[[ task ]]"):
                return "toml"
            return "text"
    return "text"


def parse(source: str, text: str, fmt: str | None = None) -> list[BatchEntry]:
    fmt = fmt or detect_format(source, text)
    if fmt == "text":
        entries = _parse_text(source, text)
    elif fmt == "jsonl":
        entries = _parse_jsonl(source, text)
    elif fmt == "toml":
        entries = _parse_toml(source, text)
    else:
        raise UsageError(f"unknown batch format {fmt!r}", "use text, jsonl or toml")
    if not entries:
        raise UsageError(f"{source}: no tasks found", "one task per line, or JSONL/TOML entries")
    _check_names(source, entries)
    return entries


def _parse_text(source: str, text: str) -> list[BatchEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        entries.append(BatchEntry(task=stripped, where=f"{source} line {number}"))
    return entries


def _parse_jsonl(source: str, text: str) -> list[BatchEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source} line {number}"
        try:
            data = json.loads(stripped)
        except ValueError as exc:  # also a number too long to convert, not a JSONDecodeError
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise UsageError(f"{where}: not valid JSON ({why})") from None
        entries.append(_entry(data, where))
    return entries


def _parse_toml(source: str, text: str) -> list[BatchEntry]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not valid TOML ({exc})") from None
    unknown = set(data) - {"task"}
    if unknown:
        raise UsageError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}",
                         "write each task as a [[task]] table")
    tables = data.get("task", [])
    if not isinstance(tables, list):
        raise UsageError(f"{source}: 'task' must be an array of tables ([[task]])")
    return [_entry(t, f"{source} [[task]] #{n}") for n, t in enumerate(tables, 1)]


def _entry(data: Any, where: str) -> BatchEntry:
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected an object with a 'task' key")
    unknown = set(data) - KEYS
    if unknown:
        raise UsageError(
            f"{where}: unknown key {sorted(unknown)[0]!r}", "known keys: " + ", ".join(sorted(KEYS))
        )
    task = data.get("task")
    if not isinstance(task, str) or not task.strip():
        raise UsageError(f"{where}: 'task' must be a non-empty string")
    entry = BatchEntry(task=task, where=where)
    for key in ("level", "type", "model", "name"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{where}: {key!r} must be a string")
        setattr(entry, key, value)
    for key in ("priority", "retries"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{where}: {key!r} must be a whole number")
        if value is not None:
            setattr(entry, key, value)
    worktree = data.get("worktree")
    if worktree is not None and not isinstance(worktree, bool):
        raise UsageError(f"{where}: 'worktree' must be true or false")
    entry.worktree = worktree
    timeout = data.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, str | int | float):
            raise UsageError(f"{where}: 'timeout' must be a duration like \"20m\" or seconds")
        entry.timeout = str(timeout)
    after = data.get("after")
    if after is not None:
        after = [after] if isinstance(after, str) else after
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            raise UsageError(f"{where}: 'after' must be a task name or a list of names")
        entry.after = list(after)
    if entry.name is not None and not JOB_NAME_RE.fullmatch(entry.name):
        raise UsageError(f"{where}: invalid name {entry.name!r}", "letters, digits, '.', '-', '_'")
    return entry


def _check_names(source: str, entries: list[BatchEntry]) -> None:
    names: dict[str, BatchEntry] = {}
    for entry in entries:
        if entry.name:
            if entry.name in names:
                raise UsageError(f"{entry.where}: name {entry.name!r} is used twice "
                                 f"(first at {names[entry.name].where})")
            names[entry.name] = entry
    for entry in entries:
        for dep in entry.after:
            if dep not in names:
                raise UsageError(f"{entry.where}: 'after' names {dep!r}, which no task of "
                                 f"{source} has")
            if dep == entry.name:
                raise UsageError(f"{entry.where}: a task cannot run after itself")
    cycle = find_cycle({name: entry.after for name, entry in names.items()})
    if cycle:
        shown = cycle if len(cycle) <= 8 else [*cycle[:3], "…", *cycle[-3:]]
        size = f" ({len(cycle) - 1} tasks)" if len(cycle) > 8 else ""
        raise UsageError(f"{source}: dependency cycle {' → '.join(shown)}{size}",
                         "a task cannot wait, directly or not, for itself")


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as [a, b, …, a], or None. Iterative depth-first search with an
    explicit stack: a chain of thousands of tasks listed dependents-first must not hit
    Python's recursion limit, and the path is kept once (not copied per step)."""
    done: set[str] = set()
    for root in graph:
        if root in done:
            continue
        path: list[str] = [root]  # the names being visited, root first
        on_path = {root}
        pending = [iter(graph[root])]  # per name on the path: the deps still to visit
        while pending:
            dep = next(pending[-1], None)
            if dep is None:  # every dep of path[-1] is done
                pending.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            if dep in on_path:
                return [*path[path.index(dep):], dep]
            if dep not in done:
                path.append(dep)
                on_path.add(dep)
                pending.append(iter(graph[dep]))
    return None
