"""A process is only ever "alive" (signalled, waited on, left running) when its
identity is proven by its recorded start time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from codexw.core import process
from codexw.core.models import JobSpec, JobState
from codexw.core.scheduler import reconcile
from codexw.core.store import Store


def test_an_unknown_start_time_proves_nothing() -> None:
    me = os.getpid()
    assert process.is_alive(me, process.create_time(me))
    assert not process.is_alive(me, None)  # was True: any process with that PID passed
    assert not process.signal_pid(me, 0, None)  # and a signal would have been sent
    assert process.open_pidfd(me, None) is None


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    return Store.open()


@pytest.fixture
def runner() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for a job's runner."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.send_signal(signal.SIGKILL)
    child.wait()


def _running_job(store: Store, project: Path, pid: int, start: float | None) -> int:
    project.mkdir(exist_ok=True)
    spec = JobSpec(task="t", level="low", type="workers", cwd=str(project),
                   project=str(project), codex_bin="codex")
    with store.transaction():
        job_id = store.insert_job(spec, now=1.0)
        assert store.mark_starting(job_id, os.getpid(), process.create_time(os.getpid()))
        assert store.adopt(job_id, pid, start)
        assert store.mark_running(job_id, pid, 0, 2.0)
    return job_id


def test_reconcile_keeps_a_live_runner_whose_start_time_was_recorded(
    store: Store, runner: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    # Every path that records a runner records its start time with it (Backend.start,
    # the runner's own adopt), and create_time is None only for a process already gone.
    start = process.create_time(runner.pid)
    assert start is not None
    job_id = _running_job(store, tmp_path / "p", runner.pid, start)
    reconcile(store, fill=False)
    assert store.get_job(job_id).state == JobState.RUNNING


def test_reconcile_does_not_trust_a_runner_it_cannot_identify(
    store: Store, runner: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    job_id = _running_job(store, tmp_path / "p", runner.pid, None)
    reconcile(store, fill=False)
    job = store.get_job(job_id)
    assert job.state == JobState.LOST, job
    assert runner.poll() is None  # and nothing was signalled
