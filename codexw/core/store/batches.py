"""Batches: a set of jobs sharing a parallel limit, and what the scheduler asks of them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from codexw.core.errors import NotFoundError
from codexw.core.models import Job
from codexw.core.store import sql
from codexw.core.store.announcements import targets_of
from codexw.core.store.reads import JobReads

_J_QUEUED = sql.state_in(sql.QUEUED, "j.state")


@dataclass(frozen=True)
class Batch:
    id: int
    created_at: float
    project: str
    source: str | None
    max_parallel: int | None
    halt_on_failure: bool
    halted_reason: str | None
    notify: tuple[str, ...] = ()  # where the batch's end is announced (core.announce)


class Batches(JobReads):
    def insert_batch(
        self, project: str, source: str | None, max_parallel: int | None, halt_on_failure: bool,
        budget_tokens: int | None = None,
        notify: tuple[str, ...] = (),
    ) -> int:
        cur = self._exec(
            "INSERT INTO batches (created_at, project, source, max_parallel, halt_on_failure,"
            " budget_tokens, notify) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), project, source, max_parallel, int(halt_on_failure), budget_tokens,
             json.dumps(list(notify))),
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
            notify=targets_of(row["notify"]),
        )

    def batch_limits(self) -> dict[int, int | None]:
        rows = self._exec(
            "SELECT DISTINCT b.id, b.max_parallel, b.halted_reason FROM batches b"
            f" JOIN jobs j ON j.batch_id = b.id WHERE {_J_QUEUED}"
        ).fetchall()
        return {r["id"]: r["max_parallel"] for r in rows}

    def halted_batches(self) -> dict[int, str]:
        rows = self._exec(
            "SELECT DISTINCT b.id, b.halted_reason FROM batches b JOIN jobs j ON j.batch_id = b.id"
            f" WHERE {_J_QUEUED} AND b.halted_reason IS NOT NULL"
        ).fetchall()
        return {r["id"]: r["halted_reason"] for r in rows}

    def halt_batch(self, batch_id: int, reason: str) -> None:
        self._exec(
            "UPDATE batches SET halted_reason = ? WHERE id = ? AND halt_on_failure = 1"
            " AND halted_reason IS NULL",
            (reason, batch_id),
        )

    def clear_halt(self, batch_id: int) -> None:
        self._exec("UPDATE batches SET halted_reason = NULL WHERE id = ?", (batch_id,))

    def batch_job_ids(self, batch_id: int) -> list[int]:
        rows = self._exec(
            "SELECT id FROM jobs WHERE batch_id = ? ORDER BY id", (batch_id,)
        ).fetchall()
        return [r["id"] for r in rows]

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
