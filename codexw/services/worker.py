"""`codexw worker`: check everything a Celery worker needs, then consume the queue.

The checks run before any work is taken, and each failure is a CodexwError with a
hint, so a worker without codex or without auth exits non-zero at once instead of
failing every job it takes.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from codexw.core import paths
from codexw.core.config import load_config
from codexw.core.durations import parse_duration
from codexw.core.errors import CodexMissingError, ConfigError, UsageError
from codexw.services import doctor
from codexw.services.launch import CELERY_HINT

DEFAULT_MAX_JOB_TIME = 4 * 3600.0
DEFAULT_KILL_GRACE = 10.0
LOG_RETENTION = 7 * 24 * 3600.0  # the worker's copies of event logs; the submitter keeps its own


class NotLoggedInError(CodexMissingError):
    """codex runs but `codex login status` fails for the worker's CODEX_HOME."""


@dataclass
class WorkerRequest:
    broker_url: str | None = None
    queue: str | None = None
    concurrency: int = 1
    workspace: str | None = None
    name: str | None = None
    codex_home: str | None = None
    max_job_time: str | None = None
    kill_grace: str | None = None
    visibility_timeout: str | None = None
    loglevel: str = "INFO"


@dataclass
class WorkerPlan:
    """A checked worker, ready to start."""

    broker_url: str
    queue: str
    concurrency: int
    name: str
    codex_bin: str
    codex_home: str | None
    login: str
    workspace: str | None
    max_job_time: float
    kill_grace: float
    visibility_timeout: float
    log_dir: str
    loglevel: str

    def to_dict(self) -> dict[str, object]:
        from codexw.backends.celery.protocol import mask_url

        data = dict(self.__dict__)
        data["broker_url"] = mask_url(self.broker_url)
        return data


def check(req: WorkerRequest) -> WorkerPlan:
    """Validate the options and the machine; raise a CodexwError with a hint if unfit."""
    if req.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None:
        raise UsageError("the Celery backend is not installed", CELERY_HINT)
    if req.codex_home:
        home = Path(req.codex_home).expanduser()
        if not home.is_dir():
            raise UsageError(f"--codex-home {req.codex_home}: no such directory")
        os.environ["CODEX_HOME"] = str(home.resolve())
    config = load_config(Path.cwd())
    cfg = config.with_overrides(broker_url=req.broker_url, queue=req.queue)
    if not cfg.broker_url:
        raise UsageError(
            "no broker given",
            "give --broker redis://HOST:6379/0, set CODEXW_BROKER_URL or broker_url in the config",
        )
    max_job_time = _duration(req.max_job_time, "--max-job-time", DEFAULT_MAX_JOB_TIME)
    kill_grace = _duration(req.kill_grace, "--kill-grace", DEFAULT_KILL_GRACE)
    hard_limit = max_job_time + kill_grace + 5.0
    visibility = _duration(req.visibility_timeout, "--visibility-timeout",
                           max_job_time + kill_grace + 60.0)
    if visibility <= hard_limit:
        raise UsageError(
            f"--visibility-timeout {visibility:g}s is not longer than the longest job"
            f" ({hard_limit:g}s: --max-job-time plus --kill-grace plus 5s)",
            "a shorter visibility timeout would deliver running jobs a second time",
        )
    workspace = None
    if req.workspace:
        ws = Path(req.workspace).expanduser()
        if not ws.is_dir():
            raise UsageError(f"--workspace {req.workspace}: no such directory")
        workspace = str(ws.resolve())
    codex_checks, codex_path = doctor.check_codex(cfg.codex_bin)
    failed = [c for c in codex_checks if c.status == doctor.FAIL]
    if codex_path is None or failed:
        first = failed[0] if failed else codex_checks[0]
        raise CodexMissingError(f"codex: {first.detail}", first.hint)
    home, _explicit = doctor.codex_home()
    login = doctor.check_login(codex_path, home)
    if login.status == doctor.FAIL:
        raise NotLoggedInError(
            f"codex is not logged in with CODEX_HOME={home} ({login.detail}); this worker takes no work",
            f"log in once into the shared CODEX_HOME: CODEX_HOME={home} codex login"
            " (or printf %s \"$OPENAI_API_KEY\" | codex login --with-api-key)",
        )
    _check_broker(cfg.broker_url)
    name = req.name or f"codexw-{os.getpid()}@{socket.gethostname()}"
    return WorkerPlan(
        broker_url=cfg.broker_url,
        queue=cfg.queue,
        concurrency=req.concurrency,
        name=name,
        codex_bin=codex_path,
        codex_home=os.environ.get("CODEX_HOME") or None,
        login=login.detail,
        workspace=workspace,
        max_job_time=max_job_time,
        kill_grace=kill_grace,
        visibility_timeout=visibility,
        log_dir=str(paths.state_dir() / "worker-logs"),
        loglevel=req.loglevel.upper(),
    )


def _duration(value: str | None, flag: str, default: float) -> float:
    if value is None:
        return default
    return parse_duration(value, what=flag)


def _check_broker(url: str) -> None:
    import redis

    from codexw.backends.celery.protocol import mask_url

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5).ping()
    except (redis.RedisError, ValueError) as exc:
        raise ConfigError(f"cannot reach the broker {mask_url(url)}: {exc}",
                          "start Redis or check --broker / CODEXW_BROKER_URL") from None


def prune_logs(directory: Path, now: float | None = None) -> int:
    """Delete this worker's event logs older than LOG_RETENTION; returns how many."""
    cutoff = (now or time.time()) - LOG_RETENTION
    removed = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def run(plan: WorkerPlan) -> None:
    """Consume the queue until the worker is stopped (blocks)."""
    from codexw.backends.celery.app import WorkerSettings, run_worker

    paths.ensure_state_dir()
    prune_logs(Path(plan.log_dir))
    settings = WorkerSettings(
        broker_url=plan.broker_url,
        queue=plan.queue,
        codex_bin=plan.codex_bin,
        codex_home=plan.codex_home,
        workspace=plan.workspace,
        max_job_time=plan.max_job_time,
        kill_grace=plan.kill_grace,
        log_dir=plan.log_dir,
    )
    run_worker(settings, concurrency=plan.concurrency, name=plan.name, loglevel=plan.loglevel,
               visibility_timeout=plan.visibility_timeout)
