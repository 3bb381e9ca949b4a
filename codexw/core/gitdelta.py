"""Which files a run changed, from `git status` before and after it (outside git, from
two listings of the working directory).

The real codex reports `file_change` items only for its own patch tool; a file
written by a shell command shows up nowhere in the event stream. The runner takes
a snapshot of the working tree before codex starts and compares it with one taken
when codex has ended. Standard library only (the runner imports this).

A snapshot maps each path that `git status` lists (relative to the repository
top level) to its status code and the file's (size, mtime_ns), so a file that was
already modified before the run and is changed again is still noticed. Changes
made meanwhile by anything else in the same tree (another job, the user) are
indistinguishable and are listed too.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

GIT_TIMEOUT = 30.0
IGNORED_PREFIXES = (".codexw/",)  # codexw's own reports


@dataclass
class Snapshot:
    top: str
    head: str | None = None
    entries: dict[str, tuple[str, tuple[int, int] | None]] = field(default_factory=dict)
    walked: bool = False  # a listing of a folder outside git, not `git status`


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every git command of codexw runs with: no optional locks (a
    status never takes index.lock), C messages, and no GIT_DIR/GIT_WORK_TREE of the
    caller's steering git elsewhere."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    if extra:
        env.update(extra)
    return env


def git_run(
    cwd: str, *args: str, env: dict[str, str] | None = None, timeout: float = GIT_TIMEOUT,
) -> subprocess.CompletedProcess[bytes] | None:
    """Run `git ARGS` in `cwd` (argv, never a shell); None when git cannot be run
    (not installed, timed out). stdout and stderr are captured."""
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=git_env(env), stdin=subprocess.DEVNULL,
            capture_output=True, timeout=timeout, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _git(cwd: str, *args: str) -> bytes | None:
    done = git_run(cwd, *args)
    return done.stdout if done is not None and done.returncode == 0 else None


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _nearest_git_root(cwd: str) -> str | None:
    here = os.path.realpath(cwd)
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


MAX_WALKED = 20_000  # outside git: the most files listed; a bigger tree is not compared


def _walk(top: str) -> Snapshot | None:
    """Outside git: every file under `top` with its size and mtime (codexw's own
    folder and VCS folders skipped), or None for a tree too big to list cheaply."""
    snap = Snapshot(top, None, walked=True)
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in (".git", ".hg", ".svn", ".codexw"):
                        stack.append(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            snap.entries[os.path.relpath(entry.path, top)] = ("", (st.st_size, st.st_mtime_ns))
            if len(snap.entries) > MAX_WALKED:
                return None
    return snap


def snapshot(cwd: str) -> Snapshot | None:
    """The working tree's state: `git status` inside a repository, else a listing of the
    files under `cwd` (None when neither is possible)."""
    top = _git(cwd, "rev-parse", "--show-toplevel")
    if not top:
        return None if _nearest_git_root(cwd) else _walk(os.path.realpath(cwd))
    top_dir = top.decode("utf-8", "surrogateescape").strip()
    if os.path.realpath(top_dir) != _nearest_git_root(cwd):
        return None  # e.g. a stray `.git` that git skipped on its way up: not our project
    out = _git(cwd, "status", "--porcelain=v1", "-z", "--untracked-files=all",
               "--ignore-submodules=all")
    if out is None:
        return None
    head = _git(cwd, "rev-parse", "--verify", "-q", "HEAD")
    snap = Snapshot(top_dir, head.decode().strip() if head else None)
    for code, path in status_entries(out):
        snap.entries[path] = (code, _stat(os.path.join(top_dir, path)))
    return snap


def status_entries(out: bytes) -> Iterator[tuple[str, str]]:
    """(XY code, path) from `git status --porcelain=v1 -z`, codexw's own files left out."""
    fields = out.split(b"\0")
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        code = entry[:2].decode("ascii", "replace")
        path = entry[3:].decode("utf-8", "surrogateescape")
        if code[0] in "RC":
            i += 1  # the next field is the rename's source
        if not path.startswith(IGNORED_PREFIXES):
            yield code, path


def _kind(code: str) -> str:
    if code == "??" or "A" in code:
        return "add"
    if "D" in code:
        return "delete"
    return "update"


def delta(before: Snapshot, after: Snapshot) -> dict[str, str]:
    """path (relative to the top level) → add | update | delete, for what changed."""
    changed: dict[str, str] = {}
    if before.walked:  # two listings of a folder outside git
        for path, entry in after.entries.items():
            old = before.entries.get(path)
            if old != entry:
                changed[path] = "add" if old is None else "update"
        for path in before.entries.keys() - after.entries.keys():
            changed[path] = "delete"
        return changed
    for path, (code, stat) in after.entries.items():
        old = before.entries.get(path)
        if old is None or old != (code, stat):
            changed[path] = _kind(code)
    for path in before.entries.keys() - after.entries.keys():
        changed[path] = "update"  # was dirty, now clean again: the run reverted or committed it
    return changed


def _committed(before: Snapshot, after: Snapshot) -> dict[str, str]:
    """Files in commits the run made (they are clean again, so status misses them)."""
    if not before.head or not after.head or before.head == after.head:
        return {}
    out = _git(before.top, "diff", "--name-status", "-z", "--no-renames", before.head, after.head)
    if out is None:
        return {}
    parts = out.split(b"\0")
    found = {}
    for code, path in zip(parts[0::2], parts[1::2], strict=False):
        name = path.decode("utf-8", "surrogateescape")
        if name and not name.startswith(IGNORED_PREFIXES):
            found[name] = {"A": "add", "D": "delete"}.get(code.decode()[:1], "update")
    return found


def changed_files(before: Snapshot | None, cwd: str) -> dict[str, str]:
    """What changed since `before`, with paths relative to `cwd` when inside it."""
    if before is None:
        return {}
    after = _walk(before.top) if before.walked else snapshot(cwd)
    if after is None:
        return {}
    changes = _committed(before, after)
    changes.update(delta(before, after))
    base = os.path.realpath(cwd)
    found = {}
    for path, kind in changes.items():
        absolute = os.path.join(before.top, path)
        rel = os.path.relpath(absolute, base)
        found[absolute if rel.startswith("..") else rel] = kind
    return found
