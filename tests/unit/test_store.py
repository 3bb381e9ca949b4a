from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from codexw.core.errors import StoreError
from codexw.core.models import JobSpec, JobState
from codexw.core.store import SCHEMA_VERSION, Store


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


def test_queued_order_priority_then_age(store: Store) -> None:
    with store.transaction():
        a = store.insert_job(_spec(priority=0), now=1.0)
        b = store.insert_job(_spec(priority=5), now=2.0)
        c = store.insert_job(_spec(priority=0), now=3.0)
    assert [j.id for j in store.queued_jobs()] == [b, a, c]


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT * FROM jobs WHERE state = 'queued' ORDER BY priority DESC, id ASC", ()),
        ("SELECT * FROM jobs WHERE state IN ('starting', 'running')", ()),
        ("SELECT * FROM jobs WHERE project = ? ORDER BY id DESC LIMIT 10", ("/p",)),
        ("SELECT id FROM jobs WHERE batch_id = ? ORDER BY id", (1,)),
        ("SELECT id FROM jobs WHERE retry_of = ? ORDER BY id DESC LIMIT 1", (1,)),
    ],
)
def test_hot_queries_use_an_index(store: Store, sql: str, params: tuple) -> None:  # type: ignore[type-arg]
    details = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    # Every step on jobs goes through an index: no full table scan.
    assert any("INDEX" in d for d in details), details
    assert not [d for d in details if d.startswith("SCAN jobs") and "INDEX" not in d], details


def test_database_is_real_sqlite(store: Store, tmp_path: Path) -> None:
    with store.transaction():
        store.insert_job(_spec(), now=1.0)
    conn = sqlite3.connect(tmp_path / "state" / "codexw.db")
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
