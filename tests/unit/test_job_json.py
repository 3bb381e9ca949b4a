"""`Job.to_dict` is --json output: its keys, their order and values stay as they were."""

from __future__ import annotations

import json

from codexw.core.models import JOB_JSON_KEYS, Job, JobSpec, JobState


def test_job_json_shape_is_stable() -> None:
    spec = JobSpec(task="t", level="high", type="research", cwd="/c", project="/p",
                   codex_bin="/bin/codex", codex_home="/h", env_key="k", after=(3, 4), retries=2,
                   model="m", timeout=5.0, priority=3, batch_id=7, name="n", resume_of=9,
                   backend="celery", queue="q", broker_url="redis://:pw@b")
    job = Job(id=5, spec=spec, state=JobState.SUCCEEDED, attempt=2, retry_of=1, queued_at=1.0,
              started_at=2.0, ended_at=4.0, not_before=1.5, runner_pid=11, codex_pgid=12,
              exit_code=0, reason="r", tokens={"input_tokens": 3},
              files={"b.py": "update", "a.txt": "add"}, thread_id="th",
              report_path="rp", log_path="lp", last_action="la", host="h", celery_task_id="ct",
              job_key="secret-key", rate_limited=1)
    assert json.dumps(job.to_dict()) == json.dumps({
        "id": 5, "state": "succeeded", "task": "t", "level": "high", "type": "research",
        "model": "m", "sandbox": "workspace-write", "cwd": "/c", "project": "/p",
        "timeout": 5.0, "priority": 3, "batch_id": 7, "name": "n", "after": [3, 4],
        "attempt": 2, "max_attempts": 4, "retry_of": 1, "resume_of": 9, "queued_at": 1.0,
        "started_at": 2.0, "ended_at": 4.0, "duration": 2.0, "not_before": 1.5,
        "runner_pid": 11, "codex_pgid": 12, "exit_code": 0, "reason": "r",
        "tokens": {"input_tokens": 3},
        "files": [{"path": "a.txt", "kind": "add"}, {"path": "b.py", "kind": "update"}],
        "thread_id": "th", "report_path": "rp",
        "log_path": "lp", "last_action": "la", "host": "h", "backend": "celery", "queue": "q",
        "celery_task_id": "ct", "branch": None, "base_commit": None, "worktree": None,
        "merged_at": None, "files_changed": None,
                "account": None, "rate_limited": 1, "waiting": None,
    })
    assert tuple(job.to_dict()) == JOB_JSON_KEYS
