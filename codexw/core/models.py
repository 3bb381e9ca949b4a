"""Job states, levels and the records the registry holds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    LOST = "lost"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATES


FINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.TIMED_OUT,
        JobState.KILLED,
        JobState.LOST,
        JobState.CANCELLED,
    }
)
# States that occupy a parallel slot.
ACTIVE_STATES = frozenset({JobState.STARTING, JobState.RUNNING})

LEVELS = ("minimal", "low", "medium", "high", "xhigh")
SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
TYPE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# .codexw/archive/ holds what cleanup archived: no job type may report there.
RESERVED_TYPES = frozenset({"archive"})


def is_job_type(name: str) -> bool:
    return bool(TYPE_NAME_RE.fullmatch(name)) and name not in RESERVED_TYPES
JOB_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class JobSpec:
    """Everything a runner needs to run one attempt, fixed at launch."""

    task: str
    level: str
    type: str
    cwd: str
    project: str
    codex_bin: str
    sandbox: str = "workspace-write"
    model: str | None = None
    timeout: float | None = None
    kill_grace: float = 10.0
    retries: int = 0
    retry_timeouts: bool = False
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    priority: int = 0
    batch_id: int | None = None
    name: str | None = None
    after: tuple[int, ...] = ()
    global_limit: int | None = None
    codex_args: tuple[str, ...] = ()
    codex_home: str | None = None
    template: str | None = None
    resume_thread: str | None = None
    resume_of: int | None = None
    # Where it runs: "local" (a runner on this machine) or "celery" (a worker of the
    # broker's queue; see codexw.backends).
    backend: str = "local"
    broker_url: str | None = None
    queue: str | None = None
    # PATH at launch (not secret): codex and its `node` are found the same way later.
    path_env: str | None = None
    # Names the file holding the launching command's whole environment (secrets
    # included: it lives in the 0600 state dir, never in the registry; core.envfile).
    env_key: str | None = None


BACKENDS = ("local", "celery")


@dataclass
class Job:
    """A row of the registry."""

    id: int
    spec: JobSpec
    state: JobState
    attempt: int = 1
    retry_of: int | None = None
    queued_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    not_before: float | None = None
    claimed_by_pid: int | None = None
    claimed_by_start: float | None = None
    runner_pid: int | None = None
    runner_start: float | None = None
    codex_pgid: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    retryable: bool = False
    tokens: dict[str, int] = field(default_factory=dict)
    thread_id: str | None = None
    report_path: str | None = None
    log_path: str | None = None
    last_action: str | None = None
    kill_requested: bool = False
    host: str | None = None
    celery_task_id: str | None = None
    # Random, per attempt: a runner recognises its own job (and its TEMP report) by it,
    # not by the id alone, which a new registry or a second state dir can reuse.
    job_key: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at
        if end is None:
            import time

            end = time.time()
        return max(0.0, end - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        """Stable, JSON-ready view used by --json and templates."""
        s = self.spec
        return {
            "id": self.id,
            "state": self.state.value,
            "task": s.task,
            "level": s.level,
            "type": s.type,
            "model": s.model,
            "sandbox": s.sandbox,
            "cwd": s.cwd,
            "project": s.project,
            "timeout": s.timeout,
            "priority": s.priority,
            "batch_id": s.batch_id,
            "name": s.name,
            "after": list(s.after),
            "attempt": self.attempt,
            "max_attempts": s.retries + 1,
            "retry_of": self.retry_of,
            "resume_of": s.resume_of,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": self.duration,
            "not_before": self.not_before,
            "runner_pid": self.runner_pid,
            "codex_pgid": self.codex_pgid,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "tokens": dict(self.tokens),
            "thread_id": self.thread_id,
            "report_path": self.report_path,
            "log_path": self.log_path,
            "last_action": self.last_action,
            "host": self.host,
            "backend": s.backend,
            "queue": s.queue,
            "celery_task_id": self.celery_task_id,
        }


TOKEN_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
