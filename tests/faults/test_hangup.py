"""The terminal closes (SIGHUP) after or during `launch`, or during a foreground `batch`:
the jobs go on and finish. Each test runs codexw in a real pseudo-terminal whose
session leader gets the kernel's SIGHUP when the master side is closed."""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import sys

import pytest

from tests.conftest import Env, wait_until
from tests.faults.helpers import Terminal, codexw_argv, status_json, wait_running

pytestmark = pytest.mark.slow


def _session(pid: int) -> int:
    return os.getsid(pid)


def test_terminal_closed_right_after_launch_job_goes_on_and_finishes(cx: Env) -> None:
    gate = cx.tmp / "gate"
    shell = (shlex.join(codexw_argv("launch", f"@fake wait-for {gate}")) + "; exec "
             + shlex.join([sys.executable, "-c", "import time; time.sleep(600)"]))
    term = Terminal(["/bin/sh", "-c", shell], cx)
    term.read_until(b"report ")
    job = wait_running(cx, 1)
    assert _session(job["runner_pid"]) != _session(term.proc.pid)
    term.hang_up()
    assert term.wait() == -signal.SIGHUP  # the terminal's session really got SIGHUP
    assert cx.job(1)["state"] == "running"
    gate.touch()
    assert cx.run("wait", "1", timeout=120).returncode == 0


def test_terminal_closed_while_launch_is_recording_it_still_completes(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.ok("status")  # create the registry
    # Hold the registry's write lock so that launch is caught in the middle.
    lock = sqlite3.connect(cx.state / "codexw.db", isolation_level=None, timeout=60)
    lock.execute("BEGIN IMMEDIATE")
    try:
        term = Terminal(codexw_argv("launch", f"@fake wait-for {gate}"), cx)
        db = str(cx.state / "codexw.db")

        def has_registry_open() -> bool:
            try:
                fds = os.listdir(f"/proc/{term.proc.pid}/fd")
            except OSError:
                return False
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{term.proc.pid}/fd/{fd}") == db:
                        return True
                except OSError:
                    continue
            return False

        wait_until(has_registry_open, what="launch to open the registry")
        term.hang_up()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    term.wait(timeout=120)
    # What launch started, it finished: the job is recorded and runs.
    job = wait_running(cx, 1)
    assert job["report_path"]
    gate.touch()
    assert cx.run("wait", "1", timeout=120).returncode == 0


def test_terminal_closed_during_foreground_batch_jobs_go_on_and_finish(cx: Env) -> None:
    gate = cx.tmp / "gate"
    tasks = cx.project / "tasks.txt"
    tasks.write_text("\n".join(f"@fake wait-for {gate}; task {i}" for i in range(4)) + "\n")
    term = Terminal(codexw_argv("batch", str(tasks), "-j", "2"), cx)
    term.read_until(b"batch 1")

    def running() -> int:
        return sum(j["state"] == "running" for j in status_json(cx, "--batch", "1")["jobs"])

    wait_until(lambda: running() == 2, what="2 jobs running")
    term.hang_up()
    term.wait(timeout=60)
    gate.touch()
    # The two queued jobs are started by the runners that free their slots.
    assert cx.run("wait", "--batch", "1", timeout=180).returncode == 0
    states = [j["state"] for j in status_json(cx, "--batch", "1")["jobs"]]
    assert states == ["succeeded"] * 4
