"""Where a job runs: the one interface the scheduler, reconcile and kill work through.

A backend starts the process that runs a job (or stands in for it on this machine),
says whether that process is still alive, and stops what is left of a job whose
process vanished. Backends are found by name (`backend_for`): core never imports one,
so a plain `status` loads no Celery, and a new backend (the app-server) is one more
entry in `BACKENDS` and one module implementing `Backend`.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Protocol

from codexw.core import naming, paths, process
from codexw.core.models import Job

# name → "module:attribute" of its Backend object, loaded on first use.
BACKENDS = {
    "local": "codexw.backends.local:BACKEND",
    "celery": "codexw.backends.celery:BACKEND",
    "app-server": "codexw.backends.appserver:BACKEND",  # experimental
}


class Backend(Protocol):
    name: str
    # How long `kill` waits, beyond the job's kill_grace, for the job's process to stop it.
    stop_wait: float

    def start(self, job: Job) -> tuple[int, float | None]:
        """Start the process that runs `job`, detached; its (PID, start time)."""

    def is_alive(self, job: Job) -> bool:
        """Whether the process recorded as running `job` is still that process."""

    def stop_leftovers(self, job: Job) -> None:
        """After `job`'s process vanished: stop whatever of its work survives."""

    def request_stop(self, job: Job) -> bool:
        """Ask the process running `job` to stop it (its kill request is recorded
        already); False if there is no such process to ask."""

    def force_stop(self, job: Job) -> None:
        """That process did not stop the job in time: stop what is left of it ourselves."""


_loaded: dict[str, Backend] = {}


def backend_for(name: str) -> Backend:
    backend = _loaded.get(name)
    if backend is None:
        module, _, attribute = BACKENDS[name].partition(":")
        backend = _loaded[name] = getattr(importlib.import_module(module), attribute)
    return backend


class RunnerBackend:
    """A backend whose jobs each get a detached `python -m MODULE JOB KEY` on this machine
    (the local runner itself, or a remote job's stand-in): its PID is the job's."""

    name = ""
    runner_module = ""
    stop_wait = 10.0

    def start(self, job: Job) -> tuple[int, float | None]:
        env = dict(os.environ)
        env["CODEXW_STATE_DIR"] = str(paths.state_dir().resolve())
        argv = [sys.executable, "-P", "-m", self.runner_module, str(job.id)]  # -P: see docs
        if job.job_key:
            argv.append(job.job_key)
        log = paths.logs_dir() / naming.runner_log(job.id)
        return process.spawn_detached(argv, log, env)

    def is_alive(self, job: Job) -> bool:
        return process.is_alive(job.runner_pid, job.runner_start)

    def stop_leftovers(self, job: Job) -> None:
        raise NotImplementedError

    def request_stop(self, job: Job) -> bool:
        """SIGTERM to the job's own process, which stops codex and records the end."""
        return bool(job.runner_pid) and process.signal_pid(
            job.runner_pid or 0, signal.SIGTERM, job.runner_start)

    def force_stop(self, job: Job) -> None:
        """The job's own process is stuck: its tree, then the process itself."""
        self.stop_leftovers(job)
        process.signal_pid(job.runner_pid or 0, signal.SIGKILL, job.runner_start)
