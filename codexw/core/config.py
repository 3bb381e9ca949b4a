"""Layered configuration: flag > CODEXW_* env > project config > user config > defaults.

A project's config comes with the repository, so it is untrusted: the keys in NEEDS_TRUST
are taken from it only once the user trusts that file (`codexw trust`, core/trust.py).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codexw.core import notices, paths
from codexw.core.durations import parse_duration
from codexw.core.errors import ConfigError, UsageError
from codexw.core.models import BACKENDS, ISOLATIONS, LEVELS, SANDBOXES, is_job_type
from codexw.core.validate import int_problem, int_range

if TYPE_CHECKING:
    from collections.abc import Callable

QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
BROKER_SCHEMES = ("redis://", "rediss://")
# A prefix git accepts in any branch name (no "..", "@{", leading '-' or '.', ...).
BRANCH_PREFIX_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:[/.][A-Za-z0-9_-]+)*[/_.-]?")


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
    # Off: a new .codexw/ gets a .gitignore keeping reports out of git (config.toml in).
    track_reports: bool = False
    # On: codexw appends to every prompt a request for a final message in the report's
    # sections (codex.PROMPT_SUFFIX); `report_sections = false` sends the task alone.
    report_sections: bool = True
    # How deep jobs may launch jobs: a launch from inside a job whose codex runs at
    # CODEXW_DEPTH >= max_depth is refused (core.validate.check_depth).
    max_depth: int = 2
    # Start an npm-installed codex as its native binary (core.codexbin); false runs the
    # Node wrapper as installed.
    codex_native: bool = True
    # --backend app-server: an app-server with no running turn for this long shuts down.
    app_server_idle: float = 600.0
    # A git worktree per job (docs/isolation.md): "none" or "worktree"; the branch is
    # <branch_prefix><job id>; files copied in from the project, and an argv run in the
    # worktree before codex.
    isolation: str = "none"
    branch_prefix: str = "codexw/"
    worktree_copy: tuple[str, ...] = ()
    worktree_setup: tuple[str, ...] = ()
    # The rate limiter per account (core/limiter.py; README "Rate limits").
    adaptive: bool = True
    rate_limit_backoff: float = 2.0
    rate_limit_retries: int = 6
    max_starts_per_minute: int | None = None
    max_tokens_per_hour: int | None = None
    max_tokens_per_day: int | None = None
    # Where job ends are announced (core.announce): desktop, webhook:URL, command:PATH.
    notify: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    project: ProjectTrust | None = field(default=None, compare=False)

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


class ProjectTrust:
    """What became of a project config's keys that need trust. A plain class: one more
    dataclass would add ~1 ms to every launch."""

    __slots__ = ("file", "ignored", "needs_trust", "state")

    def __init__(self, file: str, state: str, needs_trust: tuple[str, ...],
                 ignored: tuple[str, ...]) -> None:
        self.file = file
        self.state = state  # trusted | untrusted | changed (trusted, then edited) | not needed
        self.needs_trust = needs_trust  # the keys in the file that need trust
        self.ignored = ignored  # those not taken (empty once trusted)

    def __repr__(self) -> str:
        return f"ProjectTrust({self.to_dict()!r})"

    def notice(self) -> str | None:
        """The one-line notice while keys are ignored."""
        if not self.ignored:
            return None
        why = ("it changed since you trusted it" if self.state == "changed"
               else "the project is not trusted")
        return (f"ignoring {', '.join(self.ignored)} from {self.file}: {why}"
                " (review it, then run `codexw trust`)")

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "state": self.state, "needs_trust": list(self.needs_trust),
                "ignored": list(self.ignored)}


KEYS = {f.name for f in fields(Config) if f.name not in ("sources", "project")}
_DEFAULTS = Config()

_SANDBOX_RANK = {name: rank for rank, name in enumerate(SANDBOXES)}  # read-only is 0


def _no_weaker_sandbox(value: Any, base: Any) -> bool:
    # A sandbox no weaker than the one the user would get otherwise only takes power away.
    return _SANDBOX_RANK[value] <= _SANDBOX_RANK[base]


def _stays_local(value: Any, base: Any) -> bool:
    return bool(value == "local")


def _no_deeper(value: Any, base: Any) -> bool:
    # A project may bound fan-out more tightly than the user, never less.
    return bool(value <= base)


def _inside_project(value: Any, base: Any) -> bool:
    # Files copied from the project into the project's own worktree reveal nothing new.
    return all(not os.path.isabs(p) and ".." not in Path(p).parts for p in value)


def _desktop_only(value: Any, base: Any) -> bool:
    # notify-send shows a line on this user's screen: no program of the project's
    # choosing runs and nothing leaves the machine.
    return all(target == "desktop" for target in value)


# Every key that runs a program, chooses its arguments, weakens the sandbox, names a path
# outside the project or sends data off the machine. From a project config such a key is
# taken only once the user trusts the file. A key added later that does any of this
# (worktree set-up commands, copied files, notification commands, webhooks) goes here.
# The value, when not None, says when the key is harmless anyway:
# f(project value, value from the user config or defaults) -> True to take it untrusted.
NEEDS_TRUST: dict[str, Callable[[Any, Any], bool] | None] = {
    "codex_bin": None,  # runs a program
    "codex_args": None,  # its arguments: -c sandbox_mode=..., --add-dir /, a profile
    "sandbox": _no_weaker_sandbox,  # read-only is fine, danger-full-access is not
    "templates_dir": None,  # reads files anywhere into reports (a template may be a symlink)
    "broker_url": None,  # where tasks (and project paths) are sent
    "backend": _stays_local,  # celery sends the task off this machine
    "max_depth": _no_deeper,  # a deeper tree of jobs launching jobs spends the user's account
    "worktree_setup": None,  # runs a program
    "worktree_copy": _inside_project,  # a path outside the project would leak a file
    "notify": _desktop_only,  # a webhook sends job data away, a command runs a program
}


def on_notice(sink: Callable[[str], None] | None) -> None:
    """Where the one-line 'ignoring … (run `codexw trust`)' notices go (see core/notices)."""
    notices.set_sink(sink)


_DURATION_KEYS = {"timeout", "kill_grace", "backoff_base", "backoff_max", "app_server_idle",
                  "rate_limit_backoff"}
# Whole numbers and their lowest value (the highest: core/validate.INT_RANGES).
_COUNT_KEYS = {"max_parallel": 1, "retries": 0, "rate_limit_retries": 0,
               "max_starts_per_minute": 1, "max_tokens_per_hour": 1, "max_tokens_per_day": 1,
               "max_depth": 1}


def _expected(key: str) -> str:
    return {
        "level": "one of " + ", ".join(LEVELS),
        "sandbox": "one of " + ", ".join(SANDBOXES),
        "type": "a name matching [a-z0-9][a-z0-9_-]{0,31}",
        "max_parallel": "a whole number of at least 1",
        "max_depth": "a whole number from 1 to 100",
        "retries": "a whole number of at least 0",
        "rate_limit_retries": "a whole number of at least 0",
        "max_starts_per_minute": "a whole number of at least 1",
        "max_tokens_per_hour": "a whole number of at least 1",
        "max_tokens_per_day": "a whole number of at least 1",
        "retry_timeouts": "true or false",
        "adaptive": "true or false",
        "track_reports": "true or false",
        "report_sections": "true or false",
        "codex_native": "true or false",
        "codex_args": "a list of strings",
        "notify": "a list of desktop, webhook:URL (http or https), command:/absolute/path",
        "backend": "one of " + ", ".join(BACKENDS),
        "broker_url": "a Redis URL such as redis://host:6379/0 (redis:// or rediss://)",
        "queue": "a queue name: letters, digits, '_', '.', ':' or '-', up to 64",
        "isolation": "one of " + ", ".join(ISOLATIONS),
        "branch_prefix": "a git branch name prefix such as codexw/ (letters, digits, '/', '.',"
                         " '_' or '-')",
        "worktree_copy": "a list of paths relative to the project",
        "worktree_setup": "a command as a list of strings, e.g. [\"npm\", \"ci\"]"
                          " (never a shell string)",
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
    if key in _COUNT_KEYS:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, int) or value < _COUNT_KEYS[key]:
            raise bad()
        if int_problem(value, *int_range(key)):
            raise bad()
        return value
    if key in ("retry_timeouts", "track_reports", "report_sections", "codex_native",
               "adaptive"):
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
    if key == "notify":
        if isinstance(value, str):  # CODEXW_NOTIFY: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad()
        from codexw.core.validate import notify_problem

        for target in value:
            if (problem := notify_problem(target)) is not None:
                raise err(f"{'--notify' if flag else where + ': notify'}: {problem}",
                          f"expected {_expected(key)}")
        return tuple(value)
    if key == "codex_args":
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad()
        return tuple(value)
    if key in ("worktree_copy", "worktree_setup"):
        if isinstance(value, str) and where.startswith("environment variable"):
            value = value.split(os.pathsep) if key == "worktree_copy" else shlex.split(value)
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, str) and v and "\x00" not in v for v in value
        ):
            raise bad()
        if key == "worktree_copy" and any(".." in Path(v).parts for v in value):
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
    if key == "isolation" and value not in ISOLATIONS:
        raise bad()
    if key == "branch_prefix" and not BRANCH_PREFIX_RE.fullmatch(value):
        raise bad()
    return value


MAX_CONFIG_BYTES = 1 << 20


def read_bytes(path: Path) -> bytes | None:
    """The file's content, None when there is none. A repository can make its config a
    symlink to /dev/zero or a FIFO: only a regular file of at most 1 MiB is read, and
    opening never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"{path}: not a regular file", "a config is a TOML file")
            content = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(content) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than 1 MiB", "a config is a short TOML file")
    return content


def _read_toml(path: Path, content: bytes | None) -> dict[str, Any]:
    if content is None:
        return {}
    import tomllib  # only when there is a file to parse: most runs have none

    try:
        data = tomllib.loads(content.decode())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", "fix or remove the file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid UTF-8 (byte {exc.start})", "save it as UTF-8 TOML or remove it"
        ) from None
    return data


def parse_file(path: Path, content: bytes | None) -> dict[str, Any]:
    """Every key of a config file, validated (an error names the file and the key)."""
    values = {}
    for key, value in _read_toml(path, content).items():
        if key not in KEYS:
            raise ConfigError(
                f"{path}: unknown key {key!r}", "known keys: " + ", ".join(sorted(KEYS))
            )
        values[key] = _coerce(key, value, where=str(path))
    return values


def needing_trust(file_values: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """The keys of a project file that count only once it is trusted; `base` holds the
    values from the layers below (user config), defaults fill the rest."""
    held = []
    for key, value in file_values.items():
        if key not in NEEDS_TRUST:
            continue
        harmless = NEEDS_TRUST[key]
        if harmless is None or not harmless(value, base.get(key, getattr(_DEFAULTS, key))):
            held.append(key)
    return held


def _project_layer(
    project: str | os.PathLike[str], base: dict[str, Any]
) -> tuple[dict[str, Any], ProjectTrust | None]:
    """The project file's values that count, and what became of the ones needing trust."""
    path = paths.project_config_file(project)
    content = read_bytes(path)
    if content is None:
        return {}, None
    values = parse_file(path, content)  # ignored keys are still validated: a typo is an error
    held = needing_trust(values, base)
    if not held:
        return values, ProjectTrust(str(path), "not needed", (), ())
    from codexw.core import trust  # only for a project config that asks for trust

    # The hash is of the very bytes parsed above: no window to swap the file in between.
    state = trust.state(path, project, content)
    if state == trust.TRUSTED:
        return values, ProjectTrust(str(path), state, tuple(held), ())
    result = ProjectTrust(str(path), state, tuple(held), tuple(held))
    for key in held:
        del values[key]
    return values, result


def load_config(project: str | os.PathLike[str] | None = None) -> Config:
    """Merge defaults, the user file, the project file and CODEXW_* variables."""
    user = paths.user_config_file()
    values = parse_file(user, read_bytes(user))
    sources = dict.fromkeys(values, str(user))
    project_trust = None
    if project is not None:
        project_values, project_trust = _project_layer(project, values)
        values.update(project_values)
        sources.update(dict.fromkeys(project_values, str(paths.project_config_file(project))))
        if project_trust is not None and (message := project_trust.notice()):
            notices.notice(message)
    for key in KEYS:
        env_name = "CODEXW_" + key.upper()
        raw = os.environ.get(env_name)
        if raw is not None and raw != "":
            values[key] = _coerce(key, raw, where=f"environment variable {env_name}")
            sources[key] = env_name
    return Config(**values, sources=sources, project=project_trust)
