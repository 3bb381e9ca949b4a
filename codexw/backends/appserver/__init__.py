"""`--backend app-server` (experimental): jobs as threads of one warm `codex app-server`.

One supervisor process (supervisor.py) per key drives one app-server and every job of
that key; the key is CODEX_HOME, the codex binary and a hash of the launching
environment, so jobs launched with different credentials never share a server. A job's
runner_pid is its supervisor's and its codex_pgid the app-server's: reconcile, kill and
status work on it as on a runner's job, but stopping one job is a message to the
supervisor, never a signal (the process serves other jobs too).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys

from codexw.backends.appserver import files
from codexw.core import envfile, naming, paths, process
from codexw.core.models import Job

# The codex versions this backend was tested with (its protocol is experimental upstream
# and changes between releases: tests/e2e/test_app_server.py).
TESTED_VERSIONS = ("0.169.0",)
# Variables that differ between two shells of one user and say nothing of credentials.
VOLATILE = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES", "TERM", "TMUX_PANE",
                      "WINDOWID", "CODEXW_DEPTH"})


def key_for(job: Job, env: dict[str, str]) -> str:
    spec = job.spec
    digest = hashlib.sha256()
    stable = sorted((k, v) for k, v in env.items() if k not in VOLATILE)
    home = spec.codex_home or env.get("CODEX_HOME") or ""
    for part in (home, spec.codex_bin, str(spec.codex_native), json.dumps(stable)):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()[:16]


class AppServerBackend:
    name = "app-server"
    # The supervisor interrupts the turn, stops its processes (kill_grace) and waits for
    # turn/completed (supervisor.INTERRUPT_WAIT): kill waits for all of that.
    stop_wait = 15.0 + 10.0

    def start(self, job: Job) -> tuple[int, float | None]:
        """The supervisor of the job's key: the running one, or one started now (under the
        key's lock, so racing launches start one). The scheduler then adopts the job to
        it and the registry change wakes it."""
        env = (envfile.load(job.spec.env_key) if job.spec.env_key else None) or dict(os.environ)
        key = key_for(job, env)
        fd = os.open(files.lock_path(key), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            record = files.read_record(key)
            if record is not None and process.is_alive(record.get("pid"), record.get("start")):
                return int(record["pid"]), record.get("start")
            spawn_env = dict(os.environ)
            spawn_env["CODEXW_STATE_DIR"] = str(paths.state_dir().resolve())
            argv = [sys.executable, "-P", "-m", "codexw.backends.appserver.supervisor", key,
                    str(job.id)]
            log = paths.logs_dir() / naming.runner_log(job.id)
            pid, start = process.spawn_detached(argv, log, spawn_env)
            files.write_record(key, pid, start, None)
            return pid, start
        finally:
            os.close(fd)

    def is_alive(self, job: Job) -> bool:
        return process.is_alive(job.runner_pid, job.runner_start)

    def stop_leftovers(self, job: Job) -> None:
        """The supervisor is gone: its app-server dies with it (parent-death signal), but
        an app-server whose supervisor was replaced is checked by its marker first."""
        pgid = job.codex_pgid
        if not pgid or not process.group_exists(pgid):
            return
        env = process.environ_of(pgid)
        if env is not None and env.get(files.MARKER_VAR, "").startswith(
                str(paths.state_dir().resolve()) + ":"):
            process.terminate_group(pgid, grace=min(job.spec.kill_grace, 5.0))

    def force_stop(self, job: Job) -> None:
        """Never the supervisor nor its app-server while they live: they run other jobs
        too. Only a dead supervisor's leftovers are stopped."""
        if not self.is_alive(job):
            self.stop_leftovers(job)

    def request_stop(self, job: Job) -> bool:
        """Stopping one job is the supervisor's work (kill_requested, already recorded,
        wakes it); True while the supervisor lives to do it."""
        return self.is_alive(job)


BACKEND = AppServerBackend()
