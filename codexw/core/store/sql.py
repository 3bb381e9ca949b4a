"""SQL fragments shared by the store's modules: state filters and WHERE clauses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from codexw.core.models import ACTIVE_STATES, OPEN_STATES, JobState, sources

_ORDER = {state: n for n, state in enumerate(JobState)}


def state_in(states: Iterable[JobState], column: str = "state", negate: bool = False) -> str:
    """`state IN ('queued', 'starting')` (or `state = 'queued'`) from a set of states.

    The values come from the enum, never from input, so they are written as literals:
    the statement text (and with it the query plan) is fixed at import."""
    values = sorted(states, key=_ORDER.__getitem__)
    assert values and all(s.value.replace("_", "").isalpha() for s in values)
    if len(values) == 1:
        return f"{column} {'!=' if negate else '='} '{values[0].value}'"
    listed = ", ".join(f"'{s.value}'" for s in values)
    return f"{column} {'NOT IN' if negate else 'IN'} ({listed})"


# The state a job must be in for each move (models.TRANSITIONS), and the common sets.
FROM: dict[JobState, str] = {t: state_in(sources(t)) for t in JobState if sources(t)}
QUEUED = frozenset({JobState.QUEUED})
IS_QUEUED = state_in(QUEUED)
IS_ACTIVE = state_in(ACTIVE_STATES)
IS_OPEN = state_in(OPEN_STATES)
NOT_OPEN = state_in(OPEN_STATES, negate=True)  # also true of a damaged, unknown state


def where(extra: str | None = None, **equal: Any) -> tuple[str, list[Any]]:
    """` WHERE col = ? AND …` for the filters that are set (None means any)."""
    clauses = [f"{column} = ?" for column, value in equal.items() if value is not None]
    params = [value for value in equal.values() if value is not None]
    if extra:
        clauses.append(extra)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def stats_where(
    project: str | None, job_type: str | None, extra: str | None = None, level: str | None = None
) -> tuple[str, list[Any]]:
    return where(extra, project=project, level=level, type=job_type)


def key_filter(job_key: str | None) -> tuple[str, list[Any]]:
    """Restrict a write to the attempt with this key (None: the id alone decides)."""
    return (" AND job_key = ?", [job_key]) if job_key is not None else ("", [])
