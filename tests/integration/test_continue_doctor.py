"""`continue`, `doctor` and launch's codex pass-through options, with the fake codex."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Env, wait_until


def test_continue_resumes_the_thread_with_exec_options_before_resume(cx: Env) -> None:
    cx.launch("first", "--level", "high", "--model", "m1")
    assert cx.run("wait", "1").returncode == 0
    thread = cx.job(1)["thread_id"]
    out = cx.ok("continue", "1", "second")
    assert "continues job 1" in out.stdout and thread in out.stdout
    assert cx.run("wait", "2").returncode == 0
    runs = cx.fake_runs()
    assert runs[1]["resume"] == thread
    argv = runs[1]["argv"]
    assert argv.index("-s") < argv.index("resume") and argv.index("-C") < argv.index("resume")
    assert argv[-2:] == [thread, "-"]
    assert runs[1]["config"]["model_reasoning_effort"] == "high" and runs[1]["model"] == "m1"
    assert runs[1]["prompt"].startswith("second")
    job = cx.job(2)
    assert job["resume_of"] == 1 and job["thread_id"] == thread
    # the fake, like codex, reports the thread's total on resume; the job shows its own part
    assert job["tokens"] == cx.job(1)["tokens"]
    assert "conversation  1 succeeded → 2 succeeded" in cx.ok("status", "2").stdout


def test_continue_reads_the_follow_up_from_a_file_or_stdin(cx: Env) -> None:
    cx.launch("first")
    assert cx.run("wait", "1").returncode == 0
    follow = cx.tmp / "follow.md"
    follow.write_text("from a file")
    cx.ok("continue", "1", "-f", str(follow))
    assert cx.run("wait", "2").returncode == 0
    cx.ok("continue", "2", input="from stdin")
    assert cx.run("wait", "3").returncode == 0
    prompts = [r["prompt"] for r in cx.fake_runs()[1:]]
    assert prompts[0].startswith("from a file") and prompts[1].startswith("from stdin")


def test_continue_refuses_what_it_cannot_resume(cx: Env) -> None:
    assert "no job 9" in cx.run("continue", "9", "x").stderr
    cx.launch("@fake sleep 60")
    wait_until(lambda: cx.job(1)["state"] == "running", what="job 1 running")
    busy = cx.run("continue", "1", "x")
    assert busy.returncode == 2 and "still running" in busy.stderr and "codexw wait 1" in busy.stderr
    empty = cx.run("continue", "1")
    assert empty.returncode == 2 and "no follow-up" in empty.stderr
    cx.ok("kill", "1")
    cx.launch("y")
    assert cx.run("wait", "2").returncode == 0
    cx.ok("continue", "2", "@fake sleep 60")
    wait_until(lambda: cx.job(3)["state"] == "running", what="job 3 running")
    again = cx.run("continue", "2", "meanwhile")
    assert again.returncode == 2 and "job 3 is already running in this conversation" in again.stderr
    cx.ok("kill", "3")
    cx.launch("x", "--codex-arg", "--ephemeral")
    assert cx.run("wait", "4").returncode == 0
    eph = cx.run("continue", "4", "more")
    assert eph.returncode == 2 and "--ephemeral" in eph.stderr


def _codex_home(cx: Env) -> dict[str, str]:
    home = cx.tmp / "codex-home"
    home.mkdir(exist_ok=True)
    return {"CODEX_HOME": str(home)}


def test_doctor_reports_each_check_and_exits_0_when_nothing_fails(cx: Env) -> None:
    proc = cx.run("doctor", env=_codex_home(cx))
    assert proc.returncode == 0, proc.stdout
    names = [line.split()[1] for line in proc.stdout.splitlines()[:-1]]
    for name in ("config", "codex", "CODEX_HOME", "login", "registry", "templates", "pidfd",
                 "PR_SET_PDEATHSIG"):
        assert name in names
    data = json.loads(cx.ok("doctor", "--json", env=_codex_home(cx)).stdout)
    assert data["version"] == 1 and data["command"] == "doctor" and data["ok"] is True
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["codex version"]["status"] == "ok"
    assert set(checks["login"]) == {"name", "status", "detail", "hint"}


def test_doctor_fails_when_logged_out_or_codex_missing_with_launchs_hint(cx: Env) -> None:
    out = cx.run("doctor", env={"FAKE_CODEX_LOGGED_OUT": "1", **_codex_home(cx)})
    assert out.returncode == 1
    assert any(ln.startswith("FAIL") and "login" in ln for ln in out.stdout.splitlines())
    missing = cx.run("doctor", "--json",
                     env={"CODEXW_CODEX_BIN": "no-such-codex", **_codex_home(cx)})
    assert missing.returncode == 1
    codex = next(c for c in json.loads(missing.stdout)["checks"] if c["name"] == "codex")
    assert codex["status"] == "fail"
    launch = cx.run("launch", "x", env={"CODEXW_CODEX_BIN": "no-such-codex"})
    assert launch.returncode == 2 and codex["hint"] in launch.stderr


def test_doctor_fails_on_a_broken_config(cx: Env) -> None:
    (cx.project / ".codexw").mkdir()
    (cx.project / ".codexw" / "config.toml").write_text("levle = 'high'\n")
    proc = cx.run("doctor", env=_codex_home(cx))
    assert proc.returncode == 1
    assert "unknown key 'levle'" in proc.stdout


def test_pass_through_options_reach_codex_exec_validated(cx: Env, tmp_path: Path) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "fast.config.toml").write_text("")
    extra = tmp_path / "extra"
    extra.mkdir()
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object"}')
    env = {"CODEX_HOME": str(home)}
    cx.ok("launch", "--profile", "fast", "--add-dir", "../extra", "--output-schema", str(schema),
          "--skip-git-repo-check", "x", env=env, cwd=cx.project)
    assert cx.run("wait", "1").returncode == 0
    argv = cx.fake_runs()[0]["argv"]
    joined = " ".join(argv)
    assert "-p fast" in joined and f"--add-dir {extra}" in joined
    assert f"--output-schema {schema}" in joined and argv.count("--skip-git-repo-check") == 1
    assert cx.run("launch", "--profile", "slow", "x", env=env).returncode == 2
    assert cx.run("launch", "--profile", "../x", "x", env=env).returncode == 2
