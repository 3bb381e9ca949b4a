"""The one check of a job spec's fields, before anything is recorded.

Every way a spec is made (launch flags, config values, batch files, `continue`,
`retry`) ends in `check_spec`, so a value the registry, argv, the environment or a
path cannot hold is refused once, here, as a one-line usage error (exit 2), instead
of crashing later: an integer past SQLite's signed 64-bit INTEGER raises
OverflowError at insert, and a NUL byte in an argument kills the runner at exec.

Limits (documented in the README):
  job and batch ids      1 … 2^63-1 (SQLite's INTEGER)
  retries                0 … 100
  priority               -2^31 … 2^31-1
  max_parallel           1 … 10000
  rate_limit_retries     0 … 100
  max_starts_per_minute  1 … 100000
  token budgets          1 … 10^15
  durations              more than 0, at most 366 days, finite
  text                   no NUL byte, valid UTF-8 (no lone surrogates from bad argv bytes)
  max_depth              1 … 100
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from codexw.core.errors import UsageError
from codexw.core.models import JobSpec

MAX_ID = 2**63 - 1
MAX_RETRIES = 100
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1
MAX_PARALLEL = 10_000
MAX_SECONDS = 366 * 86400.0
MAX_DEPTH = 100
# How deep the environment is in a tree of jobs launching jobs: unset at a person's
# shell, 1 in the codex of a job launched from there, one more per level (core.run.codex_env).
DEPTH_ENV = "CODEXW_DEPTH"
INT64 = (-(2**63), 2**63 - 1)

# Field → (lowest, highest) for whole numbers, by the name they have in a spec, a
# config and a launch request alike; any other int field must fit SQLite's INTEGER.
INT_RANGES: dict[str, tuple[int, int]] = {
    "retries": (0, MAX_RETRIES),
    "priority": (MIN_PRIORITY, MAX_PRIORITY),
    "job_id": (1, MAX_ID),
    "batch_id": (1, MAX_ID),
    "resume_of": (1, MAX_ID),
    "after": (1, MAX_ID),
    "global_limit": (1, MAX_PARALLEL),
    "max_parallel": (1, MAX_PARALLEL),
    "max_depth": (1, MAX_DEPTH),
    "rate_limited": (0, MAX_RETRIES),
    "rate_limit_retries": (0, MAX_RETRIES),
    "max_starts_per_minute": (1, 100_000),
    "max_tokens_per_hour": (1, 10**15),
    "max_tokens_per_day": (1, 10**15),
    "budget_tokens": (1, 10**15),
}
DURATIONS = frozenset({"timeout", "kill_grace", "backoff_base", "backoff_max",
                       "rate_limit_backoff"})
LABELS = {
    "after": "--after job id",
    "global_limit": "max_parallel",
    "codex_args": "a codex argument",
    "add_dirs": "--add-dir",
    "cwd": "the working directory",
    "task": "the task",
}


class SpecError(UsageError):
    """A field of a spec is out of range or cannot be stored or passed on."""

    def __init__(self, field: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.field = field


def text_problem(value: str) -> str | None:
    """Why `value` cannot become argv, an environment value, a path or a registry cell."""
    if "\x00" in value:
        return "contains a NUL byte"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: undecodable bytes on argv
        return f"is not valid UTF-8 (character {exc.start})"
    return None


def check_text(value: str, what: str) -> str:
    problem = text_problem(value)
    if problem:
        raise UsageError(f"{what} {problem}", "pass plain UTF-8 text")
    return value


def int_problem(value: int, lo: int, hi: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value!r} is not a whole number"
    if not lo <= value <= hi:
        return f"{value} is out of range ({lo} to {hi})"
    return None


def check_int(value: int, what: str, lo: int, hi: int) -> int:
    problem = int_problem(value, lo, hi)
    if problem:
        raise UsageError(f"{what}: {problem}")
    return value


def check_id(value: int, what: str = "job id") -> int:
    return check_int(value, what, 1, MAX_ID)


def int_range(name: str) -> tuple[int, int]:
    return INT_RANGES.get(name, INT64)


def check_max_parallel(value: int, what: str = "--max-parallel") -> int:
    return check_int(value, what, 1, MAX_PARALLEL)


def field_problem(name: str, value: Any) -> str | None:
    """What is wrong with field `name` holding `value`, judged by its type and name."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, int):
        return int_problem(value, *INT_RANGES.get(name, INT64))
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"{value} is not a finite number"
        if name in DURATIONS and not 0 < value <= MAX_SECONDS:
            return (f"{value:g} s is out of range (more than 0, at most"
                    f" {MAX_SECONDS / 86400:g} days)")
        return None
    if isinstance(value, tuple | list):
        for item in value:
            problem = field_problem(name, item)
            if problem:
                return problem
    return None


def first_problem(record: Any) -> tuple[str, str] | None:
    """(field, problem) for the first bad field of a dataclass (spec, config, request)."""
    for f in fields(record):
        problem = field_problem(f.name, getattr(record, f.name))
        if problem:
            return f.name, problem
    return None


def spec_error(name: str, problem: str) -> SpecError:
    hint = "pass plain UTF-8 text" if problem.startswith(("contains a NUL", "is not valid UTF")) else None
    return SpecError(name, f"{LABELS.get(name, name)} {problem}", hint)


_Record = TypeVar("_Record")


def check_fields(record: _Record) -> _Record:
    """Refuse the first field of `record` (a dataclass) that cannot be stored or passed on."""
    found = first_problem(record)
    if found:
        raise spec_error(*found)
    return record


NOTIFY_KINDS = "desktop, webhook:http(s)://HOST/PATH or command:/absolute/path"


def notify_problem(target: str) -> str | None:
    """Why `target` is not a notification target (core.announce), None if it is one."""
    problem = text_problem(target)
    if problem:
        return problem
    if target == "desktop":
        return None
    kind, sep, rest = target.partition(":")
    if sep and kind == "webhook":
        from urllib.parse import urlsplit

        try:
            url = urlsplit(rest)
        except ValueError:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.hostname or any(
            c.isspace() or ord(c) < 32 for c in rest
        ):
            return f"{target!r}: a webhook is an http:// or https:// URL"
        return None
    if sep and kind == "command":
        if not rest.startswith("/"):
            return f"{target!r}: a command is an absolute path (run as argv, never a shell)"
        return None
    return f"{target!r} is not a notification target"


def check_notify(targets: tuple[str, ...], where: str = "--notify") -> tuple[str, ...]:
    """Every target, and for a command that it is an executable file now (a typo is
    found at launch, not when the job ends)."""
    import os

    for target in targets:
        problem = notify_problem(target)
        if problem is None and target.startswith("command:"):
            path = target.partition(":")[2]
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                problem = f"{target!r}: {path} is not an executable file"
        if problem:
            raise UsageError(f"{where}: {problem}", f"use {NOTIFY_KINDS}")
    return targets


def check_spec(spec: JobSpec) -> JobSpec:
    """Every field of `spec`, by its type: a field added later is checked too."""
    return check_fields(spec)


def depth_of(environ: Mapping[str, str]) -> int | None:
    """The job depth `environ` says it is at: 0 when unset, None when not a whole
    number from 0 to 2^31-1."""
    raw = environ.get(DEPTH_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or int(raw) > MAX_PRIORITY:
        return None
    return int(raw)


def check_depth(environ: Mapping[str, str], max_depth: int, inherited: int = 0) -> int:
    """Refuse a launch from inside a job tree already `max_depth` deep (so one agent
    cannot fan out without bound); returns the launching environment's depth.
    `inherited`: the depth an ancestor process says, when this environment lost it."""
    depth = depth_of(environ)
    if depth is not None:
        depth = max(depth, inherited)
    if depth is None:
        raise UsageError(
            f"{DEPTH_ENV}={environ.get(DEPTH_ENV)!r} is not a job depth",
            "codexw sets it in the jobs it starts: a whole number, or unset",
        )
    if depth >= max_depth:
        raise UsageError(
            f"refused: this runs inside a job {depth} level{'s' if depth > 1 else ''} deep"
            f" ({DEPTH_ENV}={depth}) and max_depth is {max_depth}: jobs launched from here"
            " could launch jobs without bound",
            "do the work in this job, or raise max_depth in your own config",
        )
    return depth
