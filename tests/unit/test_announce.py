"""Job-end announcements: when one is due, what it says, and that none is sent twice."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from codexw.core import announce, lifecycle, process
from codexw.core.config import load_config
from codexw.core.errors import ConfigError, UsageError
from codexw.core.lifecycle import Ending
from codexw.core.models import JobSpec, JobState
from codexw.core.store import Store
from codexw.core.validate import check_notify, notify_problem


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    return Store.open()


def _job(store: Store, tmp_path: Path, **kw: object) -> int:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    spec = JobSpec(task="Fix it\nmore text", level="low", type="workers", cwd=str(project),
                   project=str(project), codex_bin="codex", **kw)  # type: ignore[arg-type]
    with store.transaction():
        return lifecycle.queue_with_report(store, spec, time.time())


def _end(store: Store, job_id: int, ending: Ending) -> int | None:
    job = store.get_job(job_id)
    _, retry = lifecycle.record_end(store, job, ending, ended_at=time.time(), summary=None,
                                    report_path=None, announce_after_commit=False)
    return retry


def test_an_end_is_due_once_and_a_retried_failure_is_not_announced(
    store: Store, tmp_path: Path
) -> None:
    job_id = _job(store, tmp_path, notify=("desktop",), retries=1)
    retry = _end(store, job_id, Ending(JobState.FAILED, "429", retryable=True))
    assert retry is not None and store.open_announcements() == []
    store.mark_starting(retry, 1, None)
    _end(store, retry, Ending(JobState.SUCCEEDED))
    (due,) = store.open_announcements()
    assert (due.job_id, due.state, due.targets) == (retry, "due", ("desktop",))
    with store.transaction():  # a second recording of the same end queues nothing
        assert not announce.record_ending(store, store.get_job(retry), retrying=False,
                                          now=time.time())
    assert len(store.open_announcements()) == 1


def test_a_batch_is_due_when_its_last_job_ends_and_its_jobs_only_if_asked(
    store: Store, tmp_path: Path
) -> None:
    with store.transaction():
        batch = store.insert_batch(str(tmp_path), "t", 2, False, notify=("desktop",))
    first = _job(store, tmp_path, batch_id=batch)
    second = _job(store, tmp_path, batch_id=batch)
    _end(store, first, Ending(JobState.SUCCEEDED))
    assert store.open_announcements() == []
    _end(store, second, Ending(JobState.FAILED, "boom"))
    (due,) = store.open_announcements()
    assert due.batch_id == batch and due.job_id is None
    message = announce.batch_message(batch, list(store.batch_latest(batch).values()))
    assert message.body["counts"] == {"failed": 1, "succeeded": 1}
    assert message.body["failed"] == [second]
    assert message.env["CODEXW_BATCH_FAILED"] == str(second)


def test_a_claim_whose_sender_died_is_settled_failed_never_sent_again(
    store: Store, tmp_path: Path
) -> None:
    job_id = _job(store, tmp_path, notify=(f"command:{sys.executable}",))
    _end(store, job_id, Ending(JobState.SUCCEEDED))
    (due,) = store.open_announcements()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process.create_time(dead.pid)
    dead.wait()
    with store.transaction():
        assert store.claim_announcement(due.id, dead.pid, started)
        assert not store.claim_announcement(due.id, 1, None)  # claimed once
    assert announce.send_due(store) == 0
    row = store.get_announcement(due.id)
    assert row is not None and row.state == "failed" and row.error == announce.DIED_WHILE_SENDING


def test_a_job_message_names_the_job_and_its_report(store: Store, tmp_path: Path) -> None:
    job_id = _job(store, tmp_path)
    _end(store, job_id, Ending(JobState.TIMED_OUT, "timed out after 30s"))
    message = announce.job_message(store.get_job(job_id))
    assert message.body["task"] == "Fix it" and message.body["state"] == "timed_out"
    assert message.text == f"codexw: job {job_id} timed_out: Fix it (timed out after 30s)"
    assert message.env["CODEXW_JOB_STATE"] == "timed_out"


@pytest.mark.parametrize(("target", "ok"), [
    ("desktop", True), ("webhook:https://hooks.example.com/T1/B2", True),
    ("webhook:http://127.0.0.1:8080/x", True), ("command:/usr/bin/true", True),
    ("webhook:ftp://example.com", False), ("webhook:https://", False),
    ("webhook:https://a.example/x y", False), ("command:true", False),
    ("command:./hook.sh", False), ("slack", False), ("desktop\x00", False),
])
def test_notify_targets_are_checked(target: str, ok: bool) -> None:
    assert (notify_problem(target) is None) == ok


def test_a_command_target_must_be_an_executable_file(tmp_path: Path) -> None:
    script = tmp_path / "hook"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(UsageError, match="not an executable file"):
        check_notify((f"command:{script}",))
    script.chmod(0o755)
    assert check_notify((f"command:{script}",)) == (f"command:{script}",)


def test_notify_from_config_and_environment(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXW_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("CODEXW_NOTIFY", "desktop, webhook:https://h.example/x")
    assert load_config().notify == ("desktop", "webhook:https://h.example/x")
    monkeypatch.delenv("CODEXW_NOTIFY")
    (tmp_path / "config.toml").write_text('notify = ["command:relative"]\n')
    with pytest.raises(ConfigError, match="notify.*absolute path"):
        load_config()
