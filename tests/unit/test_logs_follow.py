"""`logs -f` and the runner's last lines (issue 12.3).

`_follow` reads the log, then looks at the job's state. A runner writes its last event
lines and then records the end, so both can happen between that read and that look.
These tests drive the service with a log file and a registry stand-in whose state
check is where the runner finishes: the race, made certain."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from codexw.core.models import Job, JobSpec, JobState
from codexw.services.logs import _follow

SPEC = JobSpec(task="t", level="low", type="workers", cwd="/p", project="/p", codex_bin="codex")


def _event(text: str) -> bytes:
    item = {"id": text, "type": "agent_message", "text": text}
    return json.dumps({"type": "item.completed", "item": item}).encode() + b"\n"


class FinishesWhenLookedAt:
    """A registry whose job is running until its state is read; at that moment the
    runner appends its last lines (`tail`) and records the end, as a real one may."""

    def __init__(self, jobs: dict[int, tuple[Path, bytes]], retry: dict[int, int]) -> None:
        self.jobs = {i: Job(id=i, spec=SPEC, state=JobState.RUNNING, log_path=str(path))
                     for i, (path, _) in jobs.items()}
        self.tails = {i: tail for i, (_, tail) in jobs.items()}
        self.retry = retry

    def get_job(self, job_id: int) -> Job:
        job = self.jobs[job_id]
        if job.state == JobState.RUNNING:
            with open(job.log_path or "", "ab") as fh:
                fh.write(self.tails[job_id])
            self.jobs[job_id] = job = replace(job, state=JobState.FAILED if job_id in self.retry
                                              else JobState.SUCCEEDED)
        return job

    def latest_attempt(self, job_id: int) -> int:
        while job_id in self.retry:
            job_id = self.retry[job_id]
        return job_id


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))  # the Listener's FIFO
    return tmp_path


def test_lines_written_just_before_the_end_are_printed(tmp_path: Path) -> None:
    log = tmp_path / "1.jsonl"
    log.write_bytes(_event("first"))
    store = FinishesWhenLookedAt({1: (log, _event("second") + _event("last words"))}, {})
    texts = [e.text for e in _follow(store, store.jobs[1], log, raw=False)]  # type: ignore[arg-type]
    assert texts == ["first", "second", "last words", "job 1 succeeded"]


def test_a_last_line_without_newline_is_printed_once(tmp_path: Path) -> None:
    log = tmp_path / "1.jsonl"
    log.write_bytes(b"")
    store = FinishesWhenLookedAt({1: (log, b"plain\nno newline at the end")}, {})
    texts = [e.data for e in _follow(store, store.jobs[1], log, raw=True)]  # type: ignore[arg-type]
    assert texts == [b"plain", b"no newline at the end"]


def test_the_last_lines_of_a_failed_attempt_come_before_its_retry(tmp_path: Path) -> None:
    first, second = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    first.write_bytes(_event("try 1"))
    second.write_bytes(_event("try 2"))
    store = FinishesWhenLookedAt(
        {1: (first, _event("try 1 ends")), 2: (second, _event("try 2 ends"))}, {1: 2})
    texts = [e.text for e in _follow(store, store.jobs[1], first, raw=False)]  # type: ignore[arg-type]
    assert texts == ["try 1", "try 1 ends", "job 1 failed; following retry job 2",
                     "try 2", "try 2 ends", "job 2 succeeded"]
