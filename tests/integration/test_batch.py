"""Bounded-parallel batches, priorities, dependencies and retries, with real processes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import Env, wait_until


def _batch(cx: Env, name: str, content: str, *args: str, ok: bool = True):  # type: ignore[no-untyped-def]
    path = cx.project / name
    path.write_text(content)
    proc = cx.run("batch", str(path), *args)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_batch_never_exceeds_max_parallel_and_reaches_it(cx: Env) -> None:
    tasks = "\n".join(f"@fake sleep 0.6 ;task {i}" for i in range(8))
    proc = _batch(cx, "tasks.txt", tasks + "\n# a comment\n\n", "-j", "3")
    assert "batch 1 done: 8 succeeded, 0 failed of 8" in proc.stdout
    assert cx.max_running() == 3
    assert len(cx.fake_runs()) == 8


def test_detached_batch_from_stdin_then_wait_and_status(cx: Env) -> None:
    out = cx.ok("batch", "-", "-j", "2", "--detach", "--json", input="a\nb\nc\n")
    data = json.loads(out.stdout)
    assert data["job_ids"] == [1, 2, 3] and data["max_parallel"] == 2
    assert cx.run("wait", "--batch", str(data["batch_id"])).returncode == 0
    jobs = json.loads(cx.ok("status", "--json", "--batch", "1").stdout)["jobs"]
    assert sorted(j["state"] for j in jobs) == ["succeeded"] * 3
    assert cx.max_running() <= 2


def test_jsonl_per_task_fields_priority_and_after(cx: Env) -> None:
    lines = [
        {"task": "@fake sleep 0.3\nfirst", "name": "first", "level": "high"},
        {"task": "low prio", "priority": -5},
        {"task": "high prio", "priority": 10, "type": "research"},
        {"task": "needs first", "after": "first", "model": "m2"},
    ]
    _batch(cx, "t.jsonl", "\n".join(json.dumps(x) for x in lines), "-j", "1")
    runs = cx.fake_runs()
    order = [r["prompt"].split("\n---")[0].splitlines()[-1] for r in runs]
    # j=1: job 1 is started at submit time (highest priority among startable... all queued
    # at once: priority 10 first), then first (0), then needs-first (0, after first), low prio.
    assert order.index("high prio") < order.index("low prio")
    assert order.index("first") < order.index("needs first")
    assert order[-1] == "low prio"
    by_prompt = {r["prompt"].split("\n---")[0].splitlines()[-1]: r for r in runs}
    assert by_prompt["first"]["config"]["model_reasoning_effort"] == "high"
    assert by_prompt["needs first"]["model"] == "m2"


def test_toml_batch(cx: Env) -> None:
    content = '[[task]]\ntask = "one"\nname = "a"\n\n[[task]]\ntask = "two"\nafter = ["a"]\ntimeout = "5m"\n'
    _batch(cx, "t.toml", content, "-j", "2")
    jobs = json.loads(cx.ok("status", "--json").stdout)["jobs"]
    assert {j["state"] for j in jobs} == {"succeeded"}
    assert [j["timeout"] for j in sorted(jobs, key=lambda j: j["id"])] == [None, 300.0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"task": "ok"}\n{"task": "x", "colour": "red"}\n', "line 2: unknown key 'colour'"),
        ("bad.jsonl", '{"task": "ok"}\nnot json\n', "line 2: not valid JSON"),
        ("bad.jsonl", '{"task": "a", "level": "HIGH"}\n', "line 1: unknown level 'HIGH'"),
        ("bad.jsonl", '{"task": "a", "after": "nobody"}\n', "which no task of"),
        ("bad.jsonl", '{"task": "a", "name": "x", "after": "y"}\n{"task": "b", "name": "y", "after": "x"}\n', "dependency cycle"),
        ("bad.toml", '[[task]]\ntask = "a"\nbogus = 1\n', "unknown key 'bogus'"),
        ("bad.txt", "\n# only comments\n", "no tasks found"),
        ("bad.jsonl", '{"task": "ok", "type": "../x"}\n', "invalid type name"),
    ],
)
def test_malformed_batch_is_refused_whole(cx: Env, name: str, content: str, message: str) -> None:
    proc = _batch(cx, name, content, ok=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    db = cx.state / "codexw.db"
    if db.exists():
        assert cx.db().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert not cx.reports()


def test_transient_failures_are_retried_with_growing_delays(cx: Env) -> None:
    (cx.tmp / "config" / "config.toml").write_text('backoff_base = "0.3s"\nkill_grace = "3s"\n')
    cx.ok("launch", "--retries", "3", "@fake fail-first 3 500")
    assert cx.run("wait", "1").returncode == 0
    rows = cx.db().execute("SELECT id, attempt, state, ended_at, queued_at, not_before, retry_of"
                           " FROM jobs ORDER BY id").fetchall()
    assert [r["state"] for r in rows] == ["failed", "failed", "failed", "succeeded"]
    assert [r["attempt"] for r in rows] == [1, 2, 3, 4]
    assert [r["retry_of"] for r in rows] == [None, 1, 2, 3]
    delays = [rows[i + 1]["not_before"] - rows[i]["ended_at"] for i in range(3)]
    assert delays[0] >= 0.3 and delays[1] >= 0.6 and delays[2] >= 1.2
    assert delays[0] < delays[1] < delays[2]
    # Every attempt keeps its own report.
    assert len({r[0] for r in cx.db().execute("SELECT report_path FROM jobs")}) == 4
    assert all(Path(r[0]).exists() for r in cx.db().execute("SELECT report_path FROM jobs"))


def test_permanent_failure_is_not_retried(cx: Env) -> None:
    cx.ok("launch", "--retries", "3", "@fake fail auth")
    assert cx.run("wait", "1").returncode == 1
    assert cx.db().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    assert len(cx.fake_runs()) == 1


def test_retries_stop_at_the_configured_count(cx: Env) -> None:
    cx.ok("launch", "--retries", "2", "@fake fail 500")
    assert cx.run("wait", "1").returncode == 1
    assert len(cx.fake_runs()) == 3
    states = [r[0] for r in cx.db().execute("SELECT state FROM jobs ORDER BY id")]
    assert states == ["failed"] * 3


def test_failed_dependency_cancels_dependents(cx: Env) -> None:
    lines = [{"task": "@fake fail auth", "name": "a"}, {"task": "b", "after": "a", "name": "b"},
             {"task": "c", "after": "b"}]
    proc = _batch(cx, "t.jsonl", "\n".join(json.dumps(x) for x in lines), ok=False)
    assert proc.returncode == 1
    rows = cx.db().execute("SELECT state, reason FROM jobs ORDER BY id").fetchall()
    assert [r["state"] for r in rows] == ["failed", "cancelled", "cancelled"]
    assert "dependency job 1 failed" in rows[1]["reason"]
    assert "dependency job 2 cancelled" in rows[2]["reason"]
    assert len(cx.fake_runs()) == 1


def test_launch_after_waits_for_success(cx: Env) -> None:
    cx.ok("launch", "@fake sleep 0.5\nfirst")
    second = cx.launch("second", "--after", "1")
    assert second["state"] == "queued"
    assert cx.run("wait", "2").returncode == 0
    first, dependent = cx.job(1), cx.job(2)
    assert dependent["started_at"] >= first["ended_at"]


def test_halt_on_failure_cancels_the_rest(cx: Env) -> None:
    tasks = "@fake fail auth\n" + "\n".join(f"later {i}" for i in range(4))
    proc = _batch(cx, "t.txt", tasks, "-j", "1", "--halt-on-failure", ok=False)
    assert proc.returncode == 1
    states = [r[0] for r in cx.db().execute("SELECT state FROM jobs ORDER BY id")]
    assert states == ["failed"] + ["cancelled"] * 4


def test_manual_retry_of_failed_batch_jobs(cx: Env) -> None:
    _batch(cx, "t.txt", "ok one\n@fake fail-first 1 auth\n", "-j", "2", ok=False)
    out = cx.ok("retry", "--failed", "--batch", "1", "--json")
    (pair,) = json.loads(out.stdout)["jobs"]
    assert pair["old_id"] == 2
    assert cx.run("wait", "--batch", "1").returncode == 0
    new = cx.job(pair["new_id"])
    assert new["retry_of"] == 2 and new["attempt"] == 2 and new["state"] == "succeeded"
    again = cx.run("retry", str(pair["new_id"]))
    assert again.returncode == 2 and "succeeded" in again.stderr


def test_kill_batch_stops_running_and_cancels_queued(cx: Env) -> None:
    out = cx.ok("batch", "-", "-j", "2", "--detach", "--json",
                input="\n".join("@fake sleep 60" for _ in range(5)))
    bid = json.loads(out.stdout)["batch_id"]
    wait_until(lambda: sum(j["state"] == "running" for j in json.loads(
        cx.ok("status", "--json", "--batch", str(bid)).stdout)["jobs"]) == 2, what="2 running")
    cx.ok("kill", "--batch", str(bid))
    states = sorted(j["state"] for j in json.loads(
        cx.ok("status", "--json", "--batch", str(bid)).stdout)["jobs"])
    assert states == ["cancelled"] * 3 + ["killed"] * 2
    assert cx.max_running() == 2


@pytest.mark.slow
def test_killing_every_runner_mid_batch_then_any_command_resumes(cx: Env) -> None:
    out = cx.ok("batch", "-", "-j", "2", "--detach", "--json", "--retries", "1",
                input="\n".join(f"@fake grandchild; @fake sleep 2; task {i}" for i in range(4)))
    bid = json.loads(out.stdout)["batch_id"]

    def running() -> list[dict]:
        jobs = json.loads(cx.ok("status", "--json", "--batch", str(bid)).stdout)["jobs"]
        return [j for j in jobs if j["state"] == "running"]

    victims = wait_until(lambda: len(running()) == 2 and running(), what="2 running")
    for job in victims:
        os.kill(job["runner_pid"], signal.SIGKILL)
    # Any command reconciles: the lost jobs are retried and the batch completes.
    assert cx.run("wait", "--batch", str(bid), timeout=120).returncode == 0
    rows = cx.db().execute("SELECT state, reason FROM jobs WHERE batch_id = ?", (bid,)).fetchall()
    lost = [r for r in rows if r["state"] == "lost"]
    assert len(lost) == 2 and all("runner" in r["reason"] for r in lost)
    assert sum(r["state"] == "succeeded" for r in rows) == 4
    assert cx.max_running() <= 2
    for job in victims:
        assert job["codex_pgid"]
        assert not _group_alive(job["codex_pgid"])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_two_concurrent_batches_and_launches_never_run_a_job_twice(cx: Env) -> None:
    import subprocess
    import sys

    procs = []
    for n in range(2):
        path = cx.project / f"b{n}.txt"
        path.write_text("\n".join(f"b{n} task {i}" for i in range(10)))
        procs.append(subprocess.Popen([sys.executable, "-m", "codexw", "batch", str(path), "-j", "3"],
                                      cwd=cx.project, env=cx.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    for i in range(6):
        procs.append(subprocess.Popen([sys.executable, "-m", "codexw", "launch", f"single {i}"],
                                      cwd=cx.project, env=cx.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    ids = [r[0] for r in cx.db().execute("SELECT id FROM jobs")]
    assert len(ids) == 26
    assert cx.run("wait", *map(str, ids)).returncode == 0
    prompts = [r["prompt"].split("\n---")[0] for r in cx.fake_runs()]
    assert len(prompts) == 26 and len(set(prompts)) == 26


def test_kill_fills_the_slot_it_frees_without_another_command(cx: Env) -> None:
    out = cx.ok("batch", "-", "-j", "1", "--detach", "--json",
                input="@fake sleep 60; first\n@fake sleep 0.2; second\n")
    first, second = json.loads(out.stdout)["job_ids"]

    def state(job_id: int) -> str:
        return cx.db().execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]

    wait_until(lambda: state(first) == "running", what="first job running")
    cx.ok("kill", str(first))
    # Only the registry is read from here on: no codexw command could fill the slot.
    wait_until(lambda: state(second) == "succeeded", what="second job started and done")
    assert state(first) == "killed"


def test_halt_on_failure_ignores_what_the_user_cancelled(cx: Env) -> None:
    out = cx.ok("batch", "-", "-j", "1", "--detach", "--json", "--halt-on-failure",
                input="@fake sleep 1; a\nb\nc\n")
    a, b, c = json.loads(out.stdout)["job_ids"]
    cx.ok("kill", str(b))  # queued: cancelled by the user, not a failure
    assert cx.run("wait", str(a), str(c)).returncode == 0
    states = dict(cx.db().execute("SELECT id, state FROM jobs").fetchall())
    assert (states[a], states[b], states[c]) == ("succeeded", "cancelled", "succeeded")
