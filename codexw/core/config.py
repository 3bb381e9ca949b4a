"""Layered configuration: flag > CODEXW_* env > project config > user config > defaults."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from codexw.core import paths
from codexw.core.durations import parse_duration
from codexw.core.errors import ConfigError, UsageError
from codexw.core.models import BACKENDS, LEVELS, SANDBOXES, is_job_type

QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
BROKER_SCHEMES = ("redis://", "rediss://")


@dataclass(frozen=True)
class Config:
    codex_bin: str = "codex"
    level: str = "low"
    type: str = "workers"
    model: str | None = None
    sandbox: str = "workspace-write"
    timeout: float | None = None
    kill_grace: float = 10.0
    max_parallel: int | None = None
    retries: int = 0
    retry_timeouts: bool = False
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    templates_dir: str | None = None
    codex_args: tuple[str, ...] = ()
    backend: str = "local"
    broker_url: str | None = None
    queue: str = "codex"
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def with_overrides(self, **values: Any) -> Config:
        """Apply command-line flags (None means 'not given'), validating each."""
        changes: dict[str, Any] = {}
        sources = dict(self.sources)
        for key, value in values.items():
            if value is None:
                continue
            changes[key] = _coerce(key, value, where="command line", flag=True)
            sources[key] = "command line"
        return replace(self, **changes, sources=sources)


KEYS = {f.name for f in fields(Config) if f.name != "sources"}
_DURATION_KEYS = {"timeout", "kill_grace", "backoff_base", "backoff_max"}


def _expected(key: str) -> str:
    return {
        "level": "one of " + ", ".join(LEVELS),
        "sandbox": "one of " + ", ".join(SANDBOXES),
        "type": "a name matching [a-z0-9][a-z0-9_-]{0,31}",
        "max_parallel": "a whole number of at least 1",
        "retries": "a whole number of at least 0",
        "retry_timeouts": "true or false",
        "codex_args": "a list of strings",
        "backend": "one of " + ", ".join(BACKENDS),
        "broker_url": "a Redis URL such as redis://host:6379/0 (redis:// or rediss://)",
        "queue": "a queue name: letters, digits, '_', '.', ':' or '-', up to 64",
    }.get(key, "a duration such as 90s, 20m or 2h" if key in _DURATION_KEYS else "a string")


def _coerce(key: str, value: Any, where: str, flag: bool = False) -> Any:
    err = UsageError if flag else ConfigError

    def bad() -> Exception:
        return err(f"{where}: bad value {value!r} for {key!r}", f"expected {_expected(key)}")

    if key in _DURATION_KEYS:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int | float):
            if value <= 0:
                raise bad()
            return float(value)
        try:
            return parse_duration(str(value), what=key)
        except UsageError:
            raise bad() from None
    if key in ("max_parallel", "retries"):
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, int) or value < (
            1 if key == "max_parallel" else 0
        ):
            raise bad()
        return value
    if key == "retry_timeouts":
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise bad()
        if not isinstance(value, bool):
            raise bad()
        return value
    if key == "codex_args":
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad()
        return tuple(value)
    if not isinstance(value, str) or not value:
        raise bad()
    if key == "level" and value not in LEVELS:
        raise bad()
    if key == "sandbox" and value not in SANDBOXES:
        raise bad()
    if key == "type" and not is_job_type(value):
        raise bad()
    if key == "backend" and value not in BACKENDS:
        raise bad()
    if key == "broker_url" and (
        not value.startswith(BROKER_SCHEMES) or any(c.isspace() for c in value)
    ):
        raise bad()
    if key == "queue" and not QUEUE_NAME_RE.fullmatch(value):
        raise bad()
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    import tomllib  # only when there is a file to parse: most runs have none

    try:
        with fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", "fix or remove the file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid UTF-8 (byte {exc.start})", "save it as UTF-8 TOML or remove it"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return data


def load_config(project: str | os.PathLike[str] | None = None) -> Config:
    """Merge defaults, the user file, the project file and CODEXW_* variables."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    files = [paths.user_config_file()]
    if project is not None:
        files.append(paths.project_config_file(project))
    for path in files:
        for key, value in _read_toml(path).items():
            if key not in KEYS:
                raise ConfigError(
                    f"{path}: unknown key {key!r}", "known keys: " + ", ".join(sorted(KEYS))
                )
            values[key] = _coerce(key, value, where=str(path))
            sources[key] = str(path)
    for key in KEYS:
        env_name = "CODEXW_" + key.upper()
        raw = os.environ.get(env_name)
        if raw is not None and raw != "":
            values[key] = _coerce(key, raw, where=f"environment variable {env_name}")
            sources[key] = env_name
    return Config(**values, sources=sources)
