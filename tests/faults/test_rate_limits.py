"""Rate limits with real processes: fake codexes that really ask a mock model server
holding a shared limit (at most K streams in flight, 429 above, as the real API),
against the registry's per-account limiter (AIMD, cool-down, budgets, the waker)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import Env, processes_with_env, wait_until
from tests.e2e.mock_responses import Message, MockResponses
from tests.faults.helpers import status_json


@pytest.fixture
def server(cx: Env) -> Iterator[MockResponses]:
    with MockResponses() as srv:
        cx.env["FAKE_CODEX_BASE_URL"] = srv.base_url
        yield srv


def _rows(cx: Env, query: str) -> list[sqlite3.Row]:
    db = cx.db()
    db.row_factory = sqlite3.Row
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def _starts_in_cool_downs(cx: Env) -> list[tuple[int, float]]:
    """(job, claim time) of every start inside a cool-down of its account."""
    cool = [(r["account"], r["at"], r["at"] + r["seconds"]) for r in _rows(
        cx, "SELECT * FROM account_events WHERE kind = '429' AND seconds > 0")]
    bad = []
    for job in _rows(cx, "SELECT id, account, claimed_at FROM jobs WHERE claimed_at IS NOT NULL"):
        for account, begin, end in cool:
            if job["account"] == account and begin < job["claimed_at"] < end:
                bad.append((job["id"], job["claimed_at"]))
    return bad


def test_a_batch_at_j6_against_a_limit_of_two_streams_succeeds_with_few_429s(
    cx: Env, server: MockResponses
) -> None:
    server.limit_in_flight = 2
    server.default = Message("done", hold=0.8)
    tasks = "\n".join(f"@fake http ;task {i}" for i in range(12))
    proc = cx.run("batch", "-", "-j", "6", "--retries", "5", input=tasks + "\n", timeout=240,
                  env={"CODEXW_RATE_LIMIT_BACKOFF": "2s"})  # the default
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "12 succeeded, 0 failed of 12" in proc.stdout, proc.stdout
    assert ": rate-limited at " in proc.stdout  # the progress display said it as it happened

    latest = {j["id"]: j for j in status_json(cx, "--all")["jobs"]}
    ended = [j for j in latest.values() if j["state"] == "failed"]
    # Every failed attempt was a 429, ended as rate-limited and requeued for free.
    assert all(j["reason"].startswith("rate-limited: ") for j in ended), ended
    assert server.rejected == len(ended)
    print(f"429s: {server.rejected}, attempts: {len(latest)}")
    assert server.rejected <= 8, f"{server.rejected} 429s: the limiter did not adapt"
    assert max(j["attempt"] - j["rate_limited"] for j in latest.values()) == 1  # no --retries used
    assert _starts_in_cool_downs(cx) == []


def test_a_rate_limited_job_is_requeued_without_retries_and_does_not_halt_its_batch(
    cx: Env,
) -> None:
    tasks = "@fake fail-first 1 429\n@fake sleep 0.2 ;one\n"
    proc = cx.run("batch", "-", "-j", "1", "--halt-on-failure", input=tasks + "two\n",
                  env={"CODEXW_RATE_LIMIT_BACKOFF": "0.3s"}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = {j["id"]: j for j in status_json(cx, "--all")["jobs"]}
    first = jobs[1]
    assert first["state"] == "failed" and first["reason"].startswith("rate-limited: 429") is False
    assert first["reason"].startswith("rate-limited: exceeded retry limit"), first["reason"]
    retry = [j for j in jobs.values() if j["retry_of"] == 1][0]
    assert retry["state"] == "succeeded" and retry["rate_limited"] == 1
    assert retry["max_attempts"] == 2  # --retries 0, and the free one
    assert jobs[2]["state"] == "succeeded"  # the batch was not halted


def test_rate_limit_retries_run_out(cx: Env) -> None:
    env = {"CODEXW_RATE_LIMIT_BACKOFF": "0.1s", "CODEXW_RATE_LIMIT_RETRIES": "2"}
    cx.ok("launch", "@fake fail 429", env=env)
    assert cx.run("wait", "1", timeout=120).returncode == 1
    jobs = status_json(cx, "--all")["jobs"]
    assert sorted(j["state"] for j in jobs) == ["failed"] * 3  # 1 + 2 free attempts
    assert max(j["rate_limited"] for j in jobs) == 2


def test_starts_are_spaced_by_max_starts_per_minute(cx: Env) -> None:
    env = {"CODEXW_MAX_STARTS_PER_MINUTE": "120"}  # one start every 0.5 s
    proc = cx.run("batch", "-", "-j", "4", input="a\nb\nc\nd\n", env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    starts = sorted(r["claimed_at"] for r in _rows(cx, "SELECT claimed_at FROM jobs"))
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 4 and min(gaps) >= 0.49, gaps


def test_a_spent_token_window_holds_starts_and_the_waker_resumes_them(cx: Env) -> None:
    # An "hour" of 3 s: the fake codex reports 120 tokens a run, the budget is 100.
    env = {"CODEXW_MAX_TOKENS_PER_HOUR": "100", "CODEXW_BUDGET_WINDOWS": "3,86400"}
    cx.ok("launch", "first", env=env)
    assert cx.run("wait", "1").returncode == 0
    cx.ok("launch", "second", env=env)
    view = status_json(cx)
    second = next(j for j in view["jobs"] if j["id"] == 2)
    assert second["state"] == "queued" and second["waiting"] == "budget", second
    (account,) = view["accounts"]
    assert account["budget_spent"] and account["budget_until"] is not None
    assert view["waker"] is not None and view["waker"]["until"] is not None
    # Nobody else runs: the waker starts job 2 when the window frees.
    marker = f"CODEXW_STATE_DIR={cx.state}"
    wait_until(lambda: cx.job(2)["state"] == "succeeded", timeout=60, what="the waker to start 2")
    first = cx.job(1)
    assert cx.job(2)["started_at"] >= first["ended_at"] + 3.0
    wait_until(lambda: not processes_with_env(marker), timeout=30, what="the waker to leave")


def test_a_batch_token_budget_stops_starting_its_jobs(cx: Env) -> None:
    proc = cx.run("batch", "-", "-j", "1", "--budget-tokens", "200", "--json",
                  input="a\nb\nc\nd\n", timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    jobs = {j["id"]: j for j in status_json(cx, "--all")["jobs"]}
    assert [jobs[i]["state"] for i in (1, 2)] == ["succeeded", "succeeded"]
    for i in (3, 4):
        assert jobs[i]["state"] == "cancelled"
        assert jobs[i]["started_at"] is None
        assert "token budget" in jobs[i]["reason"], jobs[i]["reason"]
    assert json.loads(proc.stdout)["unstarted"] == [3, 4]


def _wakers(cx: Env) -> list[int]:
    marker = f"CODEXW_STATE_DIR={cx.state}"
    found = []
    for pid in processes_with_env(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"codexw.core.waker" in fh.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def test_one_waker_per_state_dir_whoever_asks_and_it_leaves_when_nothing_waits(cx: Env) -> None:
    env = {"CODEXW_BACKOFF_BASE": "60s", "CODEXW_BACKOFF_MAX": "60s"}
    cx.ok("launch", "--retries", "1", "@fake fail 500", env=env)
    wait_until(lambda: cx.job(1)["state"] == "failed", what="the first attempt to fail")
    assert cx.job(2)["state"] == "queued" and cx.job(2)["waiting"] == "after"
    wait_until(lambda: _wakers(cx), what="a waker for the retry due in 60 s")
    # Every command fills slots and asks for a waker: still one.
    procs = [subprocess.Popen([sys.executable, "-m", "codexw", "status"], cwd=cx.project,
                              env=cx.env, stdout=subprocess.DEVNULL) for _ in range(6)]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    (pid,) = _wakers(cx)
    waker = status_json(cx)["waker"]
    assert waker["pid"] == pid and waker["until"] == pytest.approx(cx.job(2)["not_before"])
    cx.ok("kill", "2")
    wait_until(lambda: not _wakers(cx), timeout=30, what="the waker to leave")
    assert status_json(cx)["waker"] is None
