"""How a job ends: recorded once, and at most one retry per failure."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from codexw.core import lifecycle
from codexw.core.lifecycle import Ending
from codexw.core.models import JobSpec, JobState
from codexw.core.store import Store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    return Store.open()


def test_one_failure_queues_one_retry_even_when_its_temp_report_cannot_be_written(
    store: Store, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    spec = JobSpec(task="t", level="low", type="workers", cwd=str(project),
                   project=str(project), codex_bin="codex", retries=2)
    with store.transaction():
        job_id = lifecycle.queue_with_report(store, spec, time.time())
    job = store.get_job(job_id)
    # The report folder becomes unusable: the retry's TEMP report cannot be written.
    folder = project / ".codexw" / "workers"
    for report in folder.iterdir():
        report.unlink()
    folder.rmdir()
    folder.write_text("not a folder")

    recorded, retry_id = lifecycle.record_end(
        store, job, Ending(JobState.FAILED, "stream disconnected", retryable=True),
        ended_at=time.time(), summary=None, report_path=None,
    )

    assert recorded and retry_id is not None
    retries = [j for j in store.list_jobs(limit=None) if j.retry_of == job_id]
    assert [j.id for j in retries] == [retry_id]
    assert retries[0].report_path is None  # its runner writes the report
