"""The registry: the only package that writes SQL, with one class in front.

`Store` is the one door; its methods come from one module per concern:

- connection: opening (WAL, busy timeout), transactions, snapshots, error mapping
- schema: the migrations and applying them
- rows: a row to a Job (never trusting it) and a JobSpec to its columns
- jobs: inserting jobs and every change of state (models.TRANSITIONS)
- reads: jobs by id, project, queue order, active, retry chains
- batches, files (what cleanup needs), stats (`status --stats`)
- sql: state filters and WHERE clauses built from models' state sets
"""

from __future__ import annotations

from codexw.core.store.batches import Batch, Batches
from codexw.core.store.connection import BUSY_TIMEOUT_S, Connection
from codexw.core.store.files import Files, JobFiles
from codexw.core.store.jobs import JobWrites
from codexw.core.store.reads import JobReads
from codexw.core.store.rows import Unreadable
from codexw.core.store.schema import MIGRATIONS, SCHEMA_VERSION
from codexw.core.store.stats import Stats

__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Batch",
    "JobFiles",
    "Store",
    "Unreadable",
]


class Store(JobWrites, Batches, JobReads, Files, Stats, Connection):
    """The registry. Open with `Store.open()`, write inside `transaction()`."""
