"""The supervisor of one `codex app-server`: every job of its key runs as a thread in it.

    python -P -m codexw.backends.appserver.supervisor KEY FIRST_JOB

Started detached by `AppServerBackend.start` (one per key, under the key's lock). The
scheduler adopts app-server jobs to this process's PID like any runner; a registry change
(a FIFO wake-up, core.notify) makes it look for jobs adopted to it, start a thread and a
turn for each, and follow kill requests. Each job's events are written to its log in
`codex exec --json` form (translate.py), so reports, status, logs and retries are the
local backend's. It exits after `app_server_idle` without a running turn.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codexw.backends.appserver import files, translate
from codexw.backends.appserver.server import AppServer
from codexw.core import codexbin, envfile, gitdelta, lifecycle, paths, process, scheduler
from codexw.core.codex import RunSummary, app_server_refusal, build_prompt
from codexw.core.config import load_config
from codexw.core.errors import CodexwError
from codexw.core.lifecycle import Ending
from codexw.core.models import Job, JobState
from codexw.core.notify import Listener
from codexw.core.run import STOP_SIGNALS, StopRequest, Throttle, codex_env, failure
from codexw.core.store import Store

APPROVAL = "never"
INTERRUPT_WAIT = 15.0  # after turn/interrupt, how long to wait for turn/completed
RETIRE_GRACE = 1.0  # after giving up its record: a job adopted meanwhile still runs here


@dataclass
class ThreadRun:
    job: Job
    log_fd: int
    summary: RunSummary = field(default_factory=RunSummary)
    thread_id: str | None = None
    turn_id: str | None = None
    turn_started: float = 0.0  # process.now_token(): compared with processes' start
    deadline: float | None = None
    stopping: Ending | None = None
    stop_deadline: float | None = None
    command_pids: set[int] = field(default_factory=set)
    # Per turn id: thread/resume restates the thread's last usage under its earlier turn.
    usage: dict[str, dict[str, int]] = field(default_factory=dict)
    git_before: gitdelta.Snapshot | None = None
    setting: tuple[str, str, str | None] | None = None  # (cwd, sandbox, model) it was opened with
    progress: Throttle = field(default_factory=Throttle)
    changed: bool = False


class Supervisor:
    def __init__(self, store: Store, key: str, first: Job, env: dict[str, str]) -> None:
        self.store = store
        self.key = key
        self.spec = first.spec  # codex_bin, codex_home: the same for every job of the key
        self.env = env
        self.program = codexbin.locate(first.spec.codex_bin, first.spec.codex_native)
        self.idle_after = load_config().app_server_idle
        self.refusal = self.check_version()
        self.server: AppServer | None = None
        self.runs: dict[int, ThreadRun] = {}
        self.by_thread: dict[str, ThreadRun] = {}
        self.loaded: dict[str, tuple[str, str, str | None]] = {}  # threads the server holds
        self.opening: list[tuple[ThreadRun, str, dict[str, Any]]] = []  # thread requests to send
        self.opening_now: ThreadRun | None = None
        self.idle_since = time.monotonic()
        self.stop = StopRequest()
        self.me = os.getpid()
        self.codex_home = Path(first.spec.codex_home or env.get("CODEX_HOME")
                               or Path(env.get("HOME", "~")).expanduser() / ".codex")

    def check_version(self) -> str | None:
        try:
            out = subprocess.run([self.program.path, "--version"], capture_output=True,
                                 stdin=subprocess.DEVNULL, env=self.program.environ(self.env),
                                 timeout=30, text=True, errors="replace")
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{self.program.path} --version` failed: {exc}"
        return app_server_refusal(out.stdout) if out.returncode == 0 else (
            f"`{self.program.path} --version` failed with status {out.returncode}")

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        with Listener() as listener:
            while True:
                if self.stop.requested:
                    self.stop_all(Ending(JobState.KILLED, f"supervisor received {self.stop.name}"))
                    break
                self.pick_up()
                if not self.runs and time.monotonic() - self.idle_since >= self.idle_after:
                    if self.retire(listener):
                        break
                    continue
                self.wait(listener)
                self.check_deadlines()
                for run in list(self.runs.values()):
                    self.report(run)
        if self.server is not None:
            self.server.shut_down()

    def wait(self, listener: Listener) -> None:
        timeout = 1.0
        if not self.runs:
            timeout = max(0.05, self.idle_after - (time.monotonic() - self.idle_since))
        readers = [listener.fileno()]
        writers = []
        server = self.server
        if server is not None and not server.eof:
            readers.append(server.out_fd)
            if server.wants_write():
                writers.append(server.in_fd)
        try:
            ready, writable, _ = select.select(readers, writers, [], min(timeout, 1.0))
        except InterruptedError:
            return
        if listener.fileno() in ready:
            listener.drain()
        if server is not None:
            if writable:
                server.flush()
            if server.out_fd in ready:
                for message in server.read():
                    self.handle(message)
            if server.eof or server.proc.poll() is not None:
                self.server_died(server)

    # -- jobs ---------------------------------------------------------------------------

    def pick_up(self) -> None:
        """Start the jobs adopted to this process; pass on kill requests."""
        for job in self.store.jobs_of_runner(self.me, self.spec.backend):
            run = self.runs.get(job.id)
            if run is None and job.state == JobState.STARTING:
                self.begin(job)
            elif run is not None and job.kill_requested and run.stopping is None:
                self.halt(run, Ending(JobState.KILLED, "killed by `codexw kill`"))

    def ensure_server(self) -> AppServer:
        if self.server is not None and self.server.alive():
            return self.server
        log = paths.logs_dir() / files.server_log(self.key)
        server = AppServer(self.program, self.env, log, str(paths.state_dir()))
        server.request("initialize", {"clientInfo": {"name": "codexw", "version": "0"}},
                       lambda result, error: None)
        server.notify("initialized")
        files.write_record(self.key, self.me, process.create_time(self.me), server.pid)
        self.server = server
        self.loaded = {}
        self.opening_now = None
        return server

    def begin(self, job: Job) -> None:
        log = lifecycle.log_path(job.id)
        if self.refusal is not None:
            lifecycle.finalize(self.store, job, Ending(JobState.FAILED, self.refusal), None)
            scheduler.fill_slots(self.store)
            return
        try:
            server = self.ensure_server()
        except OSError as exc:
            lifecycle.finalize(self.store, job, Ending(
                JobState.FAILED, f"could not start codex app-server: {exc.strerror or exc}"), None)
            return
        with self.store.transaction():
            marked = self.store.owns(job.id, job.job_key) and self.store.mark_running(
                job.id, self.me, server.pid, time.time(),
                f"app-server {self.program.path} (pid {server.pid})")
            if marked:
                self.store.set_paths(job.id, None, str(log))
        if not marked:
            return
        job = self.store.get_job(job.id)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        run = ThreadRun(job, fd, turn_started=process.now_token())
        if job.spec.timeout:
            run.deadline = time.monotonic() + job.spec.timeout
        if os.path.isdir(job.spec.cwd):
            run.git_before = gitdelta.snapshot(job.spec.cwd)
        self.runs[job.id] = run
        # No usage_baseline for a follow-up: the turn's usage is summed from its own
        # responses (thread/tokenUsage/updated `last`), not the thread's running total.
        spec = job.spec
        params: dict[str, Any] = {
            "cwd": spec.cwd, "sandbox": spec.sandbox, "approvalPolicy": APPROVAL,
            "config": {"model_reasoning_effort": spec.level},
        }
        if spec.model:
            params["model"] = spec.model
        resume = spec.resume_thread or self.thread_of_lost_attempt(job)
        setting = (spec.cwd, spec.sandbox, spec.model)
        if resume and self.loaded.get(resume) == setting:
            # A follow-up on a thread this app-server holds, with its settings: the new
            # turn goes straight in (no thread/resume round trip).
            self.thread_ready(run, {"thread": {"id": resume}}, None, None)
            self.report(run, force=True)
            return
        if resume:
            params["threadId"] = resume
        run.setting = setting
        self.opening.append((run, "thread/resume" if resume else "thread/start", params))
        self.open_next()
        self.report(run, force=True)

    def open_next(self) -> None:
        """Send the next thread/start (or resume), one at a time: each writes a trust
        entry into codex's config.toml, undone by comparing the file before and after,
        which two requests in flight at once would defeat."""
        if self.opening_now is not None or not self.opening or self.server is None:
            return
        run, method, params = self.opening.pop(0)
        if run.job.id not in self.runs:  # ended (killed) while it waited
            self.open_next()
            return
        self.opening_now = run
        before = files.read_bytes(self.codex_home / "config.toml")

        def opened(result: dict[str, Any] | None, error: str | None) -> None:
            self.opening_now = None
            self.thread_ready(run, result, error, before)
            self.open_next()

        self.server.request(method, params, opened)

    def thread_of_lost_attempt(self, job: Job) -> str | None:
        """A retry of an attempt the app-server's death ended: resume its conversation."""
        if job.retry_of is None:
            return None
        earlier = self.store.find_job(job.retry_of)
        if earlier is None or earlier.state != JobState.LOST or earlier.spec.backend != job.spec.backend:
            return None
        return earlier.thread_id

    def thread_ready(self, run: ThreadRun, result: dict[str, Any] | None, error: str | None,
                     config_before: bytes | None) -> None:
        if run.setting is not None:  # a thread/start or thread/resume answered
            files.undo_trust_write(self.codex_home / "config.toml", config_before,
                                   run.job.spec.cwd)
        if run.job.id not in self.runs:
            return
        thread = (result or {}).get("thread")
        thread_id = thread.get("id") if isinstance(thread, dict) else None
        if error is not None or not isinstance(thread_id, str):
            self.end(run, self.request_failed(error or "no thread id"))
            return
        run.thread_id = thread_id
        self.by_thread[thread_id] = run
        if run.setting is not None:
            self.loaded[thread_id] = run.setting
        self.emit(run, {"type": "thread.started", "thread_id": thread_id})
        if run.stopping is not None:  # killed before the thread existed
            self.end(run, run.stopping)
            return
        assert self.server is not None
        prompt = build_prompt(run.job.spec.task, run.job.spec.report_sections)
        self.server.request("turn/start", {
            "threadId": thread_id, "input": [{"type": "text", "text": prompt}],
            "effort": run.job.spec.level,
        }, lambda result, error: self.turn_ready(run, result, error))

    def turn_ready(self, run: ThreadRun, result: dict[str, Any] | None, error: str | None) -> None:
        turn = (result or {}).get("turn")
        turn_id = turn.get("id") if isinstance(turn, dict) else None
        if error is not None or not isinstance(turn_id, str):
            if run.job.id in self.runs:
                self.end(run, self.request_failed(error or "no turn id"))
            return
        run.turn_id = turn_id
        run.turn_started = process.now_token()
        if run.stopping is not None:
            self.interrupt(run)

    def request_failed(self, error: str) -> Ending:
        """A thread or turn request that failed: `lost` (retryable, the thread resumed) when
        the app-server died under it, else the failure it names."""
        if self.server is None or not self.server.alive():
            return Ending(JobState.LOST, f"codex app-server died: {error}", None, True)
        return failure(f"codex app-server: {error}", None)

    # -- events -------------------------------------------------------------------------

    def handle(self, message: dict[str, Any]) -> None:
        method = message["method"]
        params = message.get("params")
        if "id" in message:  # a request to us: codexw approves nothing (policy never)
            assert self.server is not None
            self.server._send({"id": message["id"], "error": {
                "code": -32601, "message": f"codexw does not answer {method}"}})
            return
        if not isinstance(params, dict):
            return
        run = self.by_thread.get(params.get("threadId"))  # type: ignore[arg-type]
        if run is None:
            return
        if method in ("item/started", "item/completed"):
            raw = params.get("item")
            item = translate.item(raw)
            if item is not None:
                kind = "item.started" if method == "item/started" else "item.completed"
                self.emit(run, {"type": kind, "item": item})
            if isinstance(raw, dict) and raw.get("type") == "commandExecution":
                pid = raw.get("processId")
                if isinstance(pid, str) and pid.isdigit():
                    run.command_pids.add(int(pid))
        elif method == "thread/tokenUsage/updated":
            turn_usage = run.usage.setdefault(str(params.get("turnId")), {})
            for k, v in translate.usage_of(params).items():
                turn_usage[k] = turn_usage.get(k, 0) + v
        elif method == "error":
            err = params.get("error")
            text = err.get("message") if isinstance(err, dict) else None
            if isinstance(text, str) and not params.get("willRetry"):
                self.emit(run, {"type": "error", "message": text})
        elif method == "turn/completed":
            turn = params.get("turn")
            if isinstance(turn, dict):
                self.turn_completed(run, turn)

    def turn_completed(self, run: ThreadRun, turn: dict[str, Any]) -> None:
        status = turn.get("status")
        usage = run.usage.get(str(turn.get("id")), {})
        if status == "completed":
            self.emit(run, {"type": "turn.completed", "usage": translate.turn_usage(usage)})
            ending = run.stopping or Ending(JobState.SUCCEEDED, None, 0, False)
        elif status == "failed":
            err = turn.get("error")
            text = err.get("message") if isinstance(err, dict) else None
            message = text if isinstance(text, str) else "the turn failed"
            self.emit(run, {"type": "turn.failed", "error": {"message": message}})
            reason = run.summary.error or message
            ending = run.stopping or failure(reason, None)
        else:  # interrupted
            ending = run.stopping or Ending(JobState.FAILED, "the turn was interrupted")
        self.end(run, ending)

    def emit(self, run: ThreadRun, event: dict[str, Any]) -> None:
        line = json.dumps(event).encode()
        try:
            os.write(run.log_fd, line + b"\n")
        except OSError:
            pass
        run.summary.feed_line(line)
        run.changed = True

    def report(self, run: ThreadRun, force: bool = False) -> None:
        if run.progress.due(force) and (run.changed or force):
            run.changed = False
            lifecycle.record_progress(self.store, run.job, run.summary)

    # -- stopping -----------------------------------------------------------------------

    def halt(self, run: ThreadRun, ending: Ending) -> None:
        run.stopping = ending
        run.stop_deadline = time.monotonic() + run.job.spec.kill_grace + INTERRUPT_WAIT
        if run.turn_id is not None:
            self.interrupt(run)

    def interrupt(self, run: ThreadRun) -> None:
        """turn/interrupt, then the processes the turn started (interrupt alone leaves
        a running command alive)."""
        if self.server is not None and run.thread_id and run.turn_id:
            self.server.request("turn/interrupt", {"threadId": run.thread_id,
                                                   "turnId": run.turn_id},
                                lambda result, error: None)
        files.stop_turn_processes(self.server.pid if self.server else None, run.command_pids,
                                  run.job.spec.cwd, run.turn_started, run.job.spec.kill_grace)

    def check_deadlines(self) -> None:
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.stopping is None and run.deadline is not None and now >= run.deadline:
                self.halt(run, Ending(JobState.TIMED_OUT,
                                      f"timed out after {run.job.spec.timeout:g}s", None, False))
            elif run.stop_deadline is not None and now >= run.stop_deadline:
                assert run.stopping is not None
                self.end(run, run.stopping)

    def stop_all(self, ending: Ending) -> None:
        for run in list(self.runs.values()):
            self.halt(run, ending)
        for run in list(self.runs.values()):
            self.end(run, ending)

    def server_died(self, server: AppServer) -> None:
        server.proc.poll()
        why = f"codex app-server (pid {server.pid}) died"
        code = server.proc.returncode
        if code is not None:
            why += f" ({'signal ' + signal.Signals(-code).name if code < 0 else f'status {code}'})"
        self.server = None
        for run in list(self.runs.values()):
            files.stop_turn_processes(None, run.command_pids, run.job.spec.cwd,
                                      run.turn_started, run.job.spec.kill_grace)
            self.end(run, Ending(JobState.LOST, why, None, True))

    def end(self, run: ThreadRun, ending: Ending) -> None:
        """Record the job's end (report, outcome, retry) and free its slot."""
        self.runs.pop(run.job.id, None)
        if run.thread_id:
            self.by_thread.pop(run.thread_id, None)
        cwd = run.job.spec.cwd
        known = {os.path.normpath(os.path.join(cwd, p)) for p in run.summary.files}
        for path, kind in gitdelta.changed_files(run.git_before, cwd).items():
            if os.path.normpath(os.path.join(cwd, path)) not in known:
                run.summary.files[path] = kind
        os.close(run.log_fd)
        lifecycle.finalize(self.store, run.job, ending, run.summary)
        if not self.runs:
            self.idle_since = time.monotonic()
        scheduler.fill_slots(self.store)

    def retire(self, listener: Listener) -> bool:
        """Idle long enough: give up the key (no new job is sent here), then leave unless
        a job was adopted just before."""
        files.remove_record(self.key, self.me)
        deadline = time.monotonic() + RETIRE_GRACE
        while time.monotonic() < deadline:
            listener.wait(deadline - time.monotonic())
            if self.store.jobs_of_runner(self.me, self.spec.backend):
                files.write_record(self.key, self.me, process.create_time(self.me),
                                   self.server.pid if self.server else None)
                self.idle_since = time.monotonic()
                return False
        return True


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: python -m codexw.backends.appserver.supervisor KEY FIRST_JOB", file=sys.stderr)
        return 2
    key, first_id = argv[1], int(argv[2])
    store = Store.open()
    stop = StopRequest()
    stop.install()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        first = store.get_job(first_id)
        base = envfile.load(first.spec.env_key) if first.spec.env_key else dict(os.environ)
        if base is None:
            base = dict(os.environ)
        marker = files.marker(key)
        supervisor = Supervisor(store, key, first, codex_env(base, first.spec, marker))
        supervisor.stop = stop
        supervisor.run()
    except (CodexwError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"codexw app-server supervisor: {exc}", file=sys.stderr)
        return 1
    finally:
        files.remove_record(key, os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
