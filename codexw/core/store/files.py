"""What cleanup needs: each job's files, and moving or forgetting them once it ended.

Plain functions of the store, reached through `Store`'s methods of the same names and
imported on their first use: launching or running a job never loads them. Every write
here is limited to jobs that are no longer open (sql.NOT_OPEN): the files of a queued
or running job are never repointed or forgotten.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from codexw.core import paths
from codexw.core.models import JobState
from codexw.core.store import sql
from codexw.core.store.connection import Connection, store_error
from codexw.core.store.rows import read_state


class JobFiles(NamedTuple):
    """What cleanup needs to know about a job's files (no task text, no spec). A named
    tuple: cleanup reads one for every job of a project at once."""

    id: int
    state: JobState
    type: str
    project: str
    queued_at: float
    ended_at: float | None
    report_path: str | None
    log_path: str | None
    runner_pid: int | None
    runner_start: float | None


_STATES = {state.value: state for state in JobState}


def job_files(store: Connection, project: str) -> list[JobFiles]:
    # Plain tuples and a dict for the state: cleanup reads every job of a project, and
    # sqlite3.Row lookups by name and the JobState call cost more than the query.
    try:
        cur = store.conn.cursor()
        cur.row_factory = None
        rows = cur.execute(
            "SELECT id, state, type, project, queued_at, ended_at, report_path, log_path,"
            " runner_pid, runner_start FROM jobs WHERE project = ? ORDER BY id",
            (project,),
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise store_error(paths.db_path(), exc) from None
    states = _STATES
    new = JobFiles._make
    return [
        new((r[0], states.get(r[1]) or read_state(r[1]), *r[2:]))
        for r in rows
    ]


def move_report(store: Connection, job_id: int, old: str | None, new: str | None) -> bool:
    """Point a finished job's report elsewhere (archived, compressed, deleted: None),
    only if it still points where the caller saw it."""
    cur = store._exec(
        "UPDATE jobs SET report_path = ? WHERE id = ? AND report_path IS ?"
        f" AND {sql.NOT_OPEN}",
        (new, job_id, old),
    )
    return cur.rowcount == 1


def move_log(store: Connection, job_id: int, old: str | None, new: str | None) -> bool:
    cur = store._exec(
        f"UPDATE jobs SET log_path = ? WHERE id = ? AND log_path IS ? AND {sql.NOT_OPEN}",
        (new, job_id, old),
    )
    return cur.rowcount == 1


_MOVED_COLUMNS = ("report_path", "log_path")


def move_many(
    store: Connection, column: str, moves: list[tuple[int, str | None, str | None]]
) -> set[int]:
    """`move_report` (column report_path) or `move_log` (log_path) for many jobs in one
    statement: each (job id, old, new) moves only if the job still points at `old` and
    is no longer open. Returns the ids that did not move (their record changed)."""
    if column not in _MOVED_COLUMNS:
        raise ValueError(f"not a file column: {column}")
    if not moves:
        return set()
    try:
        cur = store.conn.executemany(
            f"UPDATE jobs SET {column} = ? WHERE id = ? AND {column} IS ? AND {sql.NOT_OPEN}",
            [(new, job_id, old) for job_id, old, new in moves],
        )
        if cur.rowcount == len(moves):
            return set()
        # Some did not move (rare): those whose row does not point at the new place.
        wanted = {job_id: new for job_id, _old, new in moves}
        placed: dict[int, str | None] = {}
        ids = list(wanted)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for job_id, where in store.conn.execute(
                f"SELECT id, {column} FROM jobs WHERE id IN ({marks})", chunk
            ):
                placed[job_id] = where
    except sqlite3.DatabaseError as exc:
        raise store_error(paths.db_path(), exc) from None
    return {job_id for job_id, new in wanted.items() if placed.get(job_id, ...) != new}


def prune_finished(store: Connection, project: str) -> list[int]:
    """Delete the finished jobs of `project` (a directory that is gone); returns their ids."""
    finished = f"SELECT id FROM jobs WHERE project = ? AND {sql.NOT_OPEN}"
    ids = [r[0] for r in store._exec(finished, (project,)).fetchall()]
    if not ids:
        return []
    store._exec(f"DELETE FROM job_deps WHERE job_id IN ({finished})", (project,))
    store._exec(f"DELETE FROM jobs WHERE project = ? AND {sql.NOT_OPEN}", (project,))
    store._exec(
        "DELETE FROM batches WHERE project = ? AND id NOT IN"
        " (SELECT batch_id FROM jobs WHERE batch_id IS NOT NULL)",
        (project,),
    )
    return ids
