"""The runner: one detached process per job attempt, `python -m codexw.runner JOB`.

It starts codex in its own process group, streams its --json events into the log,
keeps the TEMP report current, enforces the timeout and kill requests by
signalling the whole group, writes the final report and records the outcome,
then fills the slot it frees. It imports only codexw.core and the standard
library: it must start fast and stay small while codex runs.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from codexw.core import envfile, gitdelta, lifecycle, paths, process, scheduler
from codexw.core.codex import (
    RunSummary,
    auto_skip_git_check,
    build_argv,
    build_prompt,
    is_transient,
)
from codexw.core.errors import CodexwError
from codexw.core.lifecycle import Ending
from codexw.core.models import TOKEN_KEYS, Job, JobState
from codexw.core.store import Store

PROGRESS_INTERVAL = 1.0
LINGER_LIMIT = 900.0  # stay around this long at most to start a retry whose backoff is due
RECORD_RETRY_LIMIT = 900.0  # keep trying this long to record an outcome (disk full)

_stop_signal: int | None = None


def _on_signal(signum: int, _frame: object) -> None:
    # Only record it; the main loop acts (circus-style).
    global _stop_signal
    _stop_signal = signum


def _prompt_file(directory: os.PathLike[str], text: str) -> BinaryIO:
    """An anonymous 0600 file holding the prompt, codex's stdin (tempfile costs ~1 MB RSS)."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    except (AttributeError, OSError):
        path = os.path.join(directory, f".prompt-{os.getpid()}-{os.urandom(4).hex()}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.unlink(path)
    prompt = os.fdopen(fd, "w+b")
    prompt.write(text.encode("utf-8", "surrogateescape"))
    prompt.seek(0)
    return prompt


class Runner:
    """One codex run. The hooks `log_file`, `on_started`, `flush`, `stop_requested` and
    `kill_ending` are where the registry is touched; a Celery worker overrides them to
    run a job without a registry (codexw.backends.worker_run)."""

    def __init__(self, store: Store, job: Job) -> None:
        self.store = store
        self.job = job
        self.summary = RunSummary()
        self.git_before: gitdelta.Snapshot | None = None
        self.log_fd = -1
        self.codex: subprocess.Popen[bytes] | None = None
        self.last_flush = 0.0
        self.warmed = False
        self.ended_elsewhere = False
        self.dirty = False
        self.log_path: Path | None = None

    # -- start -------------------------------------------------------------------------

    def start_codex(self) -> str | None:
        """Spawn codex; returns why it could not start, or None."""
        spec = self.job.spec
        env = self.codex_env()
        if env is None:
            return (f"the environment of the command that launched job {self.job.id} is gone"
                    f" ({envfile.env_path(spec.env_key or '')}); retry it by hand")
        if spec.resume_of is not None and self.store is not None:
            self.summary.usage_baseline = usage_before(self.store, spec.resume_of)
        if auto_skip_git_check(spec):
            self.summary.warnings.append(
                f"note: {spec.cwd} is not in a git repository; codexw passed --skip-git-repo-check"
            )
        log = self.log_file()
        try:
            self.log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            stderr_fd = os.open(
                log.with_suffix(".stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
        except OSError as exc:
            return f"cannot open the event log {log}: {exc.strerror or exc}"
        try:
            prompt = _prompt_file(log.parent, build_prompt(spec.task))
        except OSError as exc:
            os.close(stderr_fd)
            return f"cannot write the prompt for codex in {log.parent}: {exc.strerror or exc}"
        if os.path.isdir(spec.cwd):
            self.git_before = gitdelta.snapshot(spec.cwd)
        with prompt:
            try:
                self.codex = subprocess.Popen(
                    build_argv(spec),
                    stdin=prompt,
                    stdout=subprocess.PIPE,
                    stderr=stderr_fd,
                    cwd=spec.cwd,
                    env=env,
                    start_new_session=True,  # its own process group: we signal the group
                    preexec_fn=process.set_parent_death_signal,
                    close_fds=True,
                )
            except FileNotFoundError as exc:
                if not os.path.isdir(spec.cwd):
                    return f"working directory {spec.cwd} does not exist"
                return f"codex not found: {spec.codex_bin} ({exc.strerror})"
            except PermissionError as exc:
                return f"codex is not executable: {spec.codex_bin} ({exc.strerror})"
            except OSError as exc:
                return f"codex could not be started: {spec.codex_bin} ({exc.strerror})"
            finally:
                os.close(stderr_fd)
        self.on_started(log)
        return None

    def codex_env(self) -> dict[str, str] | None:
        """codex's environment: that of the command that launched the job (whoever fills
        its slot: cron's cleanup, another job's runner), or None if it is gone."""
        spec = self.job.spec
        if spec.env_key is not None:
            env = envfile.load(spec.env_key)
            if env is None:
                return None
        else:  # a job queued before launch environments were kept, or a remote one
            env = dict(os.environ)
            if spec.path_env:
                env["PATH"] = spec.path_env
        # Marks codex's group as this job's, so reconcile can tell it from a reused pgid.
        env.update(process.job_marker(self.job.id, str(paths.state_dir().resolve())))
        if spec.codex_home:
            env["CODEX_HOME"] = spec.codex_home
        return env

    def log_file(self) -> Path:
        """`<id>.jsonl`; if that name is taken (by a job of an earlier registry with the
        same id), `<id>.<key>.jsonl`: a job's log is never shared. Chosen once."""
        if self.log_path is None:
            path = lifecycle.log_path(self.job.id)
            if self.job.job_key and os.path.lexists(path):
                path = path.with_name(f"{self.job.id}.{self.job.job_key}.jsonl")
            self.log_path = path
        return self.log_path

    def on_started(self, log: Path) -> None:
        assert self.codex is not None
        with self.store.transaction():
            marked = self.store.owns(self.job.id, self.job.job_key) and self.store.mark_running(
                self.job.id, os.getpid(), self.codex.pid, time.time()
            )
            if marked:
                self.store.set_paths(self.job.id, None, str(log))
                self.job = self.store.get_job(self.job.id)
        # Not marked: another command ended this job (cancel, kill) as codex started,
        # or the registry no longer holds it; stop codex at once.
        self.ended_elsewhere = not marked
        self.flush(force=True)

    def stop_requested(self) -> bool:
        return _stop_signal is not None or self.ended_elsewhere

    # -- run ---------------------------------------------------------------------------

    def run(self, wakeup_fd: int) -> Ending:
        assert self.codex is not None and self.codex.stdout is not None
        spec = self.job.spec
        out_fd = self.codex.stdout.fileno()
        os.set_blocking(out_fd, False)
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        eof = False
        exited_at: float | None = None
        while True:
            now = time.monotonic()
            if self.stop_requested():
                return self.stop(self.kill_ending())
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
                    # Split in linear time, however long a line gets (issue 12, 11).
                    self.summary.feed_bytes(chunk)
                    self.dirty = True
                    if self.summary.turn_ended and not self.warmed:
                        # The last event: codex is exiting. Load Jinja2 meanwhile,
                        # not earlier (it would add ~9 MB while codex runs).
                        self.warmed = True
                        lifecycle.warm_final_report(self.job)
            self.flush()
        self.summary.end_of_stream()
        # Nothing of the group may outlive the run.
        if process.group_exists(self.codex.pid):
            process.terminate_group(self.codex.pid, spec.kill_grace, reap=[self.codex])
        return self.outcome(self.codex.returncode)

    def kill_ending(self) -> Ending:
        job = self.store.get_job(self.job.id)
        name = signal.Signals(_stop_signal).name if _stop_signal else "a signal"
        why = "killed by `codexw kill`" if job.kill_requested else f"runner received {name}"
        return Ending(JobState.KILLED, why)

    def stop(self, ending: Ending) -> Ending:
        assert self.codex is not None
        process.terminate_group(self.codex.pid, self.job.spec.kill_grace, reap=[self.codex])
        try:
            self.codex.wait(timeout=self.job.spec.kill_grace + 5)
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
            self.summary.feed_bytes(rest)  # continues the line run() was reading
        self.summary.end_of_stream()

    log_lost = 0  # bytes of the event stream the log could not take (disk full)
    log_error: str | None = None

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
        if s.turn_failed or s.error:
            reason = s.error or "the turn failed"
            return Ending(JobState.FAILED, reason, code, is_transient(reason))
        if code is not None and code < 0:
            return Ending(
                JobState.FAILED, f"codex was killed by {signal.Signals(-code).name}", code, False
            )
        return Ending(
            JobState.FAILED, f"codex exited with status {code}{self.stderr_tail()}", code, False
        )

    def stderr_tail(self) -> str:
        path = self.log_file().with_suffix(".stderr.log")
        try:
            with path.open("rb") as fh:
                fh.seek(max(0, path.stat().st_size - 300))
                tail = fh.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return f": {tail[-1]}" if tail else ""

    # -- progress ----------------------------------------------------------------------

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self.dirty or now - self.last_flush < PROGRESS_INTERVAL):
            return
        self.last_flush = now
        self.dirty = False
        lifecycle.record_progress(self.store, self.job, self.summary)

    # -- end ---------------------------------------------------------------------------

    def note_changed_files(self) -> None:
        """Add what `git status` saw change to the files the event stream reported."""
        cwd = self.job.spec.cwd
        known = {os.path.normpath(os.path.join(cwd, p)) for p in self.summary.files}
        for path, kind in gitdelta.changed_files(self.git_before, cwd).items():
            if os.path.normpath(os.path.join(cwd, path)) not in known:
                self.summary.files[path] = kind

    def finish(self, ending: Ending) -> None:
        if self.codex is not None:
            self.note_changed_files()
        ended_at = time.time()
        if self.log_lost:
            lost = (f"event log incomplete: {self.log_lost} bytes not written to"
                    f" {self.log_file()} ({self.log_error or 'short write'})")
            ending.reason = f"{ending.reason}; {lost}" if ending.reason else lost
        job = self.store.find_job(self.job.id)
        if job is None or job.job_key != self.job.job_key:
            job = self.job  # the registry lost this job: the report still gets written
        job.state = ending.state
        job.ended_at = ended_at
        job.exit_code = ending.exit_code
        job.reason = ending.reason
        final, problem = lifecycle.write_final_report(job, self.summary if self.codex else None)
        if problem:
            ending.reason = f"{ending.reason}; {problem}" if ending.reason else problem
        self.record(job, ending, ended_at, final)
        if self.log_fd >= 0:
            os.close(self.log_fd)


    def record(self, job: Job, ending: Ending, ended_at: float, final: Path | None) -> None:
        """Record the outcome. A registry that cannot be written right now (disk full,
        I/O error) is tried again for a while: this runner is alive, so nobody marks
        the job lost meanwhile, and the outcome lands as soon as there is room."""
        give_up = time.monotonic() + RECORD_RETRY_LIMIT
        delay = 0.5
        while True:
            try:
                with self.store.transaction():
                    recorded, _ = lifecycle.record_end(
                        self.store, job, ending, ended_at=ended_at, summary=self.summary,
                        report_path=str(final) if final else None,
                    )
                    if recorded and final is None:  # no report anywhere: not even the TEMP
                        self.store.set_report_path(job.id, None)
                if not recorded and final is not None and self.store.owns(job.id, job.job_key):
                    # Someone else ended this very attempt and wrote its report: ours,
                    # which we just created, is the duplicate. A registry that no longer
                    # holds the attempt proves nothing: our report stays.
                    final.unlink(missing_ok=True)
                return
            except CodexwError as exc:
                if time.monotonic() >= give_up:
                    raise
                try:
                    sys.stderr.write(f"codexw runner: job {job.id} not recorded yet: {exc}\n")
                    sys.stderr.flush()
                except OSError:
                    pass
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


def usage_before(store: Store, job_id: int | None) -> dict[str, int]:
    """Tokens the earlier runs of a resumed conversation used (codex reports the total)."""
    total = dict.fromkeys(TOKEN_KEYS, 0)
    seen: set[int] = set()
    while job_id is not None and job_id not in seen:
        seen.add(job_id)
        earlier = store.find_job(job_id)
        if earlier is None:
            break
        for key in TOKEN_KEYS:
            total[key] += earlier.tokens.get(key, 0)
        job_id = earlier.spec.resume_of
    return total


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: list[str]) -> int:
    job_id = int(argv[1])
    job_key = argv[2] if len(argv) > 2 else None
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    wake_r = _wakeup_pipe()
    store = Store.open()
    me = os.getpid()
    with store.transaction():
        adopted = store.adopt(job_id, me, process.create_time(me), job_key)
    if not adopted:
        return 0  # the claim was given back or someone else runs it: nothing to do
    while True:
        run_one(store, job_id, wake_r)
        if _stop_signal is not None:
            break
        # The slot this job freed goes first to a fork of this process (no new Python
        # start, Jinja2 already loaded); other free slots get new runners.
        taken = scheduler.fill_slots(store, take_one=True).taken
        if taken is None:
            break
        forked = _fork_for(store, taken, wake_r)
        if forked is None:
            return 0  # this process ran its one job; the child runs the next
        store, wake_r = forked
        job_id = taken.id
    linger(store)
    return 0


def _wakeup_pipe(replaces: int | None = None) -> int:
    """A pipe the signal handler's wake-up writes to, so select() returns at once. A
    forked child makes its own and closes the one it inherited (`replaces`, the read end):
    fds must not pile up over a long batch of forks."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    old_w = signal.set_wakeup_fd(wake_w)
    for fd in (replaces, old_w if replaces is not None else None):
        if fd is not None and fd >= 0:
            os.close(fd)
    return wake_r


def _fork_for(store: Store, job: Job, wake_r: int) -> tuple[Store, int] | None:
    """Give the claimed `job` a process of its own, forked from this one.

    Each job keeps its own PID, so a signal for one job (`codexw kill`, `kill PID`)
    can never reach the next one this slot runs. In the child: returns its own store
    (SQLite connections must not cross a fork) and wake-up pipe once it has adopted the
    job. Here: returns None once the child has adopted it (or died trying); a stop that
    arrived meanwhile was meant for the job that just ended: the claim is given back."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # no flag set between check and fork
    try:
        if _stop_signal is not None:
            _give_back(store, job)
            return None
        store.close()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        _give_back(Store.open(), job)
        return None
    if pid:  # this process: its job is recorded; wait until the child has adopted
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        os.close(ready_w)
        select.select([ready_r], [], [], 30.0)
        os.close(ready_r)
        return None
    # The child: the stop flag was unset at the fork and signals pending for the parent
    # are not inherited, so nothing meant for the ended job reaches this one.
    os.close(ready_r)
    process.forget_children()  # the parent's runners are not this process's children
    wake_r = _wakeup_pipe(replaces=wake_r)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _redirect_output(job.id)
    try:
        child_store = Store.open()
        me = os.getpid()
        with child_store.transaction():
            adopted = child_store.adopt(job.id, me, process.create_time(me), job.job_key)
    finally:
        os.close(ready_w)
    if not adopted:
        os._exit(0)
    return child_store, wake_r


def _give_back(store: Store, job: Job) -> None:
    with store.transaction():
        store.unclaim(job.id)
    scheduler.fill_slots(store)


def _redirect_output(job_id: int) -> None:
    """The runner's own stdout/stderr go to the job's `.runner.log`, as a spawned one's."""
    try:
        fd = os.open(lifecycle.log_path(job_id).with_suffix(".runner.log"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)


def run_one(store: Store, job_id: int, wake_r: int) -> None:
    """Run one adopted job to its recorded end."""
    runner = Runner(store, store.get_job(job_id))
    if _stop_signal is not None or runner.job.kill_requested:
        ending = runner.kill_ending()
    else:
        try:
            problem = runner.start_codex()
            ending = Ending(JobState.FAILED, problem) if problem else runner.run(wake_r)
        except (OSError, CodexwError) as exc:
            # Unforeseen trouble of this machine (its traceback could be lost on a full
            # disk): the job fails with the reason, it does not vanish into `lost`.
            if runner.codex is not None and process.group_exists(runner.codex.pid):
                process.terminate_group(runner.codex.pid, runner.job.spec.kill_grace,
                                        reap=[runner.codex])
            ending = Ending(JobState.FAILED, f"the runner failed: {exc}")
    runner.finish(ending)


def linger(store: Store) -> None:
    """Start retries whose backoff runs out soon, since no daemon will. The registry is
    read again every few seconds: a retry cancelled meanwhile ends the wait."""
    give_up = time.time() + LINGER_LIMIT
    while _stop_signal is None:
        due = store.next_due(time.time())
        if due is None or due > give_up:
            return
        time.sleep(min(max(0.0, due - time.time()), 5.0))
        if time.time() >= due:
            scheduler.fill_slots(store)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
