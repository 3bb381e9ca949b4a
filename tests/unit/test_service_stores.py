"""Services close the registry they open (and only that one), also when they stream:
a generator holds its store while it is iterated and closes it when it ends or is
dropped."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codexw.core import notify
from codexw.core.errors import NoLogError
from codexw.core.models import JobSpec, JobState
from codexw.core.store import Store
from codexw.services import logs, stats, status, wait
from codexw.services.kill import kill_jobs
from tests.conftest import processes_with_env, wait_until


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    yield project
    # A queued retry due in an hour gets the state dir's waker (core/waker.py): it
    # would sleep that long; this test is done with it.
    marker = f"CODEXW_STATE_DIR={(tmp_path / 'state').resolve()}"
    for pid in processes_with_env(marker):
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not processes_with_env(marker), timeout=20, what="the waker to leave")


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Store]:
    """Every store the code under test opens."""
    stores: list[Store] = []
    real_open = Store.open

    def recording_open() -> Store:
        store = real_open()
        stores.append(store)
        return store

    monkeypatch.setattr(Store, "open", staticmethod(recording_open))
    return stores


def _is_closed(store: Store) -> bool:
    try:
        store.conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def _insert(project: Path, state: JobState = JobState.QUEUED) -> int:
    """A job in `state`; a queued one is a retry not due for an hour (nothing starts it)."""
    spec = JobSpec(task="t", level="low", type="workers", cwd=str(project), project=str(project),
                   codex_bin="codex")
    with Store.open() as store, store.transaction():
        job_id = store.insert_job(spec, now=1.0, not_before=time.time() + 3600)
        if state != JobState.QUEUED:
            assert store.finish(job_id, state, ended_at=2.0)
    return job_id


def test_each_service_closes_the_store_it_opened(project: Path, opened: list[Store]) -> None:
    done = _insert(project, JobState.CANCELLED)
    queued = _insert(project)
    opened.clear()
    assert [j.id for j in status.list_jobs()] == [queued, done]
    assert status.explain_empty(status.JobQuery(state="failed")).unfiltered == 2
    assert status.job_detail(done).job.state == JobState.CANCELLED
    assert stats.job_stats(disk=False).total == 2
    assert wait.open_jobs() == [queued]
    assert wait.wait_for([done]).jobs[done].id == done
    with pytest.raises(NoLogError):
        logs.read_log(done)
    assert [r.after for r in kill_jobs([queued])] == ["cancelled"]
    assert len(opened) == 8
    assert all(_is_closed(store) for store in opened)


def test_a_store_given_to_a_service_stays_open(project: Path) -> None:
    job_id = _insert(project)
    with Store.open() as store:
        status.list_jobs(store=store)
        status.explain_empty(store=store)
        status.job_detail(job_id, store=store)
        stats.job_stats(store=store, disk=False)
        wait.open_jobs(store=store)
        assert not _is_closed(store)
    assert _is_closed(store)


def test_logs_follow_holds_its_store_until_the_log_ends(
    project: Path, opened: list[Store]
) -> None:
    job_id = _insert(project, JobState.SUCCEEDED)
    log = project / "1.jsonl"
    log.write_bytes(b'{"type":"item.completed","item":{"type":"agent_message","text":"hi"}}\n')
    with Store.open() as store:
        store.set_paths(job_id, None, str(log))
    opened.clear()
    _job, entries = logs.read_log(job_id, follow=True)
    assert [e.text for e in entries] == ["hi", f"job {job_id} succeeded"]
    assert opened and all(_is_closed(store) for store in opened)


def test_status_watch_lists_again_on_a_change_and_closes_when_dropped(
    project: Path, opened: list[Store]
) -> None:
    first = _insert(project)
    opened.clear()
    listings = status.watch(refresh=60.0)  # only a registry change can wake it in time
    assert [j.id for j in next(listings)] == [first]
    second = _insert(project)  # its commit wakes the watcher
    assert [j.id for j in next(listings)] == [second, first]
    watcher = opened[0]
    assert not _is_closed(watcher)
    listings.close()
    assert _is_closed(watcher)
    assert list(notify.notify_dir().iterdir()) == []  # its FIFO is gone too
