"""Idle commands stay idle: `status --watch` and `wait` with nothing happening use
(almost) no CPU, and reading the registry neither takes its write lock nor wakes
anyone. Real processes, CPU time from /proc."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

from tests.conftest import Env, wait_until
from tests.faults.helpers import Terminal, codexw_argv, stat_fields, wait_running

WINDOW_S = 3.0
# Generous: 2 cores shared by many test processes. Before the fix `status --watch`
# spun at ~100% of a core (about 3 s of CPU in this window).
CPU_BOUND_S = 0.3
# Times a process went to sleep and was woken (voluntary context switches): independent
# of machine load. An idle waiter wakes about once a second at most; before the fix a
# `wait` beside `status --watch` was woken by each of its thousands of refreshes.
WAKEUP_BOUND = 30


def cpu_seconds(pid: int) -> float:
    fields = stat_fields(pid)
    assert fields is not None, f"process {pid} is gone"
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def listening(cx: Env, pid: int) -> bool:
    """The command made its wake-up FIFO: it is past start-up, in its waiting loop."""
    folder = cx.state / "notify"
    return folder.exists() and any(p.name.startswith(f"{pid}.") for p in folder.iterdir())


def wakeups(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/PID/status")


def usage_over_window(pids: list[int], terminal: Terminal) -> dict[int, tuple[float, int]]:
    """(CPU seconds, wake-ups) of each process over the window, reading the terminal
    meanwhile: a full pty would block a spinning writer and hide the spin."""
    before = {pid: (cpu_seconds(pid), wakeups(pid)) for pid in pids}
    deadline = time.monotonic() + WINDOW_S
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([terminal.master], [], [], left)
        if ready:
            try:
                os.read(terminal.master, 65536)
            except OSError:
                break
    return {
        pid: (cpu_seconds(pid) - before[pid][0], wakeups(pid) - before[pid][1]) for pid in pids
    }


def too_busy(usage: dict[str, tuple[float, int]]) -> dict[str, tuple[float, int]]:
    return {
        name: (round(cpu, 2), woken)
        for name, (cpu, woken) in usage.items()
        if cpu >= CPU_BOUND_S or woken >= WAKEUP_BOUND
    }


def test_idle_status_watch_and_wait_use_almost_no_cpu(cx: Env) -> None:
    # `status --watch` with no jobs at all, on a real terminal (rich's live table).
    watch = Terminal(codexw_argv("status", "--watch"), cx)
    waiter: subprocess.Popen[bytes] | None = None
    try:
        watch.read_until(b"STATE")
        wait_until(lambda: listening(cx, watch.proc.pid), what="status --watch to listen")
        used = usage_over_window([watch.proc.pid], watch)[watch.proc.pid]
        busy = too_busy({"status --watch": used})
        assert not busy, f"(CPU seconds, wake-ups) in {WINDOW_S}s with no jobs: {busy}"

        # A `wait` on a job that runs for a while, with the watch beside it.
        gate = cx.tmp / "gate"
        cx.launch(f"@fake wait-for {gate}")
        wait_running(cx, 1)
        waiter = subprocess.Popen(
            codexw_argv("wait", "1"), cwd=cx.project, env=cx.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: listening(cx, waiter.pid), what="wait to listen")
        used_by = usage_over_window([watch.proc.pid, waiter.pid], watch)
        busy = too_busy({"status --watch": used_by[watch.proc.pid], "wait": used_by[waiter.pid]})
        assert not busy, f"(CPU seconds, wake-ups) in {WINDOW_S}s beside a running job: {busy}"

        gate.touch()
        assert waiter.wait(timeout=60) == 0  # and it still wakes when the job ends
    finally:
        if waiter is not None and waiter.poll() is None:
            waiter.kill()
            waiter.wait()
        watch.proc.terminate()
        watch.wait()
        watch.hang_up()
