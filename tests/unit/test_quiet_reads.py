"""Reading the registry is quiet: no wake-ups for waiters, no write lock, unless
something was (or is to be) changed."""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from codexw.core import notify, paths, process
from codexw.core.errors import StoreError
from codexw.core.models import JobSpec, JobState
from codexw.core.store import Store
from codexw.core.store import connection as store_connection
from codexw.services.common import open_store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    return Store.open()


@pytest.fixture
def broadcasts(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    calls: list[None] = []
    monkeypatch.setattr(notify, "broadcast", lambda: calls.append(None))
    return calls


def _spec() -> JobSpec:
    return JobSpec(task="t", level="low", type="workers", cwd="/p", project="/p", codex_bin="codex")


def test_only_a_transaction_that_changed_rows_wakes_waiters(
    store: Store, broadcasts: list[None]
) -> None:
    with store.transaction():
        job_id = store.insert_job(_spec(), now=1.0)
    assert len(broadcasts) == 1
    with store.transaction():  # read-only
        store.get_job(job_id)
        store.queued_jobs()
    with store.transaction():  # a conditional write that matched nothing
        assert not store.mark_starting(job_id + 1, 1, 1.0)
    assert len(broadcasts) == 1
    with store.transaction():
        assert store.finish(job_id, JobState.CANCELLED, ended_at=2.0)
    assert len(broadcasts) == 2


@pytest.fixture
def write_locked(store: Store, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Another connection holds the write lock; ours give up after 0.3 s, not 60."""
    monkeypatch.setattr(store_connection, "BUSY_TIMEOUT_S", 0.3)
    other = sqlite3.connect(paths.db_path(), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield
    other.execute("ROLLBACK")
    other.close()


def test_a_read_command_with_nothing_to_do_takes_no_write_lock(
    store: Store, broadcasts: list[None], write_locked: None
) -> None:
    started = time.monotonic()
    with open_store() as opened:  # reconcile and fill_slots, while someone else writes
        assert opened.list_jobs() == []
    assert time.monotonic() - started < 0.3
    assert broadcasts == []


def _traced_begins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every BEGIN IMMEDIATE the stores opened from now on run."""
    begins: list[str] = []
    real_open = Store.open

    def traced_open() -> Store:
        opened = real_open()
        opened.conn.set_trace_callback(
            lambda sql: begins.append(sql) if sql.startswith("BEGIN IMMEDIATE") else None
        )
        return opened

    monkeypatch.setattr(Store, "open", staticmethod(traced_open))
    return begins


def test_nothing_due_takes_no_write_lock_but_a_due_job_does(
    store: Store, broadcasts: list[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    with store.transaction():
        done = store.insert_job(_spec(), now=1.0)
        store.finish(done, JobState.SUCCEEDED, ended_at=2.0)
        later = store.insert_job(_spec(), now=1.0, not_before=time.time() + 3600)
    begins = _traced_begins(monkeypatch)
    open_store().close()
    assert begins == []

    # The same queue with the backoff run out: now the write lock is the point.
    store.conn.execute("UPDATE jobs SET not_before = 0 WHERE id = ?", (later,))
    monkeypatch.setattr(store_connection, "BUSY_TIMEOUT_S", 0.3)
    other = sqlite3.connect(paths.db_path(), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            open_store()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert begins == ["BEGIN IMMEDIATE"]


def test_a_queued_job_without_a_free_slot_is_left_alone_by_a_read(
    store: Store, broadcasts: list[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read reconciles: the running job's runner (this process) is alive and the one
    slot is taken, so nothing is started, nothing locked, nobody woken."""
    me, my_start = os.getpid(), process.create_time(os.getpid())
    limited = replace(_spec(), global_limit=1)
    with store.transaction():
        running = store.insert_job(limited, now=1.0)
        assert store.mark_starting(running, me, my_start)
        assert store.adopt(running, me, my_start)
        assert store.mark_running(running, me, os.getpgid(0), 2.0)
        queued = store.insert_job(limited, now=3.0)
        waiting = store.insert_job(replace(_spec(), after=(running,)), now=3.0)
    broadcasts.clear()
    begins = _traced_begins(monkeypatch)
    with open_store() as opened:
        states = {job.id: job.state for job in opened.list_jobs()}
    assert states == {running: JobState.RUNNING, queued: JobState.QUEUED,
                      waiting: JobState.QUEUED}
    assert begins == []
    assert broadcasts == []
