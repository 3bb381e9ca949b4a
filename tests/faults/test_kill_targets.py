"""A kill reaches only the job it names, whatever the runner that ran it does meanwhile.

A runner whose job ends fills its slot with the next queued job. If that were the
same process, a `codexw kill 1` that read job 1's runner PID just before job 1 ended
would signal it after it moved on to job 2, and stop job 2. Each job runs in a
process of its own (forked from the warm runner), so the late signal finds nobody.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from codexw.core import process
from tests.conftest import Env, processes_with_env, wait_until
from tests.faults.helpers import alive, wait_running


def test_late_kill_of_an_ended_job_never_stops_the_next_job_of_its_slot(cx: Env) -> None:
    config = Path(cx.env["CODEXW_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + "max_parallel = 1\n")
    first_gate, second_gate = cx.tmp / "gate1", cx.tmp / "gate2"
    cx.launch(f"first\n@fake wait-for {first_gate}")
    cx.launch(f"second\n@fake wait-for {second_gate}")
    first = wait_running(cx, 1)
    pid = first["runner_pid"]
    # What `codexw kill 1` read before job 1 ended: the runner and its start time.
    start = process.create_time(pid)
    first_gate.touch()
    second = wait_running(cx, 2)
    assert second["runner_pid"] != pid, "jobs 1 and 2 share a process: a kill of 1 reaches 2"
    # The kill's signal lands now, after job 1 ended and job 2 started.
    process.signal_pid(pid, signal.SIGTERM, start)
    wait_until(lambda: not alive(pid), what="job 1's runner to be gone")
    second_gate.touch()
    assert cx.run("wait", "2").returncode == 0
    assert cx.job(2)["state"] == "succeeded"
    assert cx.job(1)["state"] == "succeeded"


def test_every_job_of_a_reused_slot_has_its_own_pid_in_status_and_report_name(cx: Env) -> None:
    proc = cx.run("batch", "-", "-j", "1", "--json", input="one\ntwo\nthree\nfour\n")
    assert proc.returncode == 0, proc.stderr
    assert cx.run("wait", "--batch", "1").returncode == 0
    jobs = [cx.job(i) for i in range(1, 5)]
    pids = [j["runner_pid"] for j in jobs]
    assert len(set(pids)) == 4, pids
    for job in jobs:
        name = Path(job["report_path"]).name
        assert f"_{job['runner_pid']}_codex_task.md" in name, name


def test_a_runner_waiting_to_start_a_retry_leaves_once_the_retry_is_cancelled(cx: Env) -> None:
    # A runner lingers to start a retry whose backoff runs out soon (no daemon will);
    # when that retry is cancelled meanwhile, it has nothing to wait for.
    env = {"CODEXW_BACKOFF_BASE": "90s", "CODEXW_BACKOFF_MAX": "90s"}
    cx.ok("launch", "--retries", "1", "@fake fail 500", env=env)
    wait_until(lambda: cx.job(1)["state"] == "failed", what="the first attempt to fail")
    marker = f"CODEXW_STATE_DIR={cx.state}"
    lingering = processes_with_env(marker)  # the runner's fork, waiting for the retry
    assert lingering, "a runner should linger for the retry due in 90 s"
    assert cx.job(2)["state"] == "queued"
    cx.ok("kill", "2")
    assert cx.job(2)["state"] == "cancelled"
    wait_until(lambda: not any(alive(pid) for pid in lingering), timeout=30,
               what="the lingering runner to leave")


def test_forked_runners_do_not_pile_up_open_files_over_a_batch(cx: Env) -> None:
    gates = [cx.tmp / f"gate{i}" for i in range(1, 7)]
    tasks = "\n".join(json.dumps({"task": f"task {i}\n@fake wait-for {gate}"})
                      for i, gate in enumerate(gates, 1))
    proc = cx.run("batch", "-", "--format", "jsonl", "-j", "1", "--detach", input=tasks + "\n")
    assert proc.returncode == 0, proc.stderr
    open_files = []
    for i, gate in enumerate(gates, 1):
        job = wait_running(cx, i)
        open_files.append(len(os.listdir(f"/proc/{job['runner_pid']}/fd")))
        gate.touch()
    assert cx.run("wait", "--batch", "1").returncode == 0
    # The first runner was spawned, the others forked one from the next.
    assert len(set(open_files[1:])) == 1, open_files


def test_the_pid_launch_prints_is_the_one_status_shows_and_the_report_carries(cx: Env) -> None:
    gate = cx.tmp / "gate"
    printed = cx.launch(f"named by its runner\n@fake wait-for {gate}")
    running = wait_running(cx, printed["job_id"])
    assert running["runner_pid"] == printed["runner_pid"]
    assert alive(printed["runner_pid"])  # something a user can `ps -p` while it runs
    gate.touch()
    assert cx.run("wait", str(printed["job_id"])).returncode == 0
    name = Path(cx.job(printed["job_id"])["report_path"]).name
    assert re.fullmatch(rf"\d{{8}}_\d{{6}}_{printed['runner_pid']}_codex_task\.md", name), name


def test_a_stop_between_two_jobs_leaves_no_signal_blocked_anywhere(cx: Env) -> None:
    """A runner whose job ended forks the process that takes the next job; a stop that
    lands then is meant for the ended job, so there is no fork and a new runner gets
    the slot. Stop signals are blocked around that check: they must be unblocked again
    on every path, or the runners (and codexes) started from there on could not be
    stopped politely."""
    from codexw import runner
    from codexw.core.run import StopRequest
    from codexw.core.store import Store

    config = Path(cx.env["CODEXW_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + "max_parallel = 1\n")
    gate = cx.tmp / "gate"
    cx.launch(f"first\n@fake wait-for {gate}")
    wait_running(cx, 1)
    second_gate = cx.tmp / "gate2"
    cx.launch(f"second, after the first\n@fake wait-for {second_gate}")
    store = Store.open()
    stop = StopRequest()
    stop.signum = signal.SIGTERM  # it landed as the first job ended
    wake_r, wake_w = os.pipe()
    try:
        _, _, forked = runner._fork(store, stop, wake_r)
        left_blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        os.close(wake_r)
        os.close(wake_w)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # whatever happened: pytest goes on
    assert not forked and left_blocked == set()
    assert cx.job(2)["state"] == "queued"  # waiting for the slot
    gate.touch()
    second = wait_running(cx, 2)
    for pid in (second["runner_pid"], second["codex_pgid"]):
        blocked = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("SigBlk:")]
        assert blocked == ["SigBlk:\t0000000000000000"], (pid, blocked)
    second_gate.touch()
    assert cx.run("wait", "1", "2").returncode == 0
