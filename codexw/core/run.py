"""One codex run, knowing nothing of the registry.

`CodexRun` spawns `codex exec` in its own process group with the prompt on stdin,
reads its --json events into the log and a `RunSummary`, enforces the timeout and
stop requests by signalling the whole group (TERM, grace, KILL), and says how the run
ended. What a run reports, and where to, is its `RunSink`: the local runner's sink
writes the registry and the TEMP report (codexw.runner), a Celery worker's sink a
Redis stream (codexw.backends.celery.worker).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol

from codexw.core import codexbin, gitdelta, naming, process, validate
from codexw.core.codex import (
    RunSummary,
    auto_skip_git_check,
    build_argv,
    build_prompt,
    is_transient,
    rate_limit,
)
from codexw.core.codexbin import CodexProgram
from codexw.core.errors import CodexwError
from codexw.core.lifecycle import Ending
from codexw.core.models import JobSpec, JobState

PROGRESS_INTERVAL = 1.0  # the most often a run reports progress
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopRequest:
    """The stop a signal asked of this process. Installed as the handler, it only records
    which signal came (circus-style); the run loop acts on it."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        self.signum = signum

    def install(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        for sig in signals:
            signal.signal(sig, self)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal"


class Throttle:
    """Lets a periodic report through at most once per `interval`, unless forced."""

    def __init__(self, interval: float = PROGRESS_INTERVAL) -> None:
        self.interval = interval
        self.last = 0.0

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return False
        self.last = now
        return True


class RunSink(Protocol):
    """Where a run reports: the hooks CodexRun calls."""

    def log_file(self) -> Path:
        """Where codex's raw event stream is appended (stderr goes beside it)."""

    def on_started(self, codex_pid: int, program: CodexProgram) -> bool:
        """codex runs (as `program`); False if the job was ended meanwhile elsewhere
        (stop at once)."""

    def on_progress(self, summary: RunSummary, changed: bool) -> None:
        """Called when codex has started, then about once per PROGRESS_INTERVAL while it
        runs (`changed`: new events arrived since the last call)."""

    def stop_requested(self) -> bool:
        """Whether the run must stop now (a kill, a signal)."""

    def kill_ending(self) -> Ending:
        """How a stopped run ended."""

    def on_turn_ended(self) -> None:
        """codex's last event arrived: it is exiting (a moment to load the renderer)."""


def codex_env(base: dict[str, str], spec: JobSpec, marker: dict[str, str]) -> dict[str, str]:
    """codex's environment: `base` (the launching command's, or a worker's own), the
    marker that tells its process group from a reused one, and the job's CODEX_HOME."""
    env = dict(base)
    env.update(marker)
    # One level deeper than the command that launched it: a codexw launched by this
    # codex (through a shell or `codexw mcp`) knows how deep it is (validate.check_depth).
    env[validate.DEPTH_ENV] = str((validate.depth_of(base) or 0) + 1)
    if spec.codex_home:
        env["CODEX_HOME"] = spec.codex_home
    return env


def stderr_log(event_log: Path) -> Path:
    """Where codex's stderr goes: beside its event log."""
    return event_log.with_name(naming.companion_log(event_log.name, "stderr.log"))


def _codex_preexec() -> None:
    """In codex's process before exec: it dies with its runner and hears every signal
    (a blocked mask must never be inherited by codex and its tools)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    process.set_parent_death_signal()


def failure(reason: str, code: int | None, context: str = "",
            transient: bool | None = None) -> Ending:
    """A failed run's ending: retryable when `reason` is transient (unless `transient`
    says), and rate-limited (requeued by the limiter) when it or `context`, codex's
    stderr, says so."""
    retryable = is_transient(reason) if transient is None else transient
    ending = Ending(JobState.FAILED, reason, code, retryable)
    limited, after = rate_limit(f"{reason}\n{context}")
    if limited:
        ending.reason = f"rate-limited: {reason}"
        ending.retryable, ending.rate_limited, ending.retry_after = True, True, after
    return ending


class CodexRun:
    def __init__(self, spec: JobSpec, sink: RunSink, env: dict[str, str]) -> None:
        self.spec = spec
        self.sink = sink
        self.env = env
        self.summary = RunSummary()
        self.git_before: gitdelta.Snapshot | None = None
        self.codex: subprocess.Popen[bytes] | None = None
        self.log_fd = -1
        self.log_lost = 0  # bytes of the event stream the log could not take (disk full)
        self.log_error: str | None = None
        self.ended_elsewhere = False
        self.progress = Throttle()
        self.changed = False
        self.program = codexbin.locate(spec.codex_bin, spec.codex_native)

    def execute(self, wakeup_fd: int) -> Ending:
        """Start codex and follow it to its end. Trouble of this machine (a full disk, an
        unforeseen OSError) fails the run with the reason: it never vanishes into `lost`."""
        try:
            problem = self.start()
            return Ending(JobState.FAILED, problem) if problem else self.follow(wakeup_fd)
        except (OSError, CodexwError) as exc:
            try:  # best effort: this machine is in trouble (out of files, memory)
                if self.codex is not None and process.group_exists(self.codex.pid):
                    process.terminate_group(self.codex.pid, self.spec.kill_grace,
                                            reap=[self.codex])
            except OSError:
                pass
            return Ending(JobState.FAILED, f"the runner failed: {exc}")

    # -- start -------------------------------------------------------------------------

    def start(self) -> str | None:
        """Spawn codex; returns why it could not start, or None."""
        spec = self.spec
        if auto_skip_git_check(spec):
            self.summary.warnings.append(
                f"note: {spec.cwd} is not in a git repository; codexw passed --skip-git-repo-check"
            )
        log = self.sink.log_file()
        try:
            self.log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            stderr_fd = os.open(
                stderr_log(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
        except OSError as exc:
            return f"cannot open the event log {log}: {exc.strerror or exc}"
        try:
            prompt = process.anonymous_file(log.parent, build_prompt(spec.task, spec.report_sections))
        except OSError as exc:
            os.close(stderr_fd)
            return f"cannot write the prompt for codex in {log.parent}: {exc.strerror or exc}"
        if os.path.isdir(spec.cwd):
            self.git_before = gitdelta.snapshot(spec.cwd)
        with prompt:
            try:
                self.codex = subprocess.Popen(
                    build_argv(spec, self.program.path),
                    stdin=prompt,
                    stdout=subprocess.PIPE,
                    stderr=stderr_fd,
                    cwd=spec.cwd,
                    env=self.program.environ(self.env),
                    start_new_session=True,  # its own process group: we signal the group
                    preexec_fn=_codex_preexec,
                    close_fds=True,
                )
            except FileNotFoundError as exc:
                if not os.path.isdir(spec.cwd):
                    return f"working directory {spec.cwd} does not exist"
                return f"codex not found: {self.program.path} ({exc.strerror})"
            except PermissionError as exc:
                return f"codex is not executable: {self.program.path} ({exc.strerror})"
            except OSError as exc:
                return f"codex could not be started: {self.program.path} ({exc.strerror})"
            finally:
                os.close(stderr_fd)
        self.ended_elsewhere = not self.sink.on_started(self.codex.pid, self.program)
        self.report(force=True)
        return None

    # -- run ---------------------------------------------------------------------------

    def follow(self, wakeup_fd: int) -> Ending:
        assert self.codex is not None and self.codex.stdout is not None
        spec = self.spec
        out_fd = self.codex.stdout.fileno()
        os.set_blocking(out_fd, False)
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        eof = False
        warmed = False
        exited_at: float | None = None
        while True:
            now = time.monotonic()
            if self.ended_elsewhere or self.sink.stop_requested():
                return self.stop(self.sink.kill_ending())
            if deadline is not None and now >= deadline:
                return self.stop(
                    Ending(JobState.TIMED_OUT, f"timed out after {spec.timeout:g}s", None, False)
                )
            if eof and self.codex.poll() is not None:
                break
            if self.codex.poll() is not None and not eof:
                # codex itself exited but something of its group still holds stdout
                # (a Node wrapper killed with SIGKILL leaves its native child running).
                exited_at = exited_at or now
                if now - exited_at > 1.0:
                    process.terminate_group(self.codex.pid, spec.kill_grace)
            wait = PROGRESS_INTERVAL
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            if eof:
                try:
                    self.codex.wait(timeout=min(wait, 0.1))
                except subprocess.TimeoutExpired:
                    pass
                continue
            ready, _, _ = select.select([out_fd, wakeup_fd], [], [], wait)
            if wakeup_fd in ready:
                try:
                    os.read(wakeup_fd, 512)
                except BlockingIOError:
                    pass
            if out_fd in ready:
                try:
                    chunk = os.read(out_fd, 65536)
                except BlockingIOError:
                    chunk = b""
                else:
                    if not chunk:
                        eof = True
                if chunk:
                    self.write_log(chunk)
                    # Split in linear time, however long a line gets.
                    self.summary.feed_bytes(chunk)
                    self.changed = True
                    if self.summary.turn_ended and not warmed:
                        warmed = True
                        self.sink.on_turn_ended()
            self.report()
        self.summary.end_of_stream()
        # Nothing of the group may outlive the run.
        if process.group_exists(self.codex.pid):
            process.terminate_group(self.codex.pid, spec.kill_grace, reap=[self.codex])
        return self.outcome(self.codex.returncode)

    def report(self, force: bool = False) -> None:
        if self.progress.due(force):
            changed, self.changed = self.changed, False
            self.sink.on_progress(self.summary, changed or force)

    def stop(self, ending: Ending) -> Ending:
        assert self.codex is not None
        process.terminate_group(self.codex.pid, self.spec.kill_grace, reap=[self.codex])
        try:
            self.codex.wait(timeout=self.spec.kill_grace + 5)
        except subprocess.TimeoutExpired:
            pass
        self.drain()
        return ending

    def drain(self) -> None:
        """Read what is left in the pipe after the group was stopped."""
        assert self.codex is not None and self.codex.stdout is not None
        try:
            rest = os.read(self.codex.stdout.fileno(), 1 << 20)
        except (BlockingIOError, OSError):
            rest = b""
        if rest:
            self.write_log(rest)
            self.summary.feed_bytes(rest)  # continues the line follow() was reading
        self.summary.end_of_stream()

    def write_log(self, chunk: bytes) -> None:
        """Append to the event log; a full disk costs log lines, never the run."""
        try:
            written = os.write(self.log_fd, chunk)
        except OSError as exc:
            written = 0
            self.log_error = exc.strerror or str(exc)
        self.log_lost += len(chunk) - written

    def outcome(self, code: int | None) -> Ending:
        s = self.summary
        if code == 0 and not s.turn_failed:
            return Ending(JobState.SUCCEEDED, None, 0, False)
        if code is not None and code < 0 and not s.turn_failed and not s.error:
            return Ending(
                JobState.FAILED, f"codex was killed by {signal.Signals(-code).name}", code, False
            )
        tail = self.stderr_tail()
        if s.turn_failed or s.error:
            return failure(s.error or "the turn failed", code, tail)
        return failure(f"codex exited with status {code}{tail}", code, tail, transient=False)

    def stderr_tail(self) -> str:
        path = stderr_log(self.sink.log_file())
        try:
            with path.open("rb") as fh:
                fh.seek(max(0, path.stat().st_size - 300))
                tail = fh.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return f": {tail[-1]}" if tail else ""

    # -- end ---------------------------------------------------------------------------

    def wrap_up(self, ending: Ending) -> Ending:
        """After the run: the files `git status` saw change join those the events named,
        and a log the disk could not take is said in the reason. Closes the log."""
        if self.codex is not None:
            cwd = self.spec.cwd
            known = {os.path.normpath(os.path.join(cwd, p)) for p in self.summary.files}
            for path, kind in gitdelta.changed_files(self.git_before, cwd).items():
                if os.path.normpath(os.path.join(cwd, path)) not in known:
                    self.summary.files[path] = kind
        if self.log_lost:
            lost = (f"event log incomplete: {self.log_lost} bytes not written to"
                    f" {self.sink.log_file()} ({self.log_error or 'short write'})")
            ending.reason = f"{ending.reason}; {lost}" if ending.reason else lost
        if self.log_fd >= 0:
            os.close(self.log_fd)
            self.log_fd = -1
        return ending
