"""Job states, levels and the records the registry holds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
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

    @property
    def is_open(self) -> bool:
        return self in OPEN_STATES


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
# Not ended yet: the registry may still change the job (queued, or occupying a slot).
OPEN_STATES = frozenset({JobState.QUEUED}) | ACTIVE_STATES

# Every allowed change of state, as the registry's conditional UPDATEs enforce it (the
# store builds their `WHERE state IN (...)` from this table). A queued job usually ends
# `cancelled` (kill, a failed dependency) or `lost` (a row that cannot be read), but a
# runner records whatever outcome it reached, so any open state may take any ending.
# STARTING -> QUEUED is a claim given back (`release` by its runner, `unclaim` of a dead
# claimer). A final state never changes again.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.STARTING}) | FINAL_STATES,
    JobState.STARTING: frozenset({JobState.QUEUED, JobState.RUNNING}) | FINAL_STATES,
    JobState.RUNNING: FINAL_STATES,
    **{state: frozenset() for state in FINAL_STATES},
}


def sources(target: JobState) -> frozenset[JobState]:
    """The states a job may be in to move to `target`."""
    return frozenset(state for state, nexts in TRANSITIONS.items() if target in nexts)


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
    # Where it runs: "local" (a runner on this machine), "celery" (a worker of the
    # broker's queue) or "app-server" (a thread of a codex app-server here; experimental).
    # See codexw.backends.
    backend: str = "local"
    broker_url: str | None = None
    queue: str | None = None
    # PATH at launch (not secret): codex and its `node` are found the same way later.
    path_env: str | None = None
    # Names the file holding the launching command's whole environment (secrets
    # included: it lives in the 0600 state dir, never in the registry; core.envfile).
    env_key: str | None = None
    # Whether codex's prompt asks for a final message in the report's sections.
    report_sections: bool = True
    # Whether an npm-installed codex starts as its native binary, not through the Node
    # wrapper (core.codexbin).
    codex_native: bool = True

    # Isolation (docs/isolation.md): "none", or "worktree": the job runs in a git
    # worktree of its own under the state dir, on `branch`, made by its runner from
    # `base_commit` (what HEAD pointed at when the job was launched). `branch` and
    # `worktree` are assigned when the job is recorded (core.worktree.assign).
    isolation: str = "none"
    base_commit: str | None = None
    branch: str | None = None
    worktree: str | None = None
    branch_prefix: str = "codexw/"
    # Copied from the project into the worktree, and run there before codex (an argv).
    worktree_copy: tuple[str, ...] = ()
    worktree_setup: tuple[str, ...] = ()
    # The main tree had uncommitted changes at launch that the worktree does not have.
    dirty_base: bool = False
    # The account codex authenticates with (core/limiter.py): a salted hash, never the
    # secret; jobs of one account share its rate limiter. None: not limited (remote).
    account: str | None = None
    # Where the end of this job is announced (core.announce): `desktop`, `webhook:URL`,
    # `command:PATH`; copied from config and flags at launch (the runner reads no config).
    notify: tuple[str, ...] = ()



BACKENDS = ("local", "celery", "app-server")
# Backends whose jobs run on another machine: the worker's codex, CODEX_HOME and
# environment, nothing of the launching command's.
REMOTE_BACKENDS = ("celery",)
ISOLATIONS = ("none", "worktree")


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
    claimed_at: float | None = None  # when a slot was claimed for it (its start)
    claimed_by_pid: int | None = None
    claimed_by_start: float | None = None
    runner_pid: int | None = None
    runner_start: float | None = None
    codex_pgid: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    retryable: bool = False
    tokens: dict[str, int] = field(default_factory=dict)
    # What the run changed, path -> kind (add, update, delete…), recorded when it ends.
    files: dict[str, str] = field(default_factory=dict)
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
    # What the runner started for codex (core.codexbin.CodexProgram.describe).
    codex_exec: str | None = None
    # Isolated jobs: files its branch changed against its base commit (recorded when the
    # runner commits them), and when `codexw merge` brought the branch in.
    files_changed: int | None = None
    merged_at: float | None = None
    # Attempts before this one that ended rate-limited: they do not count against
    # `--retries` (core/limiter.py).
    rate_limited: int = 0
    # Why a queued job waits (throttled, budget, slot, after): computed by the
    # scheduler's plan for listings, never stored.
    waiting: str | None = field(default=None, compare=False)

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
        """Stable, JSON-ready view used by --json and templates (`JOB_JSON_KEYS`)."""
        computed = {
            "state": self.state.value,
            "after": list(self.spec.after),
            # Rate-limited attempts do not count against --retries.
            "max_attempts": self.spec.retries + 1 + self.rate_limited,
            "duration": self.duration,
            "tokens": dict(self.tokens),
            "files": [{"path": p, "kind": k} for p, k in sorted(self.files.items())],
        }
        return {
            key: computed[key] if key in computed
            else getattr(self.spec if key in _SPEC_FIELD_NAMES else self, key)
            for key in JOB_JSON_KEYS
        }


# The --json shape of a job, in this order: part of codexw's stable output, so a new
# field of Job or JobSpec is not shown until it is added here. Each key is a field of
# Job or of its spec (Job's wins), or one computed in `Job.to_dict`. Spec fields that
# are machine-specific or may carry secrets (codex_bin, codex_args, codex_home,
# broker_url, path_env, env_key, notify (a webhook URL is a secret), ...) are
# deliberately absent.
JOB_JSON_KEYS = (
    "id", "state", "task", "level", "type", "model", "sandbox", "cwd", "project", "timeout",
    "priority", "batch_id", "name", "after", "attempt", "max_attempts", "retry_of",
    "resume_of", "queued_at", "started_at", "ended_at", "duration", "not_before",
    "runner_pid", "codex_pgid", "exit_code", "reason", "tokens", "files", "thread_id",
    "report_path",
    "log_path", "last_action", "host", "backend", "queue", "celery_task_id",
    "branch", "base_commit", "worktree", "merged_at", "files_changed", "account",
    "rate_limited", "waiting",
)
_SPEC_FIELD_NAMES = frozenset(f.name for f in fields(JobSpec)) - frozenset(
    f.name for f in fields(Job)
)


TOKEN_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
