from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from codexw.core.errors import StoreError
from codexw.core.models import (
    FINAL_STATES,
    OPEN_STATES,
    TRANSITIONS,
    JobSpec,
    JobState,
    sources,
)
from codexw.core.store import MIGRATIONS, SCHEMA_VERSION, Store
from codexw.core.store.rows import NOT_COLUMNS, SPEC_COLUMNS


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    return Store.open()


def _spec(**kw) -> JobSpec:  # type: ignore[no-untyped-def]
    return JobSpec(task="t", level="low", type="workers", cwd="/p", project="/p", codex_bin="codex", **kw)


def test_schema_version_wal_and_private_files(store: Store, tmp_path: Path) -> None:
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    state = tmp_path / "state"
    assert (state.stat().st_mode & 0o777) == 0o700
    assert ((state / "codexw.db").stat().st_mode & 0o777) == 0o600


def test_newer_schema_is_refused(store: Store) -> None:
    store.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(StoreError, match="newer than this codexw"):
        Store.open()


def test_corrupt_registry_is_a_clear_error_and_untouched(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    state.mkdir()
    db = state / "codexw.db"
    db.write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("CODEXW_STATE_DIR", str(state))
    with pytest.raises(StoreError) as info:
        Store.open()
    assert "corrupt" in str(info.value) and "mv" in str(info.value)
    assert db.read_bytes() == b"this is not a database" * 100


def test_finish_happens_once(store: Store) -> None:
    with store.transaction():
        job_id = store.insert_job(_spec(), now=1.0)
    with store.transaction():
        assert store.finish(job_id, JobState.CANCELLED, ended_at=2.0, reason="a")
        assert not store.finish(job_id, JobState.FAILED, ended_at=3.0, reason="b")
    job = store.get_job(job_id)
    assert (job.state, job.reason) == (JobState.CANCELLED, "a")


def test_the_files_a_run_changed_are_recorded_with_its_end(store: Store) -> None:
    with store.transaction():
        job_id = store.insert_job(_spec(), now=1.0)
        other = store.insert_job(_spec(), now=1.0)
    assert store.get_job(job_id).files == {}
    odd = "caf\udce9.txt"  # a name that was not UTF-8 on disk
    with store.transaction():
        store.finish(job_id, JobState.SUCCEEDED, ended_at=2.0, files={"a.py": "update", odd: "add"})
        store.conn.execute("UPDATE jobs SET files = '[1]' WHERE id = ?", (other,))
    assert store.get_job(job_id).files == {"a.py": "update", odd: "add"}
    damaged = store.find_job(other)
    assert damaged is not None and damaged.files == {}
    assert damaged.reason is not None and "files: not a JSON object" in damaged.reason


def test_queued_order_priority_then_age(store: Store) -> None:
    with store.transaction():
        a = store.insert_job(_spec(priority=0), now=1.0)
        b = store.insert_job(_spec(priority=5), now=2.0)
        c = store.insert_job(_spec(priority=0), now=3.0)
    assert [j.id for j in store.queued_jobs()] == [b, a, c]


def _traced(store: Store, call: Callable[[], object]) -> list[str]:
    """The statements the Store itself runs for `call` (as SQLite expands them)."""
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        store.conn.set_trace_callback(None)
    return [s for s in seen if s.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE"))]


_HOT_QUERIES: dict[str, Callable[[Store], object]] = {
    "queued_jobs": lambda s: s.queued_jobs(),
    "queue": lambda s: s.queue(),  # the scheduler's plan, at every job's end
    "jobs_by_id": lambda s: s.jobs_by_id([1, 2]),
    "active_jobs": lambda s: s.active_jobs(),
    "active_counts": lambda s: s.active_counts(),
    "list_jobs(project)": lambda s: s.list_jobs(project="/p"),
    "batch_latest": lambda s: s.batch_latest(1),
    "batch_job_ids": lambda s: s.batch_job_ids(1),
    "attempt_chain": lambda s: s.attempt_chain(2),
    "latest_attempt": lambda s: s.latest_attempt(1),
    "next_due": lambda s: s.next_due(0.0),
    "env_key_in_use": lambda s: s.env_key_in_use("k"),
    "owns": lambda s: s.owns(1, "k"),
    "job_files": lambda s: s.job_files("/p"),
    "isolated_jobs": lambda s: s.isolated_jobs("/p"),
    "get_job": lambda s: s.get_job(1),
    "mark_starting": lambda s: s.mark_starting(99, 1, 1.0),
    "finish": lambda s: s.finish(99, JobState.CANCELLED, ended_at=1.0),
    "active_per_account": lambda s: s.active_per_account(),  # the limiter's, per plan
    "tokens_used": lambda s: s.tokens_used("a", 0.0),
    "batch_budgets": lambda s: s.batch_budgets(),
}


@pytest.mark.parametrize("name", list(_HOT_QUERIES))
def test_hot_queries_use_an_index(store: Store, name: str) -> None:
    """The plans of the statements the Store really runs (captured, not copied here):
    a change to its SQL that loses an index fails this test."""
    with store.transaction():
        first = store.insert_job(_spec(batch_id=1, after=()), now=1.0)
        store.insert_job(_spec(batch_id=1), now=2.0, attempt=2, retry_of=first)
    statements = _traced(store, lambda: _HOT_QUERIES[name](store))
    assert statements, name
    for statement in statements:
        details = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + statement)]
        tables = [d for d in details if d.split(" ")[1:2] in (["jobs"], ["j"], ["job_deps"])]
        # Every step on a table is a search through an index or the primary key: no
        # scan, not even of a whole index.
        bad = [d for d in tables
               if not d.startswith("SEARCH") or not ("INDEX" in d or "PRIMARY KEY" in d)]
        assert tables and not bad, (statement, details)


def test_v1_registry_is_upgraded_with_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry made by the first schema version (rows written in its shape) opens,
    is migrated to the current version, and its jobs read back with new columns defaulted."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    conn = sqlite3.connect(state / "codexw.db", isolation_level=None)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO batches (id, created_at, project, source, max_parallel) VALUES"
        " (1, 1.0, '/p', 'tasks.txt', 2)"
    )
    columns = (
        "id, state, task, level, type, sandbox, cwd, project, codex_bin, codex_args,"
        " kill_grace, backoff_base, backoff_max, batch_id, queued_at, started_at, ended_at,"
        " exit_code, input_tokens, report_path"
    )
    conn.execute(
        f"INSERT INTO jobs ({columns}) VALUES (1, 'succeeded', 'old task', 'high', 'workers',"
        " 'workspace-write', '/p', '/p', 'codex', '[\"--x\"]', 10.0, 5.0, 300.0, 1, 1.0, 2.0,"
        " 5.0, 0, 42, '/p/.codexw/workers/r.md')"
    )
    conn.execute(
        f"INSERT INTO jobs ({columns}) VALUES (2, 'queued', 'waiting', 'low', 'research',"
        " 'read-only', '/p', '/p', 'codex', '[]', 10.0, 5.0, 300.0, 1, 3.0, NULL, NULL, NULL, 0,"
        " NULL)"
    )
    conn.execute("INSERT INTO job_deps VALUES (2, 1)")
    conn.close()
    monkeypatch.setenv("CODEXW_STATE_DIR", str(state))

    store = Store.open()
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    done, waiting = store.get_jobs([1, 2])
    assert (done.state, done.spec.task, done.spec.level, done.spec.codex_args) == (
        JobState.SUCCEEDED, "old task", "high", ("--x",))
    assert (done.tokens["input_tokens"], done.duration, done.report_path) == (
        42, 3.0, "/p/.codexw/workers/r.md")
    assert (waiting.state, waiting.spec.type, waiting.spec.after) == (
        JobState.QUEUED, "research", (1,))
    # Columns added by later migrations take their defaults.
    for job in (done, waiting):
        assert job.spec.backend == "local"
        assert (job.spec.broker_url, job.spec.queue, job.spec.path_env, job.spec.env_key) == (
            None, None, None, None)
        assert (job.job_key, job.celery_task_id) == (None, None)
    assert [j.id for j in store.queued_jobs()] == [2]
    assert store.get_batch(1).max_parallel == 2
    # And the upgraded registry takes new jobs like a new one.
    with store.transaction():
        new = store.insert_job(_spec(), now=4.0)
    assert store.get_job(new).job_key
    store.close()


def test_every_spec_field_is_a_column_or_declared_not_one(store: Store) -> None:
    """A new JobSpec field needs a column (a migration) or a place in rows.NOT_COLUMNS."""
    columns = {row["name"] for row in store.conn.execute("PRAGMA table_info(jobs)")}
    fields = {f.name for f in dataclasses.fields(JobSpec)}
    assert set(SPEC_COLUMNS) == fields - NOT_COLUMNS
    assert set(SPEC_COLUMNS) <= columns
    assert not NOT_COLUMNS & columns


def test_a_spec_round_trips_through_its_row(store: Store) -> None:
    spec = _spec(model="m", timeout=3.5, retries=2, retry_timeouts=True, priority=4,
                 name="n", codex_args=("-c", "x=1"), codex_home="/h", template="t.md",
                 backend="celery", broker_url="redis://b", queue="q", path_env="/bin",
                 env_key="e", isolation="worktree", base_commit="abc", branch="codexw/2",
                 worktree="/w/2", branch_prefix="x/", worktree_copy=(".env",),
                 worktree_setup=("npm", "ci"), dirty_base=True)
    with store.transaction():
        dep = store.insert_job(_spec(), now=1.0)
        job_id = store.insert_job(dataclasses.replace(spec, after=(dep,)), now=2.0)
    assert store.get_job(job_id).spec == dataclasses.replace(spec, after=(dep,))


def test_state_filters_come_from_the_transitions(store: Store) -> None:
    assert set(JobState) == OPEN_STATES | FINAL_STATES and not OPEN_STATES & FINAL_STATES
    assert sources(JobState.STARTING) == {JobState.QUEUED}
    assert sources(JobState.RUNNING) == {JobState.STARTING}
    assert sources(JobState.QUEUED) == {JobState.STARTING}
    assert all(sources(final) == OPEN_STATES for final in FINAL_STATES)
    assert all(not TRANSITIONS[final] for final in FINAL_STATES)
    with store.transaction():
        job_id = store.insert_job(_spec(), now=1.0)
    with store.transaction():
        assert not store.mark_running(job_id, 1, 1, 1.0)  # queued -> running: not allowed
        assert not store.release(job_id, 1)  # queued -> queued: not a move
        assert store.mark_starting(job_id, 1, 1.0)
        assert not store.mark_starting(job_id, 1, 1.0)
        assert store.unclaim(job_id)
        assert store.mark_starting(job_id, 1, 1.0)
        assert store.adopt(job_id, 7, 1.0)
        assert store.mark_running(job_id, 7, 7, 2.0)
        assert store.finish(job_id, JobState.SUCCEEDED, ended_at=3.0)
        assert not store.unclaim(job_id) and not store.release(job_id, 7)


def test_database_is_real_sqlite(store: Store, tmp_path: Path) -> None:
    with store.transaction():
        store.insert_job(_spec(), now=1.0)
    conn = sqlite3.connect(tmp_path / "state" / "codexw.db")
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
