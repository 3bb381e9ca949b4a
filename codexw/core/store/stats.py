"""`status --stats` from indexes alone: counts, token sums, duration quantiles, ranges.

Plain functions of the store, reached through `Store`'s methods of the same names and
imported on their first use (see files.py).
"""

from __future__ import annotations

import math
import sqlite3

from codexw.core.models import TOKEN_KEYS
from codexw.core.store import sql
from codexw.core.store.connection import Connection

_RAN = "started_at IS NOT NULL AND ended_at IS NOT NULL"


def stats_groups(
    store: Connection, project: str | None, job_type: str | None
) -> list[sqlite3.Row]:
    """Counts and token sums per (state, type, level), from the covering index."""
    columns = (
        "state, type, level, COUNT(*) AS n, MIN(queued_at) AS first, MAX(queued_at) AS last,"
        + ", ".join(f"SUM({k}) AS {k}" for k in TOKEN_KEYS)
    )
    where, params = sql.stats_where(project, job_type)
    # Grouping by project too lets SQLite walk jobs_stats in order without a sort.
    return store._exec(
        f"SELECT project, {columns} FROM jobs{where} GROUP BY project, state, type, level",
        params,
    ).fetchall()


def duration_quantiles(
    store: Connection, project: str | None, job_type: str | None, quantiles: tuple[float, ...]
) -> dict[str, tuple[int, list[float]]]:
    """Per level: (finished runs, the run duration at each quantile, nearest rank).

    Without a type filter each value is one step into the ordered duration index
    (no sort, no rows in Python); with one, the durations come from the covering
    index and are ranked here.
    """
    where, params = sql.stats_where(project, job_type, extra=_RAN)
    result: dict[str, tuple[int, list[float]]] = {}
    if job_type is not None:
        per_level: dict[str, list[float]] = {}
        for level, d in store._exec(
            f"SELECT level, ended_at - started_at FROM jobs{where}", params
        ).fetchall():
            per_level.setdefault(level, []).append(float(d))
        for level, values in sorted(per_level.items()):
            values.sort()
            n = len(values)
            result[level] = (n, [values[_rank(q, n)] for q in quantiles])
        return result
    counts = store._exec(
        f"SELECT level, COUNT(*) AS n FROM jobs{where} GROUP BY level", params
    ).fetchall()
    for row in counts:
        n = row["n"]
        lwhere, lparams = sql.stats_where(project, None, extra=_RAN, level=row["level"])
        values = []
        for q in quantiles:
            value = store._exec(
                f"SELECT ended_at - started_at AS d FROM jobs{lwhere}"
                " ORDER BY ended_at - started_at LIMIT 1 OFFSET ?",
                (*lparams, _rank(q, n)),
            ).fetchone()
            values.append(float(value["d"]))
        result[row["level"]] = (n, values)
    return result


def first_and_last(
    store: Connection, project: str | None, job_type: str | None
) -> tuple[sqlite3.Row | None, sqlite3.Row | None]:
    """The oldest and the newest job (by id) in the scope."""
    where, params = sql.stats_where(project, job_type)
    cols = "SELECT id, queued_at, state, task FROM jobs"
    oldest = store._exec(f"{cols}{where} ORDER BY id LIMIT 1", params).fetchone()
    newest = store._exec(f"{cols}{where} ORDER BY id DESC LIMIT 1", params).fetchone()
    return oldest, newest


def _rank(q: float, n: int) -> int:
    """Nearest-rank index of quantile `q` among `n` sorted values."""
    return min(n - 1, max(0, math.ceil(q * n) - 1))


def tokens_by_day(
    store: Connection, project: str | None, since: float
) -> list[tuple[int, int, int]]:
    """(UTC day number, input + cached, output + reasoning tokens) of jobs ended since
    `since`, from the covering index."""
    where, params = sql.stats_where(project, None, extra="ended_at >= ?")
    rows = store._exec(
        "SELECT CAST(ended_at / 86400 AS INTEGER) AS day,"
        " SUM(input_tokens + cached_input_tokens) AS tokens_in,"
        f" SUM(output_tokens + reasoning_output_tokens) AS tokens_out FROM jobs{where}"
        " GROUP BY day ORDER BY day",
        [*params, since],
    ).fetchall()
    return [(r["day"], r["tokens_in"] or 0, r["tokens_out"] or 0) for r in rows]
