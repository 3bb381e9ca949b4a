"""`--backend app-server` (experimental) with the real codex against the mock server:
jobs are threads of one warm `codex app-server`, with the same reports, registry fields,
kill, continue and retries as the default backend."""

from __future__ import annotations

import os
import re
import signal
import tomllib
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import E2E
from tests.e2e.mock_responses import Message, Shell
from tests.e2e.test_real_codex import group_members, wait_job

pytestmark = pytest.mark.slow

FINAL = "## Task Summary\nDone through the app-server.\n"


@pytest.fixture(autouse=True)
def _short_idle(e2e: E2E) -> None:
    """An idle app-server goes after 3 s (10 min by default): the test ends with none."""
    e2e.cx.env["CODEXW_APP_SERVER_IDLE"] = "3s"


def _app(e2e: E2E, *args: str) -> dict:
    return e2e.cx.launch(*args[:1], "--backend", "app-server", *args[1:])


def _server_pid(e2e: E2E, job_id: int) -> int:
    job = wait_until(lambda: (j := e2e.cx.job(job_id))["codex_pgid"] and j, what="app-server pid")
    return int(job["codex_pgid"])


def test_a_job_runs_as_a_thread_with_the_same_report_and_registry_fields(e2e: E2E) -> None:
    usages = [{"input_tokens": 1200, "cached_input_tokens": 300, "output_tokens": 45,
               "reasoning_output_tokens": 7},
              {"input_tokens": 1500, "cached_input_tokens": 1300, "output_tokens": 160,
               "reasoning_output_tokens": 31}]
    e2e.server.script(Shell("echo hi > made.txt", usage=usages[0],
                            then=Message(FINAL, usage=usages[1])))
    config = e2e.codex_home / "config.toml"
    before = config.read_bytes()
    info = _app(e2e, "write made.txt")
    assert "_TEMP_1_" in Path(info["report_path"]).name
    code, job = wait_job(e2e, 1)
    assert code == 0, job
    assert job["state"] == "succeeded"
    assert (e2e.project / "made.txt").read_text() == "hi\n"
    final = Path(job["report_path"])
    assert re.fullmatch(r"\d{8}_\d{6}_A1_codex_task\.md", final.name), final.name
    text = final.read_text()
    assert re.search(r"`/bin/bash -lc 'echo hi > made\.txt'` → exit 0", text), text
    assert "`made.txt` (add)" in text.split("## Files Changed", 1)[1].split("##", 1)[0]
    assert "Done through the app-server." in text
    assert job["tokens"] == {k: sum(u[k] for u in usages) for k in usages[0]}
    assert job["thread_id"]
    # codex wrote [projects."<cwd>"] trust_level = "trusted"; codexw put the file back.
    assert config.read_bytes() == before
    assert "projects" not in tomllib.loads(config.read_text())
    e2e.cx.ok("logs", "1")  # the exec-format log reads like any job's


def test_jobs_share_one_app_server_and_continue_is_a_new_turn_on_the_thread(e2e: E2E) -> None:
    e2e.server.default = Message("first answer", hold=300)
    _app(e2e, "one")
    _app(e2e, "two")
    e2e.server.wait_in_flight(2)
    one, two = _server_pid(e2e, 1), _server_pid(e2e, 2)
    assert one == two  # one app-server process for both jobs
    assert e2e.cx.job(1)["runner_pid"] == e2e.cx.job(2)["runner_pid"]
    table = e2e.cx.ok("status").stdout.splitlines()
    assert all(f" {one} " in line for line in table if line.startswith(("1 ", "2 "))), table
    e2e.server.release()
    assert wait_job(e2e, 1)[0] == 0 and wait_job(e2e, 2)[0] == 0
    thread = e2e.cx.job(1)["thread_id"]

    usage = {"input_tokens": 700, "cached_input_tokens": 600, "output_tokens": 9,
             "reasoning_output_tokens": 0}
    e2e.server.default = Message("second answer", usage=usage)
    e2e.cx.ok("continue", "1", "and now the follow-up")
    code, follow = wait_job(e2e, 3)
    assert code == 0, follow
    assert follow["thread_id"] == thread
    assert follow["tokens"] == usage  # the follow-up's own turn, not the thread's total
    last = e2e.server.turn_requests()[-1]
    assert "first answer" in " ".join(last.assistant_texts)  # the conversation went on
    assert _server_pid(e2e, 3) == one  # the warm server took it


def test_kill_interrupts_the_turn_and_stops_a_command_that_ignores_sigterm(
    e2e: E2E, tmp_path: Path
) -> None:
    pidfile = tmp_path / "sleeper.pid"
    e2e.server.script(Shell(
        f"bash -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 300'",
        then=Message("never reached")))
    # Unsandboxed: a sandboxed command dies with its bwrap; this one would outlive the
    # interrupt (CODEX_CLI.md), and its $$ is a real PID.
    _app(e2e, "run something stubborn", "--sandbox", "danger-full-access")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the command started")
    sleeper = int(pidfile.read_text())
    e2e.cx.ok("kill", "1")
    job = e2e.cx.job(1)
    assert job["state"] == "killed", job
    assert "codexw kill" in job["reason"]
    assert not Path(f"/proc/{sleeper}").exists() or "Z" in Path(f"/proc/{sleeper}/stat").read_text().split()[2]
    assert "_A1_" in Path(job["report_path"]).name


def test_a_dead_app_server_loses_its_jobs_and_the_retry_resumes_the_thread(e2e: E2E) -> None:
    e2e.server.default = Message("held", hold=300)
    _app(e2e, "survive a crash", "--retries", "1")
    e2e.server.wait_in_flight(1)
    pid = _server_pid(e2e, 1)
    wait_until(lambda: e2e.cx.job(1)["thread_id"], what="the thread id")
    thread = e2e.cx.job(1)["thread_id"]
    e2e.server.default = Message("after the crash")
    os.kill(pid, signal.SIGKILL)
    code, retry = wait_job(e2e, 1)
    first = e2e.cx.job(1)
    assert first["state"] == "lost" and "app-server" in first["reason"], first
    assert code == 0, retry
    retry = e2e.cx.job(2)
    assert retry["state"] == "succeeded" and retry["retry_of"] == 1
    assert retry["thread_id"] == thread  # thread/resume kept the conversation
    assert _server_pid(e2e, 2) != pid
    assert group_members(pid) == []


def test_the_protocol_codexw_speaks_is_in_the_installed_codexs_schema(e2e: E2E, tmp_path: Path) -> None:
    """Generated from the binary itself (its README disagrees with it): the methods and
    values codexw sends and the notifications it reads exist in this codex."""
    import json
    import subprocess

    from codexw.core import codexbin

    native = codexbin.locate(e2e.codex).path
    out = tmp_path / "schema"
    subprocess.run([native, "app-server", "generate-json-schema", "--out", str(out)], check=True,
                   capture_output=True, env={**os.environ, "CODEX_HOME": str(e2e.codex_home)})
    schema = json.loads((out / "codex_app_server_protocol.v2.schemas.json").read_text())
    defs = schema["definitions"]
    requests = json.dumps(json.loads((out / "ClientRequest.json").read_text()))
    notifications = json.dumps(json.loads((out / "ServerNotification.json").read_text()))
    for method in ("initialize", "thread/start", "thread/resume", "turn/start", "turn/interrupt"):
        assert f'"{method}"' in requests, method
    for method in ("item/started", "item/completed", "thread/tokenUsage/updated",
                   "turn/completed", "error"):
        assert f'"{method}"' in notifications, method
    assert {"read-only", "workspace-write", "danger-full-access"} <= set(defs["SandboxMode"]["enum"])
    assert "never" in defs["AskForApproval"]["oneOf"][0]["enum"]
    for name in ("ThreadStartParams", "ThreadResumeParams"):
        assert {"cwd", "sandbox", "approvalPolicy", "model", "config"} <= set(defs[name]["properties"])
    assert {"threadId", "input", "effort"} <= set(defs["TurnStartParams"]["properties"])
    usage = defs["TokenUsageBreakdown"]["properties"]
    assert {"inputTokens", "cachedInputTokens", "outputTokens", "reasoningOutputTokens"} <= set(usage)


def test_an_untested_codex_version_is_refused_with_the_reason(e2e: E2E, tmp_path: Path) -> None:
    fake = tmp_path / "codex-next"
    fake.write_text(f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'codex-cli 0.999.0'; exit 0; fi\n"
                    f"exec {e2e.codex} \"$@\"\n")
    fake.chmod(0o755)
    e2e.cx.env["CODEXW_CODEX_BIN"] = str(fake)
    e2e.cx.env["CODEXW_BACKEND"] = "app-server"
    doctor = e2e.cx.run("doctor")
    assert doctor.returncode != 0
    assert "0.999.0 is not a version the app-server backend was tested with" in doctor.stdout
    e2e.cx.launch("never runs")
    code, job = wait_job(e2e, 1)
    assert code != 0 and job["state"] == "failed"
    assert "0.999.0 is not a version the app-server backend was tested with" in job["reason"]
    assert e2e.server.requests == []


def test_racing_launches_start_one_app_server_and_it_leaves_when_idle(e2e: E2E) -> None:
    import concurrent.futures

    e2e.server.default = Message("held", hold=300)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: _app(e2e, f"racing {i}"), range(4)))
    e2e.server.wait_in_flight(4)
    jobs = [e2e.cx.job(i) for i in range(1, 5)]
    assert len({j["runner_pid"] for j in jobs}) == 1, jobs  # one supervisor
    assert len({_server_pid(e2e, i) for i in range(1, 5)}) == 1  # one app-server
    supervisor, server = jobs[0]["runner_pid"], _server_pid(e2e, 1)
    records = list((e2e.cx.state / "appserver").glob("*.json"))
    assert len(records) == 1
    e2e.server.release()
    for i in range(1, 5):
        assert wait_job(e2e, i)[0] == 0
    # app_server_idle is 3 s here: both go, and so does the record.
    wait_until(lambda: not Path(f"/proc/{supervisor}").exists()
               and not Path(f"/proc/{server}").exists(), timeout=30, what="the idle app-server gone")
    assert not records[0].exists()


def test_a_killed_supervisor_takes_its_app_server_along_and_its_jobs_are_lost(e2e: E2E) -> None:
    e2e.server.default = Message("held", hold=300)
    _app(e2e, "orphaned")
    e2e.server.wait_in_flight(1)
    server = _server_pid(e2e, 1)
    os.kill(e2e.cx.job(1)["runner_pid"], signal.SIGKILL)
    wait_until(lambda: group_members(server) == [], what="the app-server to die with its supervisor")
    e2e.cx.ok("status")  # reconcile
    job = e2e.cx.job(1)
    assert job["state"] == "lost", job
    assert Path(job["report_path"]).exists() and "_A1_" in Path(job["report_path"]).name


def test_a_429_is_rate_limited_and_requeued_like_an_exec_jobs(e2e: E2E) -> None:
    from tests.e2e.mock_responses import Fail

    e2e.server.script(Fail(429))
    e2e.server.default = Message(FINAL)
    _app(e2e, "meets the limit once")
    code, _ = wait_job(e2e, 1)
    first, retry = e2e.cx.job(1), e2e.cx.job(2)
    assert first["state"] == "failed" and first["reason"].startswith("rate-limited:"), first
    assert code == 0 and retry["state"] == "succeeded" and retry["retry_of"] == 1, retry
