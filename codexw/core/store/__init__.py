"""The registry: the only package that writes SQL, with one class in front.

`Store` is the one door; its methods come from one module per concern:

- connection: opening (WAL, busy timeout), transactions, snapshots, error mapping
- schema: the migrations and applying them
- rows: a row to a Job (never trusting it) and a JobSpec to its columns
- jobs: inserting jobs and every change of state (models.TRANSITIONS)
- reads: jobs by id, project, queue order, active, retry chains
- batches: batch limits and a batch's newest attempts
- accounts: the rate limiter's rows (settings and state per account, its events)
- announcements: job-end and batch-end notifications (core.announce)
- files (what cleanup needs) and stats (`status --stats`): imported on first use
- sql: state filters and WHERE clauses built from models' state sets
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from codexw.core.store.accounts import Account, Accounts
from codexw.core.store.announcements import Announcement, Announcements
from codexw.core.store.batches import Batch, Batches
from codexw.core.store.connection import BUSY_TIMEOUT_S, Connection
from codexw.core.store.jobs import JobWrites
from codexw.core.store.reads import JobReads
from codexw.core.store.rows import Unreadable
from codexw.core.store.schema import MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    from codexw.core.store.files import JobFiles

__all__ = [
    "Account",
    "Announcement",
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Batch",
    "JobFiles",
    "Store",
    "Unreadable",
]


class Store(JobWrites, Batches, JobReads, Accounts, Announcements, Connection):
    """The registry. Open with `Store.open()` (a context manager that closes it), write
    inside `transaction()`."""

    # Cleanup's and `status --stats`' queries live in files.py and stats.py, imported
    # here on first use: launching and running a job never load them.

    def job_files(self, project: str) -> list[JobFiles]:
        from codexw.core.store import files

        return files.job_files(self, project)

    def move_report(self, job_id: int, old: str | None, new: str | None) -> bool:
        from codexw.core.store import files

        return files.move_report(self, job_id, old, new)

    def move_log(self, job_id: int, old: str | None, new: str | None) -> bool:
        from codexw.core.store import files

        return files.move_log(self, job_id, old, new)

    def prune_finished(self, project: str) -> list[int]:
        from codexw.core.store import files

        return files.prune_finished(self, project)

    def stats_groups(self, project: str | None, job_type: str | None) -> list[sqlite3.Row]:
        from codexw.core.store import stats

        return stats.stats_groups(self, project, job_type)

    def duration_quantiles(
        self, project: str | None, job_type: str | None, quantiles: tuple[float, ...]
    ) -> dict[str, tuple[int, list[float]]]:
        from codexw.core.store import stats

        return stats.duration_quantiles(self, project, job_type, quantiles)

    def tokens_by_day(self, project: str | None, since: float) -> list[tuple[int, int, int]]:
        from codexw.core.store import stats

        return stats.tokens_by_day(self, project, since)

    def first_and_last(
        self, project: str | None, job_type: str | None
    ) -> tuple[sqlite3.Row | None, sqlite3.Row | None]:
        from codexw.core.store import stats

        return stats.first_and_last(self, project, job_type)


def __getattr__(name: str) -> Any:
    """`JobFiles` (cleanup's row) is loaded with cleanup's queries, not at import."""
    if name == "JobFiles":
        from codexw.core.store.files import JobFiles

        return JobFiles
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
