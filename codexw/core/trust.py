"""The trust store: which project config files the user has trusted, and with what content.

A project's `.codexw/config.toml` comes with the repository, so the keys in it that could
run code or leak data (config.NEEDS_TRUST) count only once the user ran `codexw trust`.
Trust is recorded in `<state dir>/trust.json` (0600) as one entry per (config file, project):

- `config`: the config file's resolved path (symlinks followed),
- `project`: the resolved project it was trusted for. A repository whose config is a symlink
  to a file trusted elsewhere is not trusted by that: a relative `codex_bin = "./x"` means
  another program in another project,
- `sha256`: the hash of the exact bytes trusted. Any edit needs trusting again.

Reading is fail-safe: a missing, unreadable or corrupt store, or one that another user
could have written, trusts nothing. Only the trust commands write it (atomically, under a
lock), so the launch path only reads a small JSON file, and hashes only when an entry for
this file exists.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codexw.core import paths
from codexw.core.errors import ConfigError

STORE_NAME = "trust.json"
STORE_VERSION = 1

TRUSTED, UNTRUSTED, CHANGED = "trusted", "untrusted", "changed"


def store_path() -> Path:
    return paths.state_dir() / STORE_NAME


def content_hash(data: bytes) -> str:
    import hashlib  # only when an entry for this file exists (launch avoids hashlib)

    return hashlib.sha256(data).hexdigest()


def config_key(config_file: str | os.PathLike[str]) -> str:
    return os.path.realpath(config_file)


def project_key(project: str | os.PathLike[str]) -> str:
    return os.path.realpath(project)


def _read(strict: bool) -> list[dict[str, Any]]:
    """The entries. Not strict (config loading): any doubt means no entries. Strict (the
    trust commands): a store that cannot be believed is an error naming the file."""
    path = store_path()

    def doubt(why: str, hint: str) -> list[dict[str, Any]]:
        if strict:
            raise ConfigError(f"trust store {path}: {why}", hint)
        return []

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return doubt(f"cannot read: {exc.strerror}", "fix its permissions or remove it")
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        # Whoever can write this file can make codexw run a program: only ours counts.
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return doubt("not owned by you or writable by others",
                         f"remove it and trust your projects again (`rm {path}`)")
        try:
            data = json.loads(fh.read())
        except (OSError, ValueError) as exc:
            return doubt(f"not readable JSON ({exc})", f"remove it (`rm {path}`)")
    entries = data.get("trusted") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return doubt("not a trust store", f"remove it (`rm {path}`)")
    return [e for e in entries if _valid(e)]


def _valid(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and all(isinstance(entry.get(k), str) for k in ("config", "project", "sha256"))
    )


def entries() -> list[dict[str, Any]]:
    return _read(strict=True)


def state(config_file: str | os.PathLike[str], project: str | os.PathLike[str],
          data: bytes) -> str:
    """TRUSTED when these exact bytes of this file were trusted for this project;
    CHANGED when the file was trusted with other content; else UNTRUSTED."""
    ckey, pkey = config_key(config_file), project_key(project)
    mine = [e for e in _read(strict=False) if e["config"] == ckey and e["project"] == pkey]
    if not mine:
        return UNTRUSTED
    digest = content_hash(data)
    return TRUSTED if any(e["sha256"] == digest for e in mine) else CHANGED


@contextmanager
def _locked() -> Iterator[None]:
    """Serialise read-modify-write of the store: two `codexw trust` at once keep both."""
    import fcntl

    directory = paths.ensure_state_dir()
    fd = os.open(directory / "trust.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(items: list[dict[str, Any]]) -> None:
    from codexw.core import reports  # its atomic write: tmp + fsync + rename + dir fsync

    text = json.dumps({"version": STORE_VERSION, "trusted": items}, indent=2) + "\n"
    try:
        reports.atomic_replace(store_path(), text, mode=0o600)
    except OSError as exc:
        raise ConfigError(f"trust store {store_path()}: cannot write: {exc.strerror or exc}",
                          "check free space and the state dir's permissions") from None


def add(config_file: str | os.PathLike[str], project: str | os.PathLike[str], data: bytes,
        keys: list[str]) -> dict[str, Any]:
    """Trust these bytes of this file for this project (replacing older trust of it)."""
    entry = {
        "config": config_key(config_file),
        "project": project_key(project),
        "sha256": content_hash(data),
        "trusted_at": time.time(),
        "keys": sorted(keys),
    }
    with _locked():
        items = [e for e in _read(strict=True)
                 if (e["config"], e["project"]) != (entry["config"], entry["project"])]
        _write([*items, entry])
    return entry


def remove(project: str | os.PathLike[str]) -> int:
    """Forget every trust given for this project (its config may have moved or gone since:
    a project has one config file); how many entries went."""
    pkey = project_key(project)
    with _locked():
        items = _read(strict=True)
        kept = [e for e in items if e["project"] != pkey]
        if len(kept) != len(items):
            _write(kept)
    return len(items) - len(kept)
