"""The environment of the command that launched a job, kept for whoever starts it.

A queued job may be started much later by another process: a runner that finished
someone else's job, cron's `cleanup`, an `env -i` kill. codex must still run with the
launching command's environment (its API key, HOME, PATH), as pueue does. The whole
environment is one JSON file, `<state dir>/env/<key>.json`, 0600 in a 0700 folder:
never in the registry, a log or a report. Every job queued by one command shares its
file (its automatic retries too); the file is removed when the last open job that
names it ends (lifecycle.record_end).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from codexw.core import naming, paths, reports


def env_dir() -> Path:
    return paths.state_dir() / naming.ENV_DIR


def env_path(key: str) -> Path:
    return env_dir() / naming.env_file(key)  # ValueError for a key that is not ours


def new_key() -> str:
    return os.urandom(12).hex()


def save(key: str, environ: Mapping[str, str]) -> None:
    """Write `environ` under `key` (tmp + fsync + rename, 0600)."""
    paths.ensure_state_dir()
    env_dir().mkdir(exist_ok=True, mode=0o700)
    reports.atomic_replace(env_path(key), json.dumps(dict(environ)), mode=0o600)


def load(key: str) -> dict[str, str] | None:
    """The saved environment, or None if its file is gone or unreadable."""
    try:
        with open(env_path(key), "rb") as fh:
            data = json.loads(fh.read().decode("utf-8", "surrogateescape"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    return {str(k): str(v) for k, v in data.items()}


def remove(key: str) -> None:
    try:
        os.unlink(env_path(key))
    except (OSError, ValueError):
        pass
