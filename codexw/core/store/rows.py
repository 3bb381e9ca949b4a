"""Reading registry rows into jobs without trusting them.

SQLite keeps whatever a column was given (a token count as text, a float where an
id belongs), and a registry can be damaged by a bug, an older codexw or a hand edit.
A row that does not map cleanly must never take a command down: each field is
checked against the type the model declares; what cannot be read is named, and the
caller decides (reconcile ends such a job as `lost`, listings show what they can).
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import MISSING, dataclass, fields
from typing import Any

from codexw.core.models import TOKEN_KEYS, Job, JobSpec, JobState

UNREADABLE = "registry row could not be read"

# Annotation (a string, under `from __future__ import annotations`) -> (type, nullable).
_KINDS: dict[str, tuple[type, bool]] = {
    "str": (str, False),
    "str | None": (str, True),
    "int": (int, False),
    "int | None": (int, True),
    "float": (float, False),
    "float | None": (float, True),
    "bool": (bool, False),
}
_INT64_MAX = 2**63 - 1
# JobSpec fields that are not columns of `jobs` (declared once, here): `after` lives in
# the job_deps table. Every other field is the column of the same name.
NOT_COLUMNS = frozenset({"after"})
SPEC_COLUMNS = tuple(f.name for f in fields(JobSpec) if f.name not in NOT_COLUMNS)
# Spec fields held as a JSON list of strings (codex_args, worktree_setup, ...).
LIST_COLUMNS = tuple(
    f.name for f in fields(JobSpec)
    if f.name not in NOT_COLUMNS and str(f.type) == "tuple[str, ...]"
)
# Fields that are not plain columns, read by hand below.
_SPECIAL = {"spec", "state", "tokens", "files", "waiting", *LIST_COLUMNS} | NOT_COLUMNS


@dataclass(frozen=True)
class Unreadable:
    """A row that did not map: the best-effort job, what was wrong, and the raw values
    a conditional update must match (the parsed ones may be replaced by defaults)."""

    job: Job
    problem: str
    raw_state: Any
    raw_runner_pid: Any


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(value: Any, kind: type, nullable: bool) -> tuple[bool, Any]:
    """(ok, value converted to `kind`)."""
    if value is None:
        return nullable, None
    if kind is str:
        return type(value) is str, value
    if kind is bool:
        return type(value) is int and value in (0, 1), bool(value)
    if kind is int:
        if type(value) is float and value.is_integer() and abs(value) <= _INT64_MAX:
            return True, int(value)  # an integral REAL: SQLite's affinity can leave one
        return type(value) is int, value
    if kind is float:
        if type(value) in (int, float) and math.isfinite(value):
            return True, float(value)
        return False, None
    return False, None  # pragma: no cover - every annotation used is in _KINDS


# Per dataclass, what reading its plain fields takes, worked out once (not per row:
# the queue's plan and a batch's live view read every queued job many times a second).
_FieldPlan = tuple[str, "tuple[type, bool] | None", Any, bool]
_PLANS: dict[type, list[_FieldPlan]] = {}


def _field_plan(cls: type) -> list[_FieldPlan]:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = [
            (f.name, _KINDS.get(str(f.type)), f.default if f.default is not MISSING else None,
             f.default is MISSING and f.default_factory is MISSING)
            for f in fields(cls) if f.name not in _SPECIAL
        ]
    return plan


class _Reader:
    def __init__(self, row: sqlite3.Row) -> None:
        self.row = row
        self.problems: list[str] = []

    def fill(self, cls: type, values: dict[str, Any]) -> dict[str, Any]:
        """Read every plain field of dataclass `cls` from the column of the same name."""
        row = self.row
        for name, kind, default, required in _field_plan(cls):
            if name in values:
                continue
            try:
                raw = row[name] if kind is not None else None
            except IndexError:
                kind = None
            if kind is None:
                if required:
                    self.problems.append(f"{name}: missing")
                    values[name] = _fallback_for(cls, name)
                continue
            if type(raw) is kind[0] and kind[0] in (str, int):  # the common case, checked
                values[name] = raw
                continue
            ok, value = _check(raw, *kind)
            if not ok:
                self.problems.append(f"{name}: unexpected {_show(raw)}")
                value = default if default is not None or kind[1] else _fallback_for(cls, name)
            values[name] = value
        return values


def _fallback_for(cls: type, name: str) -> Any:
    return _fallback(next(str(f.type) for f in fields(cls) if f.name == name))


def _fallback(annotation: Any) -> Any:
    """A harmless stand-in for a required field that could not be read."""
    return {"str": "?", "int": 0, "float": 0.0, "bool": False}.get(str(annotation))


def read_job(row: sqlite3.Row, deps: tuple[Any, ...] = ()) -> Job | Unreadable:
    """The job of `row`, or an `Unreadable` carrying the best-effort job and the problem.

    The best-effort job keeps the row's state when it is a known one (a live runner
    may still record its outcome), else it is shown as `lost`; its reason says what
    could not be read."""
    reader = _Reader(row)
    problems = reader.problems
    lists: dict[str, Any] = {}
    for column in LIST_COLUMNS:
        try:
            raw = row[column]
        except IndexError:
            continue  # a column this registry does not have: the default
        try:
            items = json.loads(raw)
        except (ValueError, TypeError, RecursionError):
            items = None
        if not isinstance(items, list) or not all(type(a) is str for a in items):
            problems.append(f"{column}: not a JSON list of strings ({_show(raw)})")
            items = []
        lists[column] = tuple(items)
    after = tuple(d for d in deps if type(d) is int)
    if len(after) != len(deps):
        problems.append("after: a dependency that is not a job id")
    spec = JobSpec(**reader.fill(JobSpec, {"after": after, **lists}))
    raw_state = row["state"]
    try:
        state = JobState(raw_state)
    except ValueError:
        problems.append(f"state: unknown {_show(raw_state)}")
        state = JobState.LOST
    tokens = {}
    for key in TOKEN_KEYS:
        ok, value = _check(row[key], int, False)
        if not ok or value < 0:
            problems.append(f"{key}: unexpected {_show(row[key])}")
            value = 0
        tokens[key] = value
    values = reader.fill(Job, {"spec": spec, "state": state, "tokens": tokens,
                               "files": _files(row, problems)})
    job = Job(**values)
    if not problems:
        return job
    problem = f"{UNREADABLE}: {'; '.join(problems)}"
    job.reason = problem
    return Unreadable(job, problem, raw_state, row["runner_pid"])


def _files(row: sqlite3.Row, problems: list[str]) -> dict[str, str]:
    """The `files` column: NULL (not ended, or recorded before it existed) is none."""
    try:
        raw = row["files"]
    except IndexError:
        return {}
    if raw is None:
        return {}
    try:
        files = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        files = None
    if not isinstance(files, dict) or not all(
        type(k) is str and type(v) is str for k, v in files.items()
    ):
        problems.append(f"files: not a JSON object of strings ({_show(raw)})")
        return {}
    return files


@dataclass(frozen=True)
class Queued:
    """What the scheduler's plan needs of a queued job (store.queue()). `suspect`: one
    of these columns is not what the model declares, so the whole row must be read
    (and will be found damaged) before the job is acted on."""

    id: int
    batch_id: int | None
    not_before: float | None
    global_limit: int | None
    after: tuple[int, ...]
    suspect: bool
    account: str | None = None


def read_queued(row: sqlite3.Row, deps: tuple[Any, ...]) -> Queued:
    batch_ok, batch_id = _check(row["batch_id"], int, True)
    due_ok, not_before = _check(row["not_before"], float, True)
    limit_ok, global_limit = _check(row["global_limit"], int, True)
    account_ok, account = _check(row["account"], str, True)
    after = tuple(d for d in deps if type(d) is int)
    suspect = not (batch_ok and due_ok and limit_ok and account_ok) or len(after) != len(deps)
    return Queued(row["id"], batch_id, not_before, global_limit, after, suspect, account)


def spec_values(spec: JobSpec) -> list[Any]:
    """The values of `SPEC_COLUMNS` for `spec`: a tuple as a JSON list, a bool as 0/1."""
    values: list[Any] = []
    for column in SPEC_COLUMNS:
        value = getattr(spec, column)
        if isinstance(value, tuple):
            value = json.dumps(list(value))
        elif isinstance(value, bool):
            value = int(value)
        values.append(value)
    return values


def read_state(value: Any) -> JobState:
    """A state column value; an unknown one counts as `lost` (final, not a success)."""
    try:
        return JobState(value)
    except ValueError:
        return JobState.LOST
