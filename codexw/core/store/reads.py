"""Reading jobs: by id, by project, the queue, the active ones, retry chains.

Every row goes through rows.read_job: a damaged row never fails a whole list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from codexw.core.errors import NotFoundError
from codexw.core.models import Job, JobState
from codexw.core.store import sql
from codexw.core.store.connection import Connection
from codexw.core.store.rows import Queued, Unreadable, read_job, read_queued, read_state


class JobReads(Connection):
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
        self, statement: str, params: Iterable[Any] = (), damaged: list[Unreadable] | None = None
    ) -> list[Job]:
        """The jobs of `statement`'s rows, read one by one: a damaged row never fails the list.

        With `damaged`, rows that cannot be read go there (for a caller that acts on
        them) instead of into the list; without it they are listed as well as they
        can be read, their reason naming what could not be."""
        rows = self._exec(statement, params).fetchall()
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
        """The jobs of `job_ids` that exist, in that order."""
        ids = list(job_ids)
        found = self.jobs_by_id(ids)
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
        where, params = sql.where(project=project, type=job_type, state=state, batch_id=batch_id)
        statement = "SELECT * FROM jobs" + where + " ORDER BY id DESC"
        if limit is not None:
            statement += " LIMIT ?"
            params.append(limit)
        return self._jobs(statement, params)

    def active_jobs(self, damaged: list[Unreadable] | None = None) -> list[Job]:
        return self._jobs(f"SELECT * FROM jobs WHERE {sql.IS_ACTIVE}", (), damaged)

    def jobs_of_runner(self, runner_pid: int, backend: str) -> list[Job]:
        """The open jobs adopted by one process of a backend whose process runs many
        (an app-server supervisor)."""
        return self._jobs(f"SELECT * FROM jobs WHERE {sql.IS_ACTIVE} AND runner_pid = ?"
                          " AND backend = ?", (runner_pid, backend))

    def active_counts(self) -> tuple[int, dict[int, int]]:
        """(all active jobs, active jobs per batch)."""
        rows = self._exec(
            f"SELECT batch_id, COUNT(*) AS n FROM jobs WHERE {sql.IS_ACTIVE} GROUP BY batch_id"
        ).fetchall()
        per_batch = {r["batch_id"]: r["n"] for r in rows if r["batch_id"] is not None}
        return sum(r["n"] for r in rows), per_batch

    def queue(self) -> list[Queued]:
        """The queue in start order, with just what the scheduler's plan needs: it is
        read at every job's end, and whole rows of a long queue cost a batch dearly."""
        rows = self._exec(
            "SELECT id, batch_id, not_before, global_limit, account FROM jobs"
            f" WHERE {sql.IS_QUEUED}"
            " ORDER BY priority DESC, id ASC"
        ).fetchall()
        deps = self._deps_of([r["id"] for r in rows]) if rows else {}
        return [read_queued(r, deps.get(r["id"], ())) for r in rows]

    def jobs_by_id(
        self, job_ids: Iterable[int], damaged: list[Unreadable] | None = None
    ) -> dict[int, Job]:
        """Whole jobs by id (those that cannot be read go to `damaged`, if given)."""
        ids = list(dict.fromkeys(job_ids))
        found: dict[int, Job] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for job in self._jobs(
                f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", chunk, damaged
            ):
                found[job.id] = job
        return found

    def queued_jobs(self) -> list[Job]:
        """Queued jobs in start order: priority first, then oldest (whole rows; the
        scheduler's plan reads `queue()`)."""
        return self._jobs(
            f"SELECT * FROM jobs WHERE {sql.IS_QUEUED} ORDER BY priority DESC, id ASC"
        )

    def states_of(self, job_ids: Iterable[int]) -> dict[int, JobState]:
        ids = list(job_ids)
        if not ids:
            return {}
        rows = self._exec(
            f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids
        ).fetchall()
        return {r["id"]: read_state(r["state"]) for r in rows}

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

    def projects(self) -> list[str]:
        """Every project the registry has jobs of."""
        rows = self._exec("SELECT DISTINCT project FROM jobs ORDER BY project").fetchall()
        return [r["project"] for r in rows]

    def has_jobs(self, project: str) -> bool:
        row = self._exec("SELECT 1 FROM jobs WHERE project = ? LIMIT 1", (project,)).fetchone()
        return row is not None


    def job_ids(self, project: str | None = None, job_type: str | None = None) -> list[int]:
        where, params = sql.stats_where(project, job_type)
        return [r[0] for r in self._exec(f"SELECT id FROM jobs{where}", params).fetchall()]

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
            f"SELECT 1 FROM jobs WHERE env_key = ? AND {sql.IS_OPEN} LIMIT 1", (env_key,)
        ).fetchone()
        return row is not None

    def isolated_jobs(self, project: str) -> list[Job]:
        """The project's jobs that ran (or will run) in a worktree of their own, oldest
        first (index jobs_by_branch)."""
        return self._jobs("SELECT * FROM jobs WHERE project = ? AND branch IS NOT NULL"
                          " ORDER BY id", (project,))

    def next_due(self, after: float) -> float | None:
        """When the next queued job's backoff runs out, if later than `after`.

        Jobs already due are not reported: they start when a slot frees, and
        reporting them would make callers spin."""
        row = self._exec(
            f"SELECT MIN(not_before) AS t FROM jobs WHERE {sql.IS_QUEUED} AND not_before > ?",
            (after,),
        ).fetchone()
        t: float | None = row["t"]
        return t


def _id_order(value: Any) -> tuple[int, Any]:
    return (0, value) if type(value) is int else (1, repr(value))
