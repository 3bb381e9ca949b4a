"""Process faults, with real processes: a runner or a codex wrapper killed with SIGKILL,
a codex that ignores SIGTERM, PID reuse, and a simulated machine restart.

Every test ends with the `cx` fixture's check that no process of the test survives.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Env, processes_with_env, wait_until
from tests.faults.helpers import alive, fake_pids, group_members, status_json, wait_running


def _report_is_final(job: dict) -> Path:
    report = Path(job["report_path"])
    assert report.exists(), job
    assert "_TEMP_" not in report.name
    assert not list(report.parent.glob(f"*_TEMP_{job['id']}_*"))
    return report


@pytest.mark.slow
def test_runner_sigkill_kills_codex_group_marks_lost_finalizes_report_and_retries(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.launch(f"@fake grandchild\n@fake ignore-term\n@fake wait-for {gate}", "--retries", "1")
    job = wait_running(cx, 1, also="grandchild")
    pgid = job["codex_pgid"]
    assert len(group_members(pgid)) >= 2  # codex and its grandchild
    grandchildren = fake_pids(cx, "grandchild")

    os.kill(job["runner_pid"], signal.SIGKILL)
    wait_until(lambda: not alive(job["runner_pid"]), what="the runner to die")
    # codex ignores the SIGTERM its parent-death signal brings: reconcile is the backstop.
    lost = cx.job(1)
    assert lost["state"] == "lost"
    assert f"runner (pid {job['runner_pid']})" in lost["reason"]
    assert not group_members(pgid), "a process of the killed runner's codex group survived"
    assert not any(alive(p) for p in grandchildren)
    report = _report_is_final(lost)
    assert "lost" in report.read_text()

    # The retry is a new attempt, with its own report; it runs to the end.
    retry = cx.job(2)
    assert (retry["retry_of"], retry["attempt"]) == (1, 2)
    gate.touch()
    assert cx.run("wait", "1", timeout=120).returncode == 0
    assert cx.job(2)["state"] == "succeeded"


@pytest.mark.slow
def test_parent_death_signal_stops_codex_without_any_codexw_command(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.launch(f"@fake wait-for {gate}")
    job = wait_running(cx, 1)
    os.kill(job["runner_pid"], signal.SIGKILL)
    # No codexw command runs here: PR_SET_PDEATHSIG alone must end codex.
    wait_until(lambda: not group_members(job["codex_pgid"]), timeout=30,
               what="codex to die with its runner")
    assert cx.job(1)["state"] == "lost"


@pytest.mark.slow
def test_node_wrapper_killed_with_sigkill_runner_ends_the_whole_group(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.launch(f"@fake wrapper\n@fake grandchild\n@fake ignore-term\n@fake wait-for {gate}")
    job = wait_running(cx, 1, also="grandchild")
    wait_until(lambda: fake_pids(cx, "native"), what="the wrapper's native child")
    pgid = job["codex_pgid"]
    (native,) = fake_pids(cx, "native")
    assert alive(native) and os.getpgid(native) == pgid

    os.kill(pgid, signal.SIGKILL)  # the wrapper only; its native child keeps running
    waited = cx.run("wait", "1", timeout=120)
    assert waited.returncode == 1
    ended = cx.job(1)
    assert ended["state"] == "failed"
    assert "SIGKILL" in ended["reason"]
    wait_until(lambda: not group_members(pgid), timeout=15, what="the group to be empty")
    assert not alive(native)
    assert not any(alive(p) for p in fake_pids(cx, "grandchild"))
    _report_is_final(ended)


@pytest.mark.slow
def test_timeout_escalates_to_sigkill_when_codex_and_grandchild_ignore_sigterm(cx: Env) -> None:
    # kill_grace is 3s in the test config.
    cx.ok("launch", "--timeout", "1s", "@fake grandchild\n@fake ignore-term\n@fake sleep 120")
    assert cx.run("wait", "1", timeout=120).returncode == 1
    job = cx.job(1)
    assert job["state"] == "timed_out"
    assert "timed out after 1s" in job["reason"]
    assert job["duration"] >= 1 + 3 - 0.5  # the grace period was given
    assert job["duration"] < 60
    wait_until(lambda: not group_members(job["codex_pgid"]), timeout=15, what="empty group")
    assert not any(alive(p) for p in fake_pids(cx, "grandchild"))
    _report_is_final(job)


@pytest.mark.slow
def test_kill_escalates_to_sigkill_when_codex_ignores_sigterm(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.launch(f"@fake grandchild\n@fake ignore-term\n@fake wait-for {gate}")
    job = wait_running(cx, 1, also="grandchild")
    out = cx.ok("kill", "1", timeout=120)
    assert "killed" in out.stdout
    ended = cx.job(1)
    assert ended["state"] == "killed"
    wait_until(lambda: not group_members(job["codex_pgid"]), timeout=15, what="empty group")
    assert not any(alive(p) for p in fake_pids(cx, "grandchild"))
    _report_is_final(ended)


BYSTANDER = """
import signal, sys, time
log = sys.argv[1]
def note(signum, frame):
    with open(log, "a") as fh:
        fh.write(signal.Signals(signum).name + "\\n")
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
          signal.SIGUSR2, signal.SIGCONT):
    signal.signal(s, note)
open(log + ".ready", "w").close()
while True:
    time.sleep(1)
"""


def test_reused_runner_pid_and_codex_pgid_are_never_signalled_and_job_is_lost(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.launch(f"@fake wait-for {gate}")
    job = wait_running(cx, 1)
    # Everything of the job dies at once (as in a crash or a reboot)...
    os.kill(job["runner_pid"], signal.SIGKILL)
    os.killpg(job["codex_pgid"], signal.SIGKILL)
    wait_until(lambda: not alive(job["runner_pid"]) and not group_members(job["codex_pgid"]),
               what="the job's processes to die")
    # ...and its numbers come back as an unrelated process: a group leader in its own
    # session, with another start time, that records every catchable signal.
    log = cx.tmp / "bystander.log"
    bystander = subprocess.Popen(
        [sys.executable, "-c", BYSTANDER, str(log)], start_new_session=True,
        env={"PATH": os.environ["PATH"]},
    )
    try:
        wait_until(lambda: Path(f"{log}.ready").exists(), what="the bystander")
        with sqlite3.connect(cx.state / "codexw.db") as db:
            start = db.execute("SELECT runner_start FROM jobs WHERE id = 1").fetchone()[0]
            db.execute(
                "UPDATE jobs SET runner_pid = ?, runner_start = ?, codex_pgid = ? WHERE id = 1",
                (bystander.pid, start - 3600.0, bystander.pid),
            )
        lost = cx.job(1)
        assert lost["state"] == "lost"
        assert "already ended (lost), nothing to stop" in cx.ok("kill", "1").stdout
        assert bystander.poll() is None, "the bystander was killed"
        assert not log.exists(), f"the bystander got signals: {log.read_text()}"
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.slow
def test_machine_restart_every_process_killed_next_command_recovers_and_resumes(cx: Env) -> None:
    gate = cx.tmp / "gate"
    tasks = "\n".join(f"@fake grandchild; @fake wait-for {gate}; task {i}" for i in range(5))
    out = cx.ok("batch", "-", "-j", "2", "--detach", "--json", "--retries", "1", input=tasks)
    bid = json.loads(out.stdout)["batch_id"]

    def running() -> list[dict]:
        jobs = status_json(cx, "--batch", str(bid))["jobs"]
        return [j for j in jobs if j["state"] == "running" and j["codex_pgid"]]

    victims = wait_until(lambda: len(running()) == 2 and running(), what="2 running")
    wait_until(lambda: len(fake_pids(cx, "grandchild")) == 2, what="2 grandchildren")
    # "Power off": every runner, codex and grandchild dies at the same instant.
    marker = f"CODEXW_STATE_DIR={cx.state}"
    before = processes_with_env(marker)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in before), what="every process to die")

    # "Power on": the next command, whatever it is, puts the registry right.
    after = {j["id"]: j for j in status_json(cx, "--batch", str(bid))["jobs"]}
    for victim in victims:
        assert after[victim["id"]]["state"] == "lost"
        assert "ended without recording an outcome" in after[victim["id"]]["reason"]
        _report_is_final(after[victim["id"]])
    gate.touch()
    assert cx.run("wait", "--batch", str(bid), timeout=300).returncode == 0
    rows = cx.db().execute(
        "SELECT id, state, retry_of, report_path FROM jobs WHERE batch_id = ?", (bid,)
    ).fetchall()
    assert sum(r["state"] == "succeeded" for r in rows) == 5
    assert sorted(r["retry_of"] for r in rows if r["retry_of"]) == sorted(v["id"] for v in victims)
    assert all(Path(r["report_path"]).exists() for r in rows)
    assert not list((cx.project / ".codexw" / "workers").glob("*_TEMP_*"))
    assert not any(alive(p) for p in before)
