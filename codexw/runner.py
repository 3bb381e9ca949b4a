"""The local backend's runner: `python -m codexw.runner JOB KEY`, one process per job.

It adopts its job in the registry, runs codex (core.run.CodexRun) with a sink that
records progress in the registry and the TEMP report, and records the outcome with
its final report (lifecycle.finalize). Then it fills the slot it freed with a fork of
itself, so each job has its own PID. It imports only codexw.core and the standard
library: it must start fast and stay small while codex runs.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from codexw.core import envfile, lifecycle, naming, paths, process, scheduler
from codexw.core.codex import RunSummary
from codexw.core.codexbin import CodexProgram
from codexw.core.errors import CodexwError
from codexw.core.lifecycle import Ending
from codexw.core.models import Job, JobState

if TYPE_CHECKING:
    from codexw.core.worktree import Prepared
from codexw.core.run import STOP_SIGNALS, CodexRun, StopRequest, codex_env
from codexw.core.store import Store


class RegistrySink:
    """A local run's reports: progress and the TEMP report, through the registry."""

    def __init__(self, store: Store, job: Job, stop: StopRequest) -> None:
        self.store = store
        self.job = job
        self.stop = stop
        self.log_path: Path | None = None

    def log_file(self) -> Path:
        """`<id>.jsonl`; if that name is taken (by a job of an earlier registry with the
        same id), `<id>.<key>.jsonl`: a job's log is never shared. Chosen once."""
        if self.log_path is None:
            path = lifecycle.log_path(self.job.id)
            if self.job.job_key and os.path.lexists(path):
                path = path.with_name(naming.job_log(self.job.id, self.job.job_key))
            self.log_path = path
        return self.log_path

    def on_started(self, codex_pid: int, program: CodexProgram) -> bool:
        with self.store.transaction():
            marked = self.store.owns(self.job.id, self.job.job_key) and self.store.mark_running(
                self.job.id, os.getpid(), codex_pid, time.time(), program.describe()
            )
            if marked:
                self.store.set_paths(self.job.id, None, str(self.log_file()))
                self.job = self.store.get_job(self.job.id)
        # Not marked: another command ended this job (cancel, kill) as codex started,
        # or the registry no longer holds it; the run stops codex at once.
        return marked

    def on_progress(self, summary: RunSummary, changed: bool) -> None:
        if changed:
            lifecycle.record_progress(self.store, self.job, summary)

    def stop_requested(self) -> bool:
        return self.stop.requested

    def kill_ending(self) -> Ending:
        job = self.store.find_job(self.job.id)
        if job is not None and job.kill_requested:
            return Ending(JobState.KILLED, "killed by `codexw kill`")
        return Ending(JobState.KILLED, f"runner received {self.stop.name}")

    def on_turn_ended(self) -> None:
        # codex is exiting: load Jinja2 meanwhile, not earlier (~9 MB while codex runs).
        lifecycle.warm_final_report(self.job)


def launch_env(job: Job) -> dict[str, str] | None:
    """The environment of the command that launched `job` (core.envfile), or None if
    its file is gone. Jobs recorded before it was kept get this process's, with the
    recorded PATH."""
    spec = job.spec
    if spec.env_key is not None:
        return envfile.load(spec.env_key)
    env = dict(os.environ)
    if spec.path_env:
        env["PATH"] = spec.path_env
    return env


def run_one(store: Store, job_id: int, stop: StopRequest, wake_r: int) -> None:
    """Run one adopted job to its recorded end."""
    job = store.get_job(job_id)
    sink = RegistrySink(store, job, stop)
    if stop.requested or job.kill_requested:
        lifecycle.finalize(store, job, sink.kill_ending(), None)
        return
    base = launch_env(job)
    if base is None:
        why = (f"the environment of the command that launched job {job.id} is gone"
               f" (from {envfile.env_dir()}); retry it by hand")
        lifecycle.finalize(store, job, Ending(JobState.FAILED, why), None)
        return
    marker = process.job_marker(job.id, str(paths.state_dir().resolve()))
    env = codex_env(base, job.spec, marker)
    spec = job.spec
    prep = None
    if spec.isolation == "worktree":
        from codexw.core import worktree  # only isolated jobs load it

        prep = worktree.prepare(job, env, sink.stop_requested)
        if prep.branch and (prep.branch, prep.path) != (spec.branch, spec.worktree):
            with store.transaction():
                store.set_worktree(job.id, prep.branch, prep.path, job.job_key)
            sink.job = job = store.get_job(job.id)
        _log_steps(sink, prep.events)
        if prep.problem or prep.stopped:
            setup = RunSummary()
            setup.feed_bytes(b"".join(prep.events))
            setup.end_of_stream()
            setup.warnings.extend(prep.notes)
            ending = (sink.kill_ending() if prep.stopped
                      else Ending(JobState.FAILED, prep.problem))
            lifecycle.finalize(store, job, ending, setup)
            return
        spec = replace(spec, cwd=prep.cwd)  # codex runs in the worktree; the job stays the project's
    run = CodexRun(spec, sink, env)
    if job.spec.resume_of is not None:
        run.summary.usage_baseline = lifecycle.usage_before(store, job.spec.resume_of)
    if prep is not None:
        run.summary.feed_bytes(b"".join(prep.events))  # the setup steps, then codex's
        run.summary.warnings.extend(prep.notes)
    ending = run.wrap_up(run.execute(wake_r))
    if prep is not None:
        _commit_worktree(store, sink, prep, ending, run.summary)
    lifecycle.finalize(store, sink.job, ending, run.summary if run.codex or prep else None)


def _log_steps(sink: RegistrySink, events: list[bytes]) -> None:
    """codexw's own steps (worktree, copies, setup) go first in the job's event log."""
    if not events:
        return
    try:
        fd = os.open(sink.log_file(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return
    try:
        os.write(fd, b"".join(events))
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit_worktree(store: Store, sink: RegistrySink, prep: Prepared, ending: Ending,
                     summary: RunSummary) -> None:
    """Commit what the agent left in the worktree on the job's branch (whatever the
    ending: a killed job's work stays inspectable) and record how many files changed."""
    from codexw.core import worktree

    job = sink.job
    if job.spec.dirty_base:
        summary.warnings.append(
            "the main tree had uncommitted changes when this job was launched: they are"
            " not in its worktree (--include-dirty carries them over)")
    try:
        done = worktree.commit(job, prep, ending.state.value)
    except CodexwError as exc:
        problem = f"changes not committed on {prep.branch}: {exc.message}"
        ending.reason = f"{ending.reason}; {problem}" if ending.reason else problem
        return
    try:
        with store.transaction():
            store.set_files_changed(job.id, done.files_changed, job.job_key)
        sink.job = store.get_job(job.id)
    except CodexwError:
        pass


def main(argv: list[str]) -> int:
    job_id = int(argv[1])
    job_key = argv[2] if len(argv) > 2 else None
    stop = StopRequest()
    stop.install()
    # Whatever mask the spawner had (a command caught between two jobs), a runner
    # must hear its stop signals.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    wake_r = _wakeup_pipe()
    store = Store.open()
    me = os.getpid()
    with store.transaction():
        adopted = store.adopt(job_id, me, process.create_time(me), job_key)
    if not adopted:
        return 0  # the claim was given back or someone else runs it: nothing to do
    while True:
        run_one(store, job_id, stop, wake_r)
        if stop.requested:
            # The stop was meant for the job that just ended (`kill PID` stops a job
            # politely): the slot it freed goes to a new runner, as a kill's would.
            scheduler.fill_slots(store)
            break
        # The slot this job freed goes first to a fork of this process (no new Python
        # start, Jinja2 already loaded), which takes the next job with a PID of its own;
        # this process leaves. Other free slots get new runners.
        store, wake_r, forked = _fork(store, stop, wake_r)
        if not forked:  # a stop meant for the job that ended, or no fork possible
            scheduler.fill_slots(store)
            break
        taken = scheduler.fill_slots(store, take_one=True).taken
        if taken is None:
            break
        job_id = taken.id
        _redirect_output(job_id)
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


def _fork(store: Store, stop: StopRequest, wake_r: int) -> tuple[Store, int, bool]:
    """Hand the rest of this slot's work to a fork of this process, which returns here
    as (its own store, its own wake-up pipe, True); this process leaves at once.

    Each job keeps its own PID, so a signal for one job (`codexw kill`, `kill PID`)
    can never reach the next one this slot runs. SQLite connections must not cross a
    fork: the store is closed first and the child opens its own. A stop that arrived
    is meant for the job that just ended: no fork, (store, wake_r, False)."""
    # Stop signals are blocked from the last look at the stop request to the fork (one
    # landing in between would be lost to both processes); the mask is restored on
    # every path that goes on, or runners spawned from here would inherit it.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    pid: int | None = None
    try:
        if not stop.requested:
            store.close()
            pid = os.fork()
    except OSError:
        pid = None
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    if pid is None:
        return (Store.open() if not stop.requested else store), wake_r, False
    if pid:
        # This process ran its one job. It leaves without the interpreter's teardown,
        # which nothing here needs and which cost a batch tens of ms of CPU per job.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    # The child: signals pending for the parent are not inherited, so nothing meant
    # for the ended job reaches this one.
    process.forget_children()  # the parent's runners are not this process's children
    wake_r = _wakeup_pipe(replaces=wake_r)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    try:
        child_store = Store.open()
    except (CodexwError, OSError):
        os._exit(1)  # nothing claimed yet: the slot is filled by the next command
    return child_store, wake_r, True


def _redirect_output(job_id: int) -> None:
    """The runner's own stdout/stderr go to the job's `.runner.log`, as a spawned one's."""
    try:
        fd = os.open(paths.logs_dir() / naming.runner_log(job_id),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
