"""What a new user trips over in the first hour (issue 14): commands that did the wrong
thing, filters that said nothing, conflicting flags, exit codes and wording."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.conftest import Env
from tests.faults.helpers import run_in_terminal


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- launch: what is a task ---------------------------------------------------------


def test_a_level_or_type_word_alone_is_no_task(cx: Env) -> None:
    for args in (["high"], ["high", "research"], ["research"]):
        proc = cx.run("launch", *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "no task given" in one_line(proc)
    assert not cx.db().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] if (
        cx.state / "codexw.db").exists() else True


def test_a_misspelt_level_suggests_the_closest(cx: Env) -> None:
    line = one_line(cx.run("launch", "hihg", "fix it"))
    assert "did you mean high?" in line
    line = one_line(cx.run("launch", "--level", "hihg", "fix it"))
    assert "did you mean high?" in line and "))" not in line


def test_the_task_is_read_from_a_pipe_when_none_is_given(cx: Env) -> None:
    out = cx.ok("launch", "high", input="@fake sleep 0.1\nsummarise the layout\n")
    assert re.search(r"job 1\s+pid \d+", out.stdout)
    assert "codexw wait 1" in out.stdout  # what to run next
    assert cx.run("wait", "1").returncode == 0
    job = cx.job(1)
    assert job["level"] == "high" and "summarise the layout" in job["task"]
    empty = cx.run("launch", input="  \n")
    assert empty.returncode == 2 and "no task given" in one_line(empty)


def test_after_a_failed_dependency_launch_says_why_and_exits_1(cx: Env) -> None:
    cx.ok("launch", "@fake exit 3\nfails")
    assert cx.run("wait", "1").returncode == 1
    proc = cx.run("launch", "--after", "1", "next step")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "(cancelled: dependency job 1 failed)" in proc.stdout
    assert "free slot" not in proc.stdout


def test_after_a_running_dependency_launch_says_it_waits_for_it(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.ok("launch", f"@fake wait-for {gate}\nfirst")
    proc = cx.ok("launch", "--after", "1", "second")
    assert re.search(r"\(queued: waiting for job 1 \((starting|running)\) to succeed\)",
                     proc.stdout), proc.stdout
    gate.touch()
    assert cx.run("wait", "2").returncode == 0


# -- wait ---------------------------------------------------------------------------


def test_wait_alone_waits_for_every_open_job_of_this_project(cx: Env) -> None:
    nothing = cx.ok("wait")
    assert "no open jobs" in nothing.stdout
    gate = cx.tmp / "gate"
    cx.ok("launch", f"@fake wait-for {gate}\none")
    cx.ok("launch", f"@fake wait-for {gate}\ntwo")
    held = cx.run("wait", "--timeout", "1s")
    assert held.returncode == 124
    assert "waiting for 2 open jobs of this project: 1, 2" in held.stdout
    gate.touch()
    assert cx.run("wait").returncode == 0  # whether they are still open by now or not
    assert [cx.job(i)["state"] for i in (1, 2)] == ["succeeded", "succeeded"]
    assert json.loads(cx.ok("wait", "--json").stdout)["jobs"] == []


def test_unknown_batches_and_ids_are_errors_everywhere(cx: Env) -> None:
    for args in (("wait", "--batch", "99"), ("kill", "--batch", "99"),
                 ("status", "--batch", "99"), ("retry", "--batch", "99"),
                 ("wait", "99"), ("logs", "99"), ("status", "99"), ("kill", "99")):
        proc = cx.run(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "no batch 99" in proc.stderr or "no job 99" in proc.stderr, (args, proc.stderr)


# -- status -------------------------------------------------------------------------


def test_an_empty_status_says_what_was_filtered_and_where_the_jobs_are(cx: Env) -> None:
    cx.ok("launch", "@fake sleep 0\none")
    assert cx.run("wait", "1").returncode == 0
    out = cx.ok("status", "--type", "bad").stdout
    assert out.startswith("no jobs of type bad in this project; 1 job without that filter")
    elsewhere = cx.tmp / "elsewhere"
    (elsewhere / ".git").mkdir(parents=True)
    out = cx.ok("status", cwd=elsewhere).stdout
    assert "no jobs in this project; 1 job in 1 other project: --all-projects" in out
    assert "(this project: " in out


def test_all_projects_has_a_project_column(cx: Env) -> None:
    cx.ok("launch", "@fake sleep 0\none")
    assert cx.run("wait", "1").returncode == 0
    head, row = cx.ok("status", "--all-projects").stdout.splitlines()[:2]
    assert head.split()[-2:] == ["PROJECT", "REPORT"]
    assert "project" in row and ".codexw/workers/" in row
    assert "PROJECT" not in cx.ok("status").stdout


def test_conflicting_status_flags_are_refused(cx: Env) -> None:
    cx.ok("launch", "@fake sleep 0\none")
    for args in (("--latest", "3", "--all"), ("1", "--all"), ("1", "--type", "workers"),
                 ("--watch", "--json"), ("--stats", "--latest", "3")):
        proc = cx.run("status", *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        one_line(proc)
    assert cx.run("wait", "1").returncode == 0


# -- exit codes and wording ---------------------------------------------------------


def test_logs_of_a_job_that_never_ran_exits_1_with_the_reason(cx: Env) -> None:
    cx.ok("launch", "@fake exit 3\nfails")
    assert cx.run("wait", "1").returncode == 1
    cx.run("launch", "--after", "1", "never runs")
    proc = cx.run("logs", "2")
    assert proc.returncode == 1, proc.stderr
    assert "never ran (cancelled: dependency job 1 failed)" in one_line(proc)


def test_wording_of_ended_and_never_started_jobs(cx: Env) -> None:
    cx.ok("launch", "@fake exit 3\nfails")
    assert cx.run("wait", "1").returncode == 1
    cx.run("launch", "--after", "1", "never runs")
    waited = cx.run("wait", "2")
    assert "job 2 cancelled before it started: dependency job 1 failed" in waited.stdout
    assert "after -" not in waited.stdout
    killed = cx.ok("kill", "2").stdout
    assert killed.strip() == "job 2: already ended (cancelled), nothing to stop"


def test_the_dash_hint_only_where_a_task_is_an_argument(cx: Env) -> None:
    status = one_line(cx.run("status", "--wach"))
    assert "did you mean --watch?" in status and "goes after" not in status
    assert "goes after `--`" in one_line(cx.run("launch", "--fix-the-thing"))


def test_a_codex_bin_that_does_not_exist_is_named(cx: Env) -> None:
    proc = cx.run("launch", "x", env={"CODEXW_CODEX_BIN": "/nonexistent/codex"})
    line = one_line(proc)
    assert proc.returncode == 2
    assert "/nonexistent/codex does not exist" in line and "npm" not in line


def test_batch_detach_hint_names_commands_without_a_pipe(cx: Env) -> None:
    tasks = cx.tmp / "tasks.txt"
    tasks.write_text("one\n")
    out = cx.ok("batch", str(tasks), "--detach").stdout
    assert "1 job queued" in out and " | " not in out
    assert "`codexw wait --batch 1`" in out
    assert cx.run("wait", "--batch", "1").returncode == 0


# -- .codexw/ in git ----------------------------------------------------------------


def _git_project(cx: Env, name: str) -> Path:
    project = cx.tmp / name
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    return project


def test_a_new_codexw_dir_keeps_reports_out_of_git_but_not_its_config(cx: Env) -> None:
    project = _git_project(cx, "repo")
    cx.ok("launch", "@fake sleep 0\none", cwd=project)
    assert cx.run("wait", "1").returncode == 0
    (project / ".codexw" / "config.toml").write_text('level = "medium"\n')
    untracked = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert sorted(u for u in untracked if u != "??") == [".codexw/.gitignore",
                                                         ".codexw/config.toml"]
    (project / ".codexw" / ".gitignore").write_text("# mine\n")
    cx.ok("launch", "@fake sleep 0\ntwo", cwd=project)
    assert (project / ".codexw" / ".gitignore").read_text() == "# mine\n"  # never rewritten
    assert cx.run("wait", "2").returncode == 0


def test_track_reports_tracks_finished_reports_only(cx: Env) -> None:
    project = _git_project(cx, "tracked")
    cx.ok("launch", "@fake sleep 0\none", cwd=project, env={"CODEXW_TRACK_REPORTS": "true"})
    assert cx.run("wait", "1").returncode == 0
    untracked = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
        capture_output=True, text=True, check=True,
    ).stdout
    assert ".codexw/.gitignore" in untracked
    assert re.search(r"\.codexw/workers/\d{8}_\d{6}_\w+_codex_task\.md", untracked), untracked
    assert "_TEMP_" in (project / ".codexw" / ".gitignore").read_text()


def test_status_on_an_80_column_terminal_keeps_every_narrow_column_whole(cx: Env) -> None:
    cx.launch("a task whose text is long enough to need more room than it will get " * 3)
    assert cx.run("wait", "1").returncode == 0
    out = run_in_terminal(cx, "status", columns=80)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out)
    header, row = text.splitlines()[0], text.splitlines()[1]
    for column in ("ID", "STATE", "TYPE", "PID", "TASK"):
        assert column in header.split(), header
    assert row.split()[0] == "1" and "succeeded" in row.split(), row
    assert all(len(line) <= 80 for line in text.splitlines())
