"""`kill ID` stops the job's chain of attempts, as `wait ID` follows it: a failed job
whose retry is queued (or already running) does not go on retrying."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Env, wait_until
from tests.faults.helpers import status_json


@pytest.mark.parametrize("retry", ["queued", "running"])
def test_kill_of_a_failed_job_stops_its_pending_retry(cx: Env, retry: str) -> None:
    gate = cx.tmp / "gate"  # never opened: a retry that starts holds until killed
    # A long backoff keeps the retry queued (longer than a runner lingers to start a
    # due retry, so none waits for it); a short one lets it start.
    backoff = {"queued": "20m", "running": "0.2s"}[retry]
    env = {"CODEXW_BACKOFF_BASE": backoff, "CODEXW_BACKOFF_MAX": backoff}
    cx.ok("launch", "--retries", "3", f"@fake fail-first 1 500\n@fake wait-for {gate}", env=env)

    def retried() -> dict | None:
        jobs = {j["id"]: j for j in status_json(cx, "--all")["jobs"]}
        if 2 in jobs and jobs[1]["state"] == "failed" and jobs[2]["state"] == retry:
            return jobs[2]
        return None

    wait_until(retried, timeout=60, what=f"job 1 failed with its retry {retry}")

    killed = cx.run("kill", "--json", "1", env=env)
    assert killed.returncode == 0, killed.stderr
    results = {r["job_id"]: r for r in json.loads(killed.stdout)["jobs"]}
    assert results[1]["after"] == "failed"  # what it was: an ended attempt stays as it ended
    assert results[2]["after"] == {"queued": "cancelled", "running": "killed"}[retry], results

    # Nothing of the chain runs or waits any more, and no further attempt appears.
    final = cx.run("wait", "--json", "1", timeout=60)
    assert json.loads(final.stdout)["jobs"][0]["id"] == 2
    jobs = status_json(cx, "--all")["jobs"]
    assert sorted(j["id"] for j in jobs) == [1, 2]
    assert all(j["state"] in ("failed", "cancelled", "killed") for j in jobs), jobs


def test_kill_of_a_queued_job_with_a_free_slot_cancels_it_without_starting_it(cx: Env) -> None:
    """A job can sit queued with a slot free for a moment (its launcher has not filled
    the slot yet). `kill` must cancel it, not start it first and then stop it."""
    import time

    from codexw.core import lifecycle
    from codexw.core.models import JobSpec
    from codexw.core.store import Store

    spec = JobSpec(task="never to run", level="low", type="workers", cwd=str(cx.project),
                   project=str(cx.project), codex_bin="codex")
    with Store.open() as store, store.transaction():
        job_id = lifecycle.queue_with_report(store, spec, time.time())
    done = cx.run("kill", "--json", str(job_id))
    assert done.returncode == 0, done.stderr
    assert cx.job(job_id)["state"] == "cancelled"
    assert cx.fake_runs() == []
