"""What a job came to, as data: its outcome, the agent's final message, the files it
touched and its tokens (for `codexw mcp`'s `result` tool and the report resource)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codexw.core import lifecycle
from codexw.core.errors import NoLogError
from codexw.core.models import Job
from codexw.services.common import open_store

REPORT_LIMIT = 4 << 20  # bytes of a report read back (a final message can be long)


@dataclass
class JobResult:
    asked: int  # the id asked for; `job` is the last attempt of its chain
    job: Job
    final_message: str | None
    files: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = self.job.to_dict()
        tokens = dict(self.job.tokens)
        return {
            "job_id": self.asked,
            "attempt_id": self.job.id,
            "state": self.job.state.value,
            "outcome_reason": self.job.reason,
            "final_message": self.final_message,
            "files": self.files,
            "usage": tokens,
            "report_path": self.job.report_path,
            # A job in its own git worktree has a branch (JOB_JSON_KEYS, when it exists).
            "branch": data.get("branch"),
        }


def job_result(job_id: int) -> JobResult:
    """Job `job_id`'s chain followed to its last attempt, like `codexw wait`; the
    final message and files are read back from that attempt's event log (so far,
    when it still runs)."""
    with open_store() as store:
        job = store.get_job(store.latest_attempt(store.get_job(job_id).id))
    summary = lifecycle.summary_from_log(job) if job.started_at is not None else None
    # An ended run's files were recorded with its outcome (its events and `git status`);
    # a running one's (or one recorded before schema 7) are those its events named.
    files = job.files or (summary.files if summary is not None else {})
    return JobResult(
        asked=job_id,
        job=job,
        final_message=summary.final_message if summary is not None else None,
        files=[{"path": path, "kind": kind} for path, kind in sorted(files.items())],
    )


def read_report(job_id: int) -> tuple[Job, str]:
    """The text of job `job_id`'s report as it is now (live while it runs; also once
    cleanup archived it as .md.gz)."""
    with open_store() as store:
        job = store.get_job(job_id)
    if not job.report_path:
        raise NoLogError(f"job {job_id} has no report")
    path = Path(job.report_path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read(REPORT_LIMIT)
        else:
            with path.open("rb") as fh:
                data = fh.read(REPORT_LIMIT)
    except OSError as exc:
        raise NoLogError(f"job {job_id}'s report {path} cannot be read: {exc.strerror}") from None
    return job, data.decode("utf-8", "replace")
