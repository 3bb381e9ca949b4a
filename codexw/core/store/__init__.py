"""The registry: the only module that writes SQL.

SQLite in WAL mode with a busy timeout; every state change is one function and
one `BEGIN IMMEDIATE` transaction; a schema version with migrations from day one.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from codexw.core import notify, paths
from codexw.core.errors import NotFoundError, StoreError
from codexw.core.models import ACTIVE_STATES, TOKEN_KEYS, Job, JobSpec, JobState
from codexw.core.store.rows import Unreadable, read_job, read_state

BUSY_TIMEOUT_S = 60.0

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        project TEXT NOT NULL,
        source TEXT,
        max_parallel INTEGER,
        halt_on_failure INTEGER NOT NULL DEFAULT 0,
        halted_reason TEXT
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        task TEXT NOT NULL,
        level TEXT NOT NULL,
        type TEXT NOT NULL,
        model TEXT,
        sandbox TEXT NOT NULL,
        cwd TEXT NOT NULL,
        project TEXT NOT NULL,
        codex_bin TEXT NOT NULL,
        codex_args TEXT NOT NULL DEFAULT '[]',
        codex_home TEXT,
        template TEXT,
        timeout REAL,
        kill_grace REAL NOT NULL,
        retries INTEGER NOT NULL DEFAULT 0,
        retry_timeouts INTEGER NOT NULL DEFAULT 0,
        backoff_base REAL NOT NULL,
        backoff_max REAL NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        batch_id INTEGER REFERENCES batches(id),
        name TEXT,
        global_limit INTEGER,
        resume_thread TEXT,
        resume_of INTEGER,
        attempt INTEGER NOT NULL DEFAULT 1,
        retry_of INTEGER,
        queued_at REAL NOT NULL,
        not_before REAL,
        started_at REAL,
        ended_at REAL,
        claimed_by_pid INTEGER,
        claimed_by_start REAL,
        runner_pid INTEGER,
        runner_start REAL,
        codex_pgid INTEGER,
        exit_code INTEGER,
        reason TEXT,
        retryable INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        cached_input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_output_tokens INTEGER NOT NULL DEFAULT 0,
        thread_id TEXT,
        report_path TEXT,
        log_path TEXT,
        last_action TEXT,
        kill_requested INTEGER NOT NULL DEFAULT 0,
        host TEXT
    );
    CREATE TABLE job_deps (
        job_id INTEGER NOT NULL,
        dep_id INTEGER NOT NULL,
        PRIMARY KEY (job_id, dep_id)
    );
    CREATE INDEX jobs_by_state ON jobs(state, priority DESC, id);
    CREATE INDEX jobs_by_project ON jobs(project, id);
    CREATE INDEX jobs_by_batch ON jobs(batch_id, state);
    CREATE INDEX jobs_by_ended ON jobs(ended_at);
    CREATE INDEX jobs_by_retry_of ON jobs(retry_of);
    CREATE INDEX job_deps_by_dep ON job_deps(dep_id);
    """,
    # 2: `status --stats` from indexes alone (a covering index for the counts and token
    # sums, ordered durations per level for the median and p90 without a sort).
    """
    CREATE INDEX jobs_stats ON jobs(project, state, type, level, queued_at, started_at,
        ended_at, input_tokens, cached_input_tokens, output_tokens, reasoning_output_tokens);
    CREATE INDEX jobs_by_level_duration ON jobs(level, (ended_at - started_at))
        WHERE started_at IS NOT NULL AND ended_at IS NOT NULL;
    CREATE INDEX jobs_by_project_level_duration ON jobs(project, level, (ended_at - started_at))
        WHERE started_at IS NOT NULL AND ended_at IS NOT NULL;
    """,
    # 3: remote jobs (the Celery backend): where a job runs and its Celery task id; the
    # worker's name goes in the existing `host` column.
    """
    ALTER TABLE jobs ADD COLUMN backend TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE jobs ADD COLUMN broker_url TEXT;
    ALTER TABLE jobs ADD COLUMN queue TEXT;
    ALTER TABLE jobs ADD COLUMN celery_task_id TEXT;
    """,
    # 4: the PATH of the command that launched the job, so that codex (an npm script
    # run through `env node`) starts the same whoever fills the slot (cron, a runner).
    """
    ALTER TABLE jobs ADD COLUMN path_env TEXT;
    """,
    # 5: a random key per attempt (a runner proves the job is its own, beyond the id) and
    # the name of the file holding the launching command's environment (core.envfile).
    """
    ALTER TABLE jobs ADD COLUMN job_key TEXT;
    ALTER TABLE jobs ADD COLUMN env_key TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_ACTIVE = tuple(s.value for s in ACTIVE_STATES)
_SPEC_COLUMNS = ["task", "level", "type", "model", "sandbox", "cwd", "project", "codex_bin", "codex_args", "codex_home", "template", "timeout", "kill_grace", "retries", "retry_timeouts", "backoff_base", "backoff_max", "priority", "batch_id", "name", "global_limit", "resume_thread", "resume_of", "backend", "broker_url", "queue", "path_env", "env_key"]


@dataclass(frozen=True)
class Batch:
    id: int
    created_at: float
    project: str
    source: str | None
    max_parallel: int | None
    halt_on_failure: bool
    halted_reason: str | None


@dataclass(frozen=True)
class JobFiles:
    """What cleanup needs to know about a job's files (no task text, no spec)."""

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


class _Result:
    """The fetched rows of one statement, with the cursor's rowcount and lastrowid."""

    __slots__ = ("_rows", "rowcount", "lastrowid")

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


def _spec_values(spec: JobSpec) -> list[Any]:
    values = []
    for column in _SPEC_COLUMNS:
        value = getattr(spec, column)
        if column == "codex_args":
            value = json.dumps(list(value))
        elif column == "retry_timeouts":
            value = int(value)
        values.append(value)
    return values


class Store:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._in_txn = False
        self._dirty = False
        self._after_commit: list[Callable[[], None]] = []

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls) -> Store:
        try:
            directory = paths.ensure_state_dir()
        except OSError as exc:
            raise StoreError(
                f"cannot create or enter the state directory {paths.state_dir()}: {exc.strerror}",
                "make it writable or point CODEXW_STATE_DIR somewhere else",
            ) from None
        path = directory / "codexw.db"
        new = not path.exists()
        if new:
            try:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the registry {path}: {exc.strerror}",
                    "make the state directory writable or set CODEXW_STATE_DIR",
                ) from None
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":  # pragma: no cover - only on filesystems without WAL
                raise StoreError(f"{path}: the registry cannot use WAL mode ({mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            store = cls(conn)
            store._migrate(path)
        except sqlite3.DatabaseError as exc:
            raise _store_error(path, exc) from None
        return store

    def _migrate(self, path: os.PathLike[str]) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: registry schema {version} is newer than this codexw ({SCHEMA_VERSION})",
                "upgrade codexw",
            )
        with self.transaction(notify_waiters=False):
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, notify_waiters: bool = True) -> Iterator[Store]:
        """One IMMEDIATE transaction; waiters are woken after a commit that wrote."""
        if self._in_txn:
            yield self
            return
        # Waiters are woken only by a commit that changed rows: a transaction that
        # found nothing to do woke every `wait` and `status --watch`, each of which
        # then read in a transaction of its own and woke the others (100% CPU idle).
        changes_before = self.conn.total_changes
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise _store_error(paths.db_path(), exc) from None
        self._in_txn = True
        try:
            yield self
        except BaseException:
            self._rollback()
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback()
                raise _store_error(paths.db_path(), exc) from None
        finally:
            self._in_txn = False
            callbacks, self._after_commit = self._after_commit, []
        if notify_waiters and self.conn.total_changes != changes_before:
            notify.broadcast()
        for callback in callbacks:  # only reached after a successful COMMIT
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the current transaction has committed (never on rollback):
        for files that may go only when the registry no longer needs them."""
        self._after_commit.append(callback)

    @contextmanager
    def snapshot(self) -> Iterator[Store]:
        """A read transaction: one consistent view, no write lock, nobody woken.

        For the cheap look that decides whether a write transaction is needed at all
        (inside a transaction already, it is that transaction)."""
        if self._in_txn or self.conn.in_transaction:
            yield self
            return
        try:
            self.conn.execute("BEGIN DEFERRED")
        except sqlite3.DatabaseError as exc:
            raise _store_error(paths.db_path(), exc) from None
        try:
            yield self  # a write in here fails loudly: BEGIN IMMEDIATE cannot nest
        finally:
            self._rollback()  # nothing was written: ending it is all that is needed

    def _rollback(self) -> None:
        """Roll back what is still open: after a failed COMMIT (disk full, I/O error)
        SQLite may already have rolled back, and a second ROLLBACK would raise."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> _Result:
        """Run one statement and fetch its rows at once: a corrupt page can surface on
        any row, and each such error must become a StoreError, not a traceback."""
        try:
            cur = self.conn.execute(sql, tuple(params))
            return _Result(cur.fetchall(), cur.rowcount, cur.lastrowid)
        except sqlite3.DatabaseError as exc:
            raise _store_error(paths.db_path(), exc) from None

    # -- batches -------------------------------------------------------------------------

    def insert_batch(
        self, project: str, source: str | None, max_parallel: int | None, halt_on_failure: bool
    ) -> int:
        cur = self._exec(
            "INSERT INTO batches (created_at, project, source, max_parallel, halt_on_failure)"
            " VALUES (?, ?, ?, ?, ?)",
            (time.time(), project, source, max_parallel, int(halt_on_failure)),
        )
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def get_batch(self, batch_id: int) -> Batch:
        row = self._exec("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no batch {batch_id}", "see `codexw status --all`")
        return Batch(
            id=row["id"],
            created_at=row["created_at"],
            project=row["project"],
            source=row["source"],
            max_parallel=row["max_parallel"],
            halt_on_failure=bool(row["halt_on_failure"]),
            halted_reason=row["halted_reason"],
        )

    def batch_limits(self) -> dict[int, int | None]:
        rows = self._exec(
            "SELECT DISTINCT b.id, b.max_parallel, b.halted_reason FROM batches b"
            " JOIN jobs j ON j.batch_id = b.id WHERE j.state = 'queued'"
        ).fetchall()
        return {r["id"]: r["max_parallel"] for r in rows}

    def halted_batches(self) -> dict[int, str]:
        rows = self._exec(
            "SELECT DISTINCT b.id, b.halted_reason FROM batches b JOIN jobs j ON j.batch_id = b.id"
            " WHERE j.state = 'queued' AND b.halted_reason IS NOT NULL"
        ).fetchall()
        return {r["id"]: r["halted_reason"] for r in rows}

    def halt_batch(self, batch_id: int, reason: str) -> None:
        self._exec(
            "UPDATE batches SET halted_reason = ? WHERE id = ? AND halt_on_failure = 1"
            " AND halted_reason IS NULL",
            (reason, batch_id),
        )

    # -- jobs: writes --------------------------------------------------------------------

    def insert_job(
        self,
        spec: JobSpec,
        now: float,
        attempt: int = 1,
        retry_of: int | None = None,
        not_before: float | None = None,
    ) -> int:
        columns = ["state", "queued_at", "not_before", "attempt", "retry_of", "job_key",
                   *_SPEC_COLUMNS]
        values = ["queued", now, not_before, attempt, retry_of, os.urandom(8).hex(),
                  *_spec_values(spec)]
        cur = self._exec(
            f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(values))})",
            values,
        )
        job_id = int(cur.lastrowid)  # type: ignore[arg-type]
        for dep in spec.after:
            self.add_dep(job_id, dep)
        return job_id

    def set_paths(self, job_id: int, report_path: str | None, log_path: str | None) -> None:
        """Record where the TEMP report and the log are; never overwrites a known path."""
        self._exec(
            "UPDATE jobs SET report_path = COALESCE(report_path, ?),"
            " log_path = COALESCE(log_path, ?) WHERE id = ?",
            (report_path, log_path, job_id),
        )

    def mark_starting(self, job_id: int, claimer_pid: int, claimer_start: float | None) -> bool:
        cur = self._exec(
            "UPDATE jobs SET state = 'starting', claimed_by_pid = ?, claimed_by_start = ?"
            " WHERE id = ? AND state = 'queued'",
            (claimer_pid, claimer_start, job_id),
        )
        return cur.rowcount == 1

    def adopt(
        self, job_id: int, pid: int, start: float | None, job_key: str | None = None
    ) -> bool:
        """The runner records itself; False if the job is no longer waiting for it (or,
        given `job_key`, is not the job the runner was started for)."""
        key_sql, key_params = _key_filter(job_key)
        cur = self._exec(
            "UPDATE jobs SET runner_pid = ?, runner_start = ? WHERE id = ? AND state = 'starting'"
            " AND (runner_pid IS NULL OR runner_pid = ?)" + key_sql,
            (pid, start, job_id, pid, *key_params),
        )
        return cur.rowcount == 1

    def release(self, job_id: int, pid: int) -> bool:
        """A runner gives back a job it adopted but has not started."""
        cur = self._exec(
            "UPDATE jobs SET state = 'queued', runner_pid = NULL, runner_start = NULL,"
            " claimed_by_pid = NULL, claimed_by_start = NULL"
            " WHERE id = ? AND state = 'starting' AND runner_pid = ?",
            (job_id, pid),
        )
        return cur.rowcount == 1

    def unclaim(self, job_id: int) -> bool:
        """A claimed job whose claimer died before spawning a runner goes back to the queue."""
        cur = self._exec(
            "UPDATE jobs SET state = 'queued', claimed_by_pid = NULL, claimed_by_start = NULL"
            " WHERE id = ? AND state = 'starting' AND runner_pid IS NULL",
            (job_id,),
        )
        return cur.rowcount == 1

    def mark_running(self, job_id: int, runner_pid: int, pgid: int, started_at: float) -> bool:
        cur = self._exec(
            "UPDATE jobs SET state = 'running', codex_pgid = ?, started_at = ?"
            " WHERE id = ? AND state = 'starting' AND runner_pid = ?",
            (pgid, started_at, job_id, runner_pid),
        )
        return cur.rowcount == 1

    def update_progress(
        self,
        job_id: int,
        last_action: str | None,
        tokens: dict[str, int],
        thread_id: str | None,
        job_key: str | None = None,
    ) -> None:
        key_sql, key_params = _key_filter(job_key)
        self._exec(
            "UPDATE jobs SET last_action = ?, thread_id = COALESCE(?, thread_id),"
            + ", ".join(f"{k} = ?" for k in TOKEN_KEYS)
            + " WHERE id = ?" + key_sql,
            (last_action, thread_id, *(tokens.get(k, 0) for k in TOKEN_KEYS), job_id,
             *key_params),
        )

    def finish(
        self,
        job_id: int,
        state: JobState,
        *,
        ended_at: float,
        exit_code: int | None = None,
        reason: str | None = None,
        retryable: bool = False,
        tokens: dict[str, int] | None = None,
        thread_id: str | None = None,
        report_path: str | None = None,
        last_action: str | None = None,
        only_runner_pid: int | None = None,
        expect_state: JobState | None = None,
        job_key: str | None = None,
    ) -> bool:
        """Move an active or queued job to a final state, once. False if already final,
        or (with `expect_state`/`only_runner_pid`) if it is no longer what the caller saw:
        a job read as queued that a runner has started meanwhile must not be cancelled."""
        assert state.is_final
        sql = (
            "UPDATE jobs SET state = ?, ended_at = ?, exit_code = ?, reason = ?, retryable = ?,"
            " thread_id = COALESCE(?, thread_id), report_path = COALESCE(?, report_path),"
            " last_action = COALESCE(?, last_action)"
        )
        params: list[Any] = [
            state.value,
            ended_at,
            exit_code,
            reason,
            int(retryable),
            thread_id,
            report_path,
            last_action,
        ]
        if tokens is not None:
            sql += "".join(f", {k} = ?" for k in TOKEN_KEYS)
            params.extend(tokens.get(k, 0) for k in TOKEN_KEYS)
        sql += " WHERE id = ? AND state IN ('queued', 'starting', 'running')"
        params.append(job_id)
        if only_runner_pid is not None:
            sql += " AND runner_pid = ?"
            params.append(only_runner_pid)
        if expect_state is not None:
            sql += " AND state = ?"
            params.append(expect_state.value)
        key_sql, key_params = _key_filter(job_key)
        return self._exec(sql + key_sql, [*params, *key_params]).rowcount == 1

    def set_remote(self, job_id: int, task_id: str | None = None, host: str | None = None) -> None:
        """A remote job's Celery task id (set before it is sent) and worker (once known)."""
        self._exec(
            "UPDATE jobs SET celery_task_id = COALESCE(?, celery_task_id),"
            " host = COALESCE(?, host) WHERE id = ?",
            (task_id, host, job_id),
        )

    def set_report_path(self, job_id: int, report_path: str | None) -> None:
        self._exec("UPDATE jobs SET report_path = ? WHERE id = ?", (report_path, job_id))

    def end_unreadable(self, damaged: Unreadable, now: float) -> bool:
        """End as `lost` a job whose row cannot be read, if it is still as it was read.

        Not retried: a retry would copy a spec that cannot be trusted."""
        cur = self._exec(
            "UPDATE jobs SET state = 'lost', ended_at = ?, reason = ?, retryable = 0"
            " WHERE id = ? AND state IS ? AND runner_pid IS ?",
            (now, damaged.problem, damaged.job.id, damaged.raw_state, damaged.raw_runner_pid),
        )
        return cur.rowcount == 1

    def request_kill(self, job_id: int) -> None:
        self._exec("UPDATE jobs SET kill_requested = 1 WHERE id = ?", (job_id,))

    def add_dep(self, job_id: int, dep_id: int) -> None:
        self._exec("INSERT OR IGNORE INTO job_deps VALUES (?, ?)", (job_id, dep_id))

    def clear_halt(self, batch_id: int) -> None:
        self._exec("UPDATE batches SET halted_reason = NULL WHERE id = ?", (batch_id,))

    def repoint_deps(self, old_id: int, new_id: int) -> None:
        """Jobs waiting on `old_id` now wait on its retry `new_id`."""
        self._exec("UPDATE OR IGNORE job_deps SET dep_id = ? WHERE dep_id = ?", (new_id, old_id))

    # -- jobs: reads ---------------------------------------------------------------------

    def _deps_of(self, job_ids: list[int]) -> dict[int, tuple[int, ...]]:
        deps: dict[int, list[int]] = {}
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            rows = self._exec(
                f"SELECT job_id, dep_id FROM job_deps WHERE job_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for row in rows:
                deps.setdefault(row["job_id"], []).append(row["dep_id"])
        # A damaged dep_id (text) must not break the sort: rows.read_job names it.
        return {k: tuple(sorted(v, key=_id_order)) for k, v in deps.items()}

    def _jobs(
        self, sql: str, params: Iterable[Any] = (), damaged: list[Unreadable] | None = None
    ) -> list[Job]:
        """The jobs of `sql`'s rows, read one by one: a damaged row never fails the list.

        With `damaged`, rows that cannot be read go there (for a caller that acts on
        them) instead of into the list; without it they are listed as well as they
        can be read, their reason naming what could not be."""
        rows = self._exec(sql, params).fetchall()
        deps = self._deps_of([r["id"] for r in rows]) if rows else {}
        jobs = []
        for row in rows:
            job = read_job(row, deps.get(row["id"], ()))
            if isinstance(job, Unreadable):
                if damaged is not None:
                    damaged.append(job)
                    continue
                job = job.job
            jobs.append(job)
        return jobs

    def get_job(self, job_id: int) -> Job:
        jobs = self._jobs("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not jobs:
            raise NotFoundError(f"no job {job_id}", "see `codexw status --all`")
        return jobs[0]

    def find_job(self, job_id: int) -> Job | None:
        jobs = self._jobs("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return jobs[0] if jobs else None

    def get_jobs(self, job_ids: Iterable[int]) -> list[Job]:
        ids = list(job_ids)
        if not ids:
            return []
        found = {
            j.id: j
            for j in self._jobs(
                f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids
            )
        }
        return [found[i] for i in ids if i in found]

    def list_jobs(
        self,
        *,
        project: str | None = None,
        job_type: str | None = None,
        state: str | None = None,
        batch_id: int | None = None,
        limit: int | None = 10,
    ) -> list[Job]:
        where, params = _where(project=project, type=job_type, state=state, batch_id=batch_id)
        sql = "SELECT * FROM jobs" + where + " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._jobs(sql, params)

    def active_jobs(self, damaged: list[Unreadable] | None = None) -> list[Job]:
        return self._jobs(
            f"SELECT * FROM jobs WHERE state IN ({','.join('?' * len(_ACTIVE))})",
            _ACTIVE,
            damaged,
        )

    def active_counts(self) -> tuple[int, dict[int, int]]:
        """(all active jobs, active jobs per batch)."""
        rows = self._exec(
            "SELECT batch_id, COUNT(*) AS n FROM jobs"
            f" WHERE state IN ({','.join('?' * len(_ACTIVE))}) GROUP BY batch_id",
            _ACTIVE,
        ).fetchall()
        per_batch = {r["batch_id"]: r["n"] for r in rows if r["batch_id"] is not None}
        return sum(r["n"] for r in rows), per_batch

    def queued_jobs(self, damaged: list[Unreadable] | None = None) -> list[Job]:
        """Queued jobs in start order: priority first, then oldest."""
        return self._jobs(
            "SELECT * FROM jobs WHERE state = 'queued' ORDER BY priority DESC, id ASC",
            damaged=damaged,
        )

    def states_of(self, job_ids: Iterable[int]) -> dict[int, JobState]:
        ids = list(job_ids)
        if not ids:
            return {}
        rows = self._exec(
            f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids
        ).fetchall()
        return {r["id"]: read_state(r["state"]) for r in rows}

    def batch_job_ids(self, batch_id: int) -> list[int]:
        rows = self._exec(
            "SELECT id FROM jobs WHERE batch_id = ? ORDER BY id", (batch_id,)
        ).fetchall()
        return [r["id"] for r in rows]

    def latest_attempt(self, job_id: int) -> int:
        """Follow retry links forward to the newest attempt of `job_id`."""
        current = job_id
        while True:
            row = self._exec(
                "SELECT id FROM jobs WHERE retry_of = ? ORDER BY id DESC LIMIT 1", (current,)
            ).fetchone()
            if row is None:
                return current
            current = row["id"]

    def batch_latest(self, batch_id: int) -> dict[int, Job]:
        """For each task of a batch (its first attempt's id), its newest attempt; one query."""
        jobs = self._jobs("SELECT * FROM jobs WHERE batch_id = ? ORDER BY id", (batch_id,))
        newest_retry = {j.retry_of: j for j in jobs if j.retry_of is not None}
        latest = {}
        for job in jobs:
            if job.retry_of is None:
                current = job
                while current.id in newest_retry:
                    current = newest_retry[current.id]
                latest[job.id] = current
        return latest

    def attempt_chain(self, job_id: int) -> list[Job]:
        """Every attempt linked to `job_id` by retries, oldest first."""
        root = job_id
        while True:
            row = self._exec("SELECT retry_of FROM jobs WHERE id = ?", (root,)).fetchone()
            if row is None or row["retry_of"] is None:
                break
            root = row["retry_of"]
        return self._jobs(
            "WITH RECURSIVE chain(id) AS (SELECT ? UNION ALL"
            " SELECT j.id FROM jobs j JOIN chain c ON j.retry_of = c.id)"
            " SELECT * FROM jobs WHERE id IN (SELECT id FROM chain) ORDER BY id",
            (root,),
        )

    # -- cleanup and stats ---------------------------------------------------------------

    def projects(self) -> list[str]:
        """Every project the registry has jobs of."""
        rows = self._exec("SELECT DISTINCT project FROM jobs ORDER BY project").fetchall()
        return [r["project"] for r in rows]

    def has_jobs(self, project: str) -> bool:
        row = self._exec("SELECT 1 FROM jobs WHERE project = ? LIMIT 1", (project,)).fetchone()
        return row is not None

    def job_files(self, project: str) -> list[JobFiles]:
        rows = self._exec(
            "SELECT id, state, type, project, queued_at, ended_at, report_path, log_path,"
            " runner_pid, runner_start FROM jobs WHERE project = ? ORDER BY id",
            (project,),
        ).fetchall()
        return [
            JobFiles(
                id=r["id"], state=read_state(r["state"]), type=r["type"], project=r["project"],
                queued_at=r["queued_at"], ended_at=r["ended_at"], report_path=r["report_path"],
                log_path=r["log_path"], runner_pid=r["runner_pid"], runner_start=r["runner_start"],
            )
            for r in rows
        ]

    def job_ids(self, project: str | None = None, job_type: str | None = None) -> list[int]:
        where, params = _stats_where(project, job_type)
        return [r[0] for r in self._exec(f"SELECT id FROM jobs{where}", params).fetchall()]

    def move_report(self, job_id: int, old: str | None, new: str | None) -> bool:
        """Point a finished job's report elsewhere (archived, compressed, deleted: None),
        only if it still points where the caller saw it."""
        cur = self._exec(
            "UPDATE jobs SET report_path = ? WHERE id = ? AND report_path IS ?"
            " AND state NOT IN ('queued', 'starting', 'running')",
            (new, job_id, old),
        )
        return cur.rowcount == 1

    def move_log(self, job_id: int, old: str | None, new: str | None) -> bool:
        cur = self._exec(
            "UPDATE jobs SET log_path = ? WHERE id = ? AND log_path IS ?"
            " AND state NOT IN ('queued', 'starting', 'running')",
            (new, job_id, old),
        )
        return cur.rowcount == 1

    def prune_finished(self, project: str) -> list[int]:
        """Delete the finished jobs of `project` (a directory that is gone); returns their ids."""
        final = "state NOT IN ('queued', 'starting', 'running')"
        ids = [
            r[0]
            for r in self._exec(
                f"SELECT id FROM jobs WHERE project = ? AND {final}", (project,)
            ).fetchall()
        ]
        if not ids:
            return []
        self._exec(
            f"DELETE FROM job_deps WHERE job_id IN (SELECT id FROM jobs WHERE project = ? AND {final})",
            (project,),
        )
        self._exec(f"DELETE FROM jobs WHERE project = ? AND {final}", (project,))
        self._exec(
            "DELETE FROM batches WHERE project = ? AND id NOT IN"
            " (SELECT batch_id FROM jobs WHERE batch_id IS NOT NULL)",
            (project,),
        )
        return ids

    def stats_groups(self, project: str | None, job_type: str | None) -> list[sqlite3.Row]:
        """Counts and token sums per (state, type, level), from the covering index."""
        columns = (
            "state, type, level, COUNT(*) AS n, MIN(queued_at) AS first, MAX(queued_at) AS last,"
            + ", ".join(f"SUM({k}) AS {k}" for k in TOKEN_KEYS)
        )
        where, params = _stats_where(project, job_type)
        # Grouping by project too lets SQLite walk jobs_stats in order without a sort.
        return self._exec(
            f"SELECT project, {columns} FROM jobs{where} GROUP BY project, state, type, level",
            params,
        ).fetchall()

    def duration_quantiles(
        self, project: str | None, job_type: str | None, quantiles: tuple[float, ...]
    ) -> dict[str, tuple[int, list[float]]]:
        """Per level: (finished runs, the run duration at each quantile, nearest rank).

        Without a type filter each value is one step into the ordered duration index
        (no sort, no rows in Python); with one, the durations come from the covering
        index and are ranked here.
        """
        ran = "started_at IS NOT NULL AND ended_at IS NOT NULL"
        where, params = _stats_where(project, job_type, extra=ran)
        result: dict[str, tuple[int, list[float]]] = {}
        if job_type is not None:
            per_level: dict[str, list[float]] = {}
            for level, d in self._exec(
                f"SELECT level, ended_at - started_at FROM jobs{where}", params
            ).fetchall():
                per_level.setdefault(level, []).append(float(d))
            for level, values in sorted(per_level.items()):
                values.sort()
                n = len(values)
                result[level] = (n, [values[_rank(q, n)] for q in quantiles])
            return result
        counts = self._exec(
            f"SELECT level, COUNT(*) AS n FROM jobs{where} GROUP BY level", params
        ).fetchall()
        for row in counts:
            n = row["n"]
            lwhere, lparams = _stats_where(project, None, extra=ran, level=row["level"])
            values = []
            for q in quantiles:
                value = self._exec(
                    f"SELECT ended_at - started_at AS d FROM jobs{lwhere}"
                    " ORDER BY ended_at - started_at LIMIT 1 OFFSET ?",
                    (*lparams, _rank(q, n)),
                ).fetchone()
                values.append(float(value["d"]))
            result[row["level"]] = (n, values)
        return result

    def first_and_last(
        self, project: str | None, job_type: str | None
    ) -> tuple[sqlite3.Row | None, sqlite3.Row | None]:
        """The oldest and the newest job (by id) in the scope."""
        where, params = _stats_where(project, job_type)
        cols = "SELECT id, queued_at, state, task FROM jobs"
        oldest = self._exec(f"{cols}{where} ORDER BY id LIMIT 1", params).fetchone()
        newest = self._exec(f"{cols}{where} ORDER BY id DESC LIMIT 1", params).fetchone()
        return oldest, newest

    def owns(self, job_id: int, job_key: str | None) -> bool:
        """Whether the registry's job `job_id` is the attempt with this key (a registry
        made anew, or another state dir, reuses ids)."""
        row = self._exec(
            "SELECT 1 FROM jobs WHERE id = ? AND job_key IS ?", (job_id, job_key)
        ).fetchone()
        return row is not None

    def env_key_in_use(self, env_key: str) -> bool:
        """Whether an open job still needs this saved launch environment."""
        row = self._exec(
            "SELECT 1 FROM jobs WHERE env_key = ? AND state IN ('queued', 'starting', 'running')"
            " LIMIT 1",
            (env_key,),
        ).fetchone()
        return row is not None

    def next_due(self, after: float) -> float | None:
        """When the next queued job's backoff runs out, if later than `after`.

        Jobs already due are not reported: they start when a slot frees, and
        reporting them would make callers spin."""
        row = self._exec(
            "SELECT MIN(not_before) AS t FROM jobs WHERE state = 'queued' AND not_before > ?",
            (after,),
        ).fetchone()
        return row["t"]


def _key_filter(job_key: str | None) -> tuple[str, list[Any]]:
    """Restrict a write to the attempt with this key (None: the id alone decides)."""
    return (" AND job_key = ?", [job_key]) if job_key is not None else ("", [])


def _id_order(value: Any) -> tuple[int, Any]:
    return (0, value) if type(value) is int else (1, repr(value))


def _rank(q: float, n: int) -> int:
    """Nearest-rank index of quantile `q` among `n` sorted values."""
    return min(n - 1, max(0, math.ceil(q * n) - 1))


def _where(extra: str | None = None, **equal: Any) -> tuple[str, list[Any]]:
    """` WHERE col = ? AND …` for the filters that are set (None means any)."""
    where = [f"{column} = ?" for column, value in equal.items() if value is not None]
    params = [value for value in equal.values() if value is not None]
    if extra:
        where.append(extra)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _stats_where(
    project: str | None, job_type: str | None, extra: str | None = None, level: str | None = None
) -> tuple[str, list[Any]]:
    return _where(extra, project=project, level=level, type=job_type)


def _store_error(path: os.PathLike[str] | str, exc: sqlite3.DatabaseError) -> StoreError:
    text = str(exc)
    if "not a database" in text or "malformed" in text or "Could not decode" in text:
        return StoreError(
            f"the registry {path} is corrupt ({text})",
            f"move it aside (mv {path} {path}.corrupt) and codexw starts a new one;"
            " reports under .codexw/ are untouched",
        )
    if "readonly" in text or "unable to open" in text:
        return StoreError(
            f"cannot write the registry {path} ({text})",
            "make the state directory writable or set CODEXW_STATE_DIR",
        )
    if "disk" in text and ("full" in text or _disk_full(path)):
        return StoreError(
            f"no space left for the registry {path}",
            f"free some disk space (df -h {os.path.dirname(path)})",
        )
    if "disk I/O error" in text:
        return StoreError(
            f"cannot read or write the registry {path} (disk I/O error)",
            "check that its disk is healthy, not full and writable",
        )
    return StoreError(f"registry error in {path}: {text}")


def _disk_full(path: os.PathLike[str] | str) -> bool:
    """SQLite reports a full disk under its shared-memory file as a mere I/O error."""
    try:
        return os.statvfs(os.path.dirname(path)).f_bavail == 0
    except OSError:
        return False
