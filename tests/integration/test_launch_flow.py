"""launch → runner → events → report rename → registry → status/wait, with real processes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.conftest import Env, wait_until


def test_launch_returns_at_once_and_job_succeeds_with_final_report(cx: Env) -> None:
    out = cx.ok("launch", "@fake sleep 0.5\nadd a --verbose flag")
    assert re.search(r"job 1\s+pid \d+", out.stdout)
    assert "_TEMP_1_codex_task.md" in out.stdout
    temp = Path(out.stdout.split("report ", 1)[1].splitlines()[0])
    assert temp.exists()

    waited = cx.run("wait", "1")
    assert waited.returncode == 0, waited.stderr
    assert "job 1 succeeded" in waited.stdout

    job = cx.job(1)
    assert job["state"] == "succeeded"
    assert job["level"] == "low" and job["type"] == "workers"
    final = Path(job["report_path"])
    assert final.name == f"{final.name[:15]}_{job['runner_pid']}_codex_task.md"
    assert final.exists() and not temp.exists()
    assert not list(final.parent.glob("*_TEMP_*"))
    text = final.read_text()
    assert "**Reasoning Level:** low" in text
    assert "`sleep 0.5` → exit 0" in text
    assert "## Task Summary" in text  # the agent's final message
    assert job["tokens"] == {
        "input_tokens": 100, "cached_input_tokens": 10, "output_tokens": 20,
        "reasoning_output_tokens": 5,
    }


def test_codex_gets_level_sandbox_approval_and_task_on_stdin(cx: Env) -> None:
    task = "hostile $(touch pwned) `id`; rm -rf / 'quote' \"dq\"\n" + "x" * 200_000
    cx.ok("launch", "--level", "high", "--model", "gpt-test", "-f", "-", input=task)
    assert cx.run("wait", "1").returncode == 0
    (run,) = cx.fake_runs()
    assert run["config"]["model_reasoning_effort"] == "high"
    assert run["config"]["approval_policy"] == "never"
    assert run["sandbox"] == "workspace-write"
    assert run["model"] == "gpt-test"
    assert run["argv"][-1] == "-"  # the task came on stdin, not on argv
    assert run["prompt"].startswith(task)
    assert all(task[:50] not in arg for arg in run["argv"])
    assert not (cx.project / "pwned").exists()


def test_seed_positional_form_sets_level_and_type(cx: Env) -> None:
    cx.ok("launch", "high", "research", "compare three SQLite migration tools")
    assert cx.run("wait", "1").returncode == 0
    job = cx.job(1)
    assert (job["level"], job["type"]) == ("high", "research")
    report = Path(job["report_path"])
    assert report.parent == cx.project / ".codexw" / "research"
    assert report.read_text().startswith("# Research Report")


def test_failed_run_records_reason_and_wait_exits_1(cx: Env) -> None:
    cx.ok("launch", "@fake fail auth")
    waited = cx.run("wait", "1")
    assert waited.returncode == 1
    job = cx.job(1)
    assert job["state"] == "failed"
    assert "401 Unauthorized" in job["reason"]
    assert job["exit_code"] == 1


def test_exit_status_without_event_is_the_reason(cx: Env) -> None:
    cx.ok("launch", "@fake crash")
    assert cx.run("wait", "1").returncode == 1
    job = cx.job(1)
    assert job["state"] == "failed"
    assert "exited with status 3" in job["reason"]
    assert "something broke badly" in job["reason"]


def test_codex_missing_is_refused_at_launch_and_records_nothing(cx: Env) -> None:
    (cx.bin_dir / "codex").unlink()
    proc = cx.run("launch", "do something", env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "codex not found" in proc.stderr and "doctor" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (cx.state / "codexw.db").exists() or not cx.db().execute(
        "SELECT COUNT(*) FROM jobs").fetchone()[0]


def test_codex_that_cannot_start_fails_plainly(cx: Env) -> None:
    cx.launch("x")  # job 1 works; now make the binary non-executable for job 2
    assert cx.run("wait", "1").returncode == 0
    broken = cx.tmp / "broken-codex"
    broken.write_text("not a program")
    broken.chmod(0o755)
    cx.ok("launch", "x", env={"CODEXW_CODEX_BIN": str(broken)})
    assert cx.run("wait", "2").returncode == 1
    job = cx.job(2)
    assert job["state"] == "failed"
    assert "could not be started" in job["reason"] or "not executable" in job["reason"]
    assert Path(job["report_path"]).exists()


def test_unknown_events_and_garbage_lines_do_not_break_the_runner(cx: Env) -> None:
    cx.ok("launch", "@fake unknown-events\n@fake events 300")
    assert cx.run("wait", "1").returncode == 0
    job = cx.job(1)
    assert job["state"] == "succeeded"
    text = Path(job["report_path"]).read_text()
    assert "`echo 299` → exit 0" in text
    assert "Model metadata" in text  # the error item is a warning, not a failure


def test_timeout_kills_the_whole_group_even_if_term_is_ignored(cx: Env) -> None:
    cx.ok("launch", "--timeout", "1s", "@fake grandchild\n@fake ignore-term\n@fake sleep 60")
    assert cx.run("wait", "1").returncode == 1
    job = cx.job(1)
    assert job["state"] == "timed_out"
    grandchildren = [int(p.name.split(".")[1]) for p in cx.fake_state.glob("grandchild.*")]
    assert grandchildren
    for pid in grandchildren:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_kill_stops_tree_and_finalizes_report(cx: Env) -> None:
    info = cx.launch("@fake grandchild\n@fake sleep 60")
    wait_until(lambda: cx.job(1)["state"] == "running" and list(cx.fake_state.glob("grandchild.*")),
               what="job 1 running")
    pgid = cx.job(1)["codex_pgid"]
    out = cx.ok("kill", "1")
    assert "killed" in out.stdout
    job = cx.job(1)
    assert job["state"] == "killed"
    assert "codexw kill" in job["reason"]
    assert not Path(info["report_path"]).exists()  # TEMP gone
    assert Path(job["report_path"]).exists()
    assert _group_members(pgid) == []


def _group_members(pgid: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(name))
    return members


def test_status_lists_latest_jobs_and_filters(cx: Env) -> None:
    for task, kind in (("a", "workers"), ("b", "research"), ("@fake fail 500", "workers")):
        cx.ok("launch", "--type", kind, task)
    assert cx.run("wait", "1", "2", "3").returncode == 1
    table = cx.ok("status").stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "STATE", "LEVEL"]
    assert len(table.splitlines()) == 4
    failed = json.loads(cx.ok("status", "--json", "--state", "failed").stdout)
    assert [j["id"] for j in failed["jobs"]] == [3]
    research = json.loads(cx.ok("status", "--json", "--research").stdout)
    assert [j["id"] for j in research["jobs"]] == [2]
    latest = json.loads(cx.ok("status", "--json", "--latest", "2").stdout)
    assert [j["id"] for j in latest["jobs"]] == [3, 2]
    assert failed["version"] == 1


def test_logs_render_commands_and_messages(cx: Env) -> None:
    cx.ok("launch", "@fake write made.txt")
    assert cx.run("wait", "1").returncode == 0
    out = cx.ok("logs", "1").stdout
    assert "echo hi > made.txt" in out and "exit 0" in out
    assert "Task Summary" in out
    raw = cx.ok("logs", "1", "--raw").stdout
    assert all(json.loads(line)["type"] for line in raw.splitlines() if line.strip().startswith("{"))
    assert (cx.project / "made.txt").read_text() == "hi\n"


def test_logs_follow_ends_when_job_ends(cx: Env) -> None:
    cx.ok("launch", "@fake sleep 1\n@fake message all done")
    out = cx.ok("logs", "1", "-f", timeout=60).stdout
    assert "sleep 1" in out and "all done" in out


def test_codex_gets_the_launching_path_whoever_starts_the_job(cx: Env) -> None:
    cx.ok("launch", "@fake sleep 0.5\nfirst")
    marked = f"{cx.tmp / 'marker-bin'}{os.pathsep}{cx.env['PATH']}"
    # Job 2 waits for job 1; job 1's runner (launched with the usual PATH) starts it.
    cx.ok("launch", "--after", "1", "second", env={"PATH": marked})
    assert cx.run("wait", "2").returncode == 0
    runs = {r["prompt"].split("\n---")[0].splitlines()[-1]: r for r in cx.fake_runs()}
    assert runs["second"]["path"] == marked
    assert runs["first"]["path"] == cx.env["PATH"]
