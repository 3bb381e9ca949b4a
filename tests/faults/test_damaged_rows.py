"""A registry row that cannot be read never takes codexw down: reconcile ends that job
`lost` with the reason, listings show what they can, other jobs go on. The rows are
written with raw sqlite3, as a bug, an older codexw or a hand edit could leave them."""

from __future__ import annotations

import json
import subprocess
import time

from tests.conftest import Env
from tests.faults.helpers import status_json


def _reaped_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _insert(cx: Env, **values: object) -> int:
    row: dict[str, object] = {
        "state": "queued", "task": "damaged", "level": "low", "type": "workers",
        "sandbox": "workspace-write", "cwd": str(cx.project), "project": str(cx.project),
        "codex_bin": "codex", "kill_grace": 3.0, "backoff_base": 0.2, "backoff_max": 1.0,
        "queued_at": time.time(),
    }
    row.update(values)
    with cx.db() as conn:
        cur = conn.execute(
            f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
        return int(cur.lastrowid)  # type: ignore[arg-type]


def test_damaged_rows_end_lost_and_every_command_still_works(cx: Env) -> None:
    cx.ok("status")  # creates the registry
    running = _insert(  # a runner that died, leaving a row nothing can map
        cx, state="running", codex_args="not json", input_tokens="9" * 40,
        runner_pid=_reaped_pid(), runner_start=12.5, started_at=time.time(),
    )
    queued = _insert(cx, codex_args='{"not": "a list"}')  # would start with bogus args
    unknown = _insert(cx, state="exploded")  # a state this codexw does not know

    listed = cx.ok("status", "--all")
    assert "Traceback" not in listed.stderr
    jobs = {j["id"]: j for j in status_json(cx, "--all")["jobs"]}
    for job_id in (running, queued, unknown):
        assert jobs[job_id]["state"] == "lost", jobs[job_id]
        assert "registry row could not be read" in jobs[job_id]["reason"], jobs[job_id]
    assert "codex_args" in jobs[running]["reason"] and "input_tokens" in jobs[running]["reason"]
    assert "codex_args" in jobs[queued]["reason"]
    assert "exploded" in jobs[unknown]["reason"]
    assert cx.job(running)["state"] == "lost"

    with cx.db() as conn:  # recorded, not just shown: the job never runs, never retries
        states = dict(conn.execute("SELECT id, state FROM jobs").fetchall())
    assert states[running] == "lost" and states[queued] == "lost"
    assert not cx.fake_runs()

    # Other work is untouched.
    new = cx.launch("after the damage")["job_id"]
    waited = cx.run("wait", "--json", str(new))
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["jobs"][0]["state"] == "succeeded"
    assert cx.run("wait", str(running)).returncode == 1  # lost: a failure, not a crash
