"""Writing jobs: inserting them and every change of state.

Each change is one conditional UPDATE whose `WHERE state ...` comes from
models.TRANSITIONS (sql.FROM): it changes the row only if the job is still where the
caller saw it, and its rowcount says who won.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from codexw.core.models import TOKEN_KEYS, JobSpec, JobState
from codexw.core.store import sql
from codexw.core.store.connection import Connection
from codexw.core.store.rows import SPEC_COLUMNS, Unreadable, spec_values

_INSERT_COLUMNS = ("state", "queued_at", "not_before", "attempt", "retry_of", "job_key",
                   "rate_limited", *SPEC_COLUMNS)
_INSERT = (f"INSERT INTO jobs ({', '.join(_INSERT_COLUMNS)})"
           f" VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})")


class JobWrites(Connection):
    def insert_job(
        self,
        spec: JobSpec,
        now: float,
        attempt: int = 1,
        retry_of: int | None = None,
        not_before: float | None = None,
        rate_limited: int = 0,
    ) -> int:
        values = [JobState.QUEUED.value, now, not_before, attempt, retry_of, os.urandom(8).hex(),
                  rate_limited, *spec_values(spec)]
        cur = self._exec(_INSERT, values)
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
            f"UPDATE jobs SET state = '{JobState.STARTING.value}', claimed_by_pid = ?,"
            f" claimed_by_start = ?, claimed_at = ? WHERE id = ? AND {sql.FROM[JobState.STARTING]}",
            (claimer_pid, claimer_start, time.time(), job_id),
        )
        return cur.rowcount == 1

    def adopt(
        self, job_id: int, pid: int, start: float | None, job_key: str | None = None
    ) -> bool:
        """The runner records itself; False if the job is no longer waiting for it (or,
        given `job_key`, is not the job the runner was started for)."""
        key_sql, key_params = sql.key_filter(job_key)
        cur = self._exec(
            "UPDATE jobs SET runner_pid = ?, runner_start = ? WHERE id = ?"
            f" AND state = '{JobState.STARTING.value}'"
            " AND (runner_pid IS NULL OR runner_pid = ?)" + key_sql,
            (pid, start, job_id, pid, *key_params),
        )
        return cur.rowcount == 1

    def release(self, job_id: int, pid: int) -> bool:
        """A runner gives back a job it adopted but has not started."""
        cur = self._exec(
            f"UPDATE jobs SET state = '{JobState.QUEUED.value}', runner_pid = NULL,"
            " runner_start = NULL, claimed_by_pid = NULL, claimed_by_start = NULL"
            f" WHERE id = ? AND {sql.FROM[JobState.QUEUED]} AND runner_pid = ?",
            (job_id, pid),
        )
        return cur.rowcount == 1

    def unclaim(self, job_id: int) -> bool:
        """A claimed job whose claimer died before spawning a runner goes back to the queue."""
        cur = self._exec(
            f"UPDATE jobs SET state = '{JobState.QUEUED.value}', claimed_by_pid = NULL,"
            " claimed_by_start = NULL"
            f" WHERE id = ? AND {sql.FROM[JobState.QUEUED]} AND runner_pid IS NULL",
            (job_id,),
        )
        return cur.rowcount == 1

    def mark_running(self, job_id: int, runner_pid: int, pgid: int, started_at: float,
                     codex_exec: str | None = None) -> bool:
        cur = self._exec(
            f"UPDATE jobs SET state = '{JobState.RUNNING.value}', codex_pgid = ?, started_at = ?,"
            " codex_exec = ?"
            f" WHERE id = ? AND {sql.FROM[JobState.RUNNING]} AND runner_pid = ?",
            (pgid, started_at, codex_exec, job_id, runner_pid),
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
        key_sql, key_params = sql.key_filter(job_key)
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
        files: dict[str, str] | None = None,
        only_runner_pid: int | None = None,
        expect_state: JobState | None = None,
        job_key: str | None = None,
    ) -> bool:
        """Move an active or queued job to a final state, once. False if already final,
        or (with `expect_state`/`only_runner_pid`) if it is no longer what the caller saw:
        a job read as queued that a runner has started meanwhile must not be cancelled."""
        assert state.is_final
        statement = (
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
            statement += "".join(f", {k} = ?" for k in TOKEN_KEYS)
            params.extend(tokens.get(k, 0) for k in TOKEN_KEYS)
        if files is not None:
            statement += ", files = ?"
            params.append(json.dumps(files))  # ASCII: a lone surrogate (odd name) stays storable
        statement += f" WHERE id = ? AND {sql.FROM[state]}"
        params.append(job_id)
        if only_runner_pid is not None:
            statement += " AND runner_pid = ?"
            params.append(only_runner_pid)
        if expect_state is not None:
            statement += " AND state = ?"
            params.append(expect_state.value)
        key_sql, key_params = sql.key_filter(job_key)
        return self._exec(statement + key_sql, [*params, *key_params]).rowcount == 1

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

        Not retried: a retry would copy a spec that cannot be trusted. The state to
        match is the raw value read (it may be no known state at all), not a set."""
        cur = self._exec(
            f"UPDATE jobs SET state = '{JobState.LOST.value}', ended_at = ?, reason = ?,"
            " retryable = 0 WHERE id = ? AND state IS ? AND runner_pid IS ?",
            (now, damaged.problem, damaged.job.id, damaged.raw_state, damaged.raw_runner_pid),
        )
        return cur.rowcount == 1

    def request_kill(self, job_id: int) -> None:
        self._exec("UPDATE jobs SET kill_requested = 1 WHERE id = ?", (job_id,))

    def add_dep(self, job_id: int, dep_id: int) -> None:
        self._exec("INSERT OR IGNORE INTO job_deps VALUES (?, ?)", (job_id, dep_id))

    def repoint_deps(self, old_id: int, new_id: int) -> None:
        """Jobs waiting on `old_id` now wait on its retry `new_id`."""
        self._exec("UPDATE OR IGNORE job_deps SET dep_id = ? WHERE dep_id = ?", (new_id, old_id))

    # -- isolated jobs (core.worktree, services.isolation) ----------------------------

    def set_worktree(
        self, job_id: int, branch: str | None, worktree: str | None, job_key: str | None = None
    ) -> bool:
        """Where an isolated job runs: its branch and worktree folder."""
        key_sql, key_params = sql.key_filter(job_key)
        cur = self._exec(
            "UPDATE jobs SET branch = ?, worktree = ? WHERE id = ?" + key_sql,
            (branch, worktree, job_id, *key_params),
        )
        return cur.rowcount == 1

    def set_files_changed(self, job_id: int, count: int | None, job_key: str | None = None) -> None:
        key_sql, key_params = sql.key_filter(job_key)
        self._exec("UPDATE jobs SET files_changed = ? WHERE id = ?" + key_sql,
                   (count, job_id, *key_params))

    def set_merged(self, job_ids: list[int], when: float | None) -> None:
        """Record that these jobs' branch was merged (`when`), or forget it (None)."""
        for job_id in job_ids:
            self._exec("UPDATE jobs SET merged_at = ? WHERE id = ?", (when, job_id))

