"""The app-server backend's files and process facts: the per-key record and lock in
<state>/appserver/, codex's trust write undone, and the processes of one turn."""

from __future__ import annotations

import json
import os
import signal
import time
import tomllib
from pathlib import Path
from typing import Any

from codexw.core import paths, process

MARKER_VAR = "CODEXW_APP_SERVER"


def folder() -> Path:
    directory = paths.state_dir() / "appserver"
    paths.ensure_state_dir()
    directory.mkdir(exist_ok=True, mode=0o700)
    return directory


def record_path(key: str) -> Path:
    return folder() / f"{key}.json"


def lock_path(key: str) -> Path:
    return folder() / f"{key}.lock"


def server_log(key: str) -> str:
    return f"appserver-{key}.log"


def marker(key: str) -> dict[str, str]:
    """In the app-server's environment: tells its processes from a reused PID's."""
    return {MARKER_VAR: f"{paths.state_dir().resolve()}:{key}"}


def read_record(key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(record_path(key).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(key: str, pid: int, start: float | None, server_pid: int | None) -> None:
    path = record_path(key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"pid": pid, "start": start, "server_pid": server_pid}))
    os.replace(tmp, path)


def remove_record(key: str, pid: int) -> None:
    """Only our own: a successor may have written its record already."""
    record = read_record(key)
    if record is not None and record.get("pid") == pid:
        try:
            record_path(key).unlink()
        except OSError:
            pass


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def undo_trust_write(config: Path, before: bytes | None, cwd: str) -> bool:
    """`thread/start` with a cwd writes `[projects."<cwd>"] trust_level = "trusted"` into
    codex's config.toml. Put the file back as it was when that entry is all that changed
    (anything else someone changed meanwhile is left alone). True if it was undone."""
    after = read_bytes(config)
    if after is None or after == before:
        return False
    try:
        new = tomllib.loads(after.decode())
        old = tomllib.loads(before.decode()) if before is not None else {}
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    projects = dict(new.get("projects") or {})
    if cwd not in projects or cwd in (old.get("projects") or {}):
        return False
    projects.pop(cwd)
    if projects:
        new["projects"] = projects
    else:
        new.pop("projects", None)
    if new != old:
        return False
    if before is None:
        config.unlink(missing_ok=True)
        return True
    tmp = config.with_name(f".{config.name}.codexw-{os.getpid()}")
    tmp.write_bytes(before)
    os.chmod(tmp, os.stat(config).st_mode & 0o777)
    os.replace(tmp, config)
    return True


# -- the processes of one turn -----------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, start time) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    started = process.create_time(pid)
    return int(fields[1]), started if started is not None else 0.0


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
    return children


def _descendants(roots: set[int], children: dict[int, list[int]]) -> set[int]:
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        for child in children.get(pid, ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cwd_under(pid: int, cwd: str) -> bool:
    try:
        where = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return where == cwd or where.startswith(cwd.rstrip("/") + "/")


def turn_processes(server_pid: int | None, command_pids: set[int], cwd: str,
                   turn_started: float) -> set[int]:
    """What one turn started: each command the app-server reported (its `processId`) and
    their descendants; and, for commands it did not report, the app-server's descendants
    started since the turn began whose working directory is in the job's cwd. Two jobs of
    one app-server in the same folder at the same time cannot be told apart by the second
    rule (docs/design.md, "The app-server backend")."""
    children = _children_map()
    alive = {pid for pid in command_pids if _stat(pid) is not None
             and (_stat(pid) or (0, 0.0))[1] >= turn_started - 1.0}
    found = alive | _descendants(alive, children)
    if server_pid is not None:
        for pid in _descendants({server_pid}, children):
            st = _stat(pid)
            if st is not None and st[1] >= turn_started - 1.0 and _cwd_under(pid, cwd):
                found.add(pid)
                found |= _descendants({pid}, children)
    return found


def stop_turn_processes(server_pid: int | None, command_pids: set[int], cwd: str,
                        turn_started: float, grace: float) -> set[int]:
    """SIGTERM, up to `grace` seconds, then SIGKILL for what is left. Returns the PIDs."""
    targets = turn_processes(server_pid, command_pids, cwd, turn_started)
    starts = {pid: process.create_time(pid) for pid in targets}
    for pid in targets:
        process.signal_pid(pid, signal.SIGTERM, starts[pid])
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(
            process.is_alive(pid, starts[pid]) for pid in targets):
        time.sleep(0.05)
    for pid in targets:
        process.signal_pid(pid, signal.SIGKILL, starts[pid])
    return targets
