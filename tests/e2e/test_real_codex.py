"""The real codex CLI, run by codexw, against a local mock of the Responses API.

These show what a fake codex cannot: that the argv codexw builds means to the real
CLI what codexw intends, and that the real event stream and process tree are
handled. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import E2E
from tests.e2e.mock_responses import Fail, Message, Shell

pytestmark = pytest.mark.e2e

FINAL = (
    "## Task Summary\nWrote made.txt.\n\n## Files Modified\n- made.txt\n\n"
    "## Changes Made\nOne file.\n\n## Issues Encountered\nA command failed on purpose.\n\n"
    "## Next Steps\nNone."
)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def group_members(pgid: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _proc_stat(int(name))
            if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(name))
    return members


def describe(pid: int) -> str:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = "?"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmd = "?"
    return f"{exe} :: {cmd}"


def wrapper_and_native(pgid: int) -> tuple[list[int], list[int]]:
    """The Node wrapper and the native codex among the group's members."""
    members = group_members(pgid)
    node = [p for p in members if os.path.basename(describe(p).split(" :: ")[0]).startswith("node")]
    native = [p for p in members if p not in node and "codex" in describe(p)]
    return node, native


def wait_job(e: E2E, job_id: int, timeout: float = 120) -> tuple[int, dict]:
    proc = e.cx.run("wait", str(job_id), timeout=timeout)
    return proc.returncode, e.cx.job(job_id)


# -- what codex sends -------------------------------------------------------------------


def test_every_level_reaches_the_server_as_reasoning_effort_and_model_as_model(e2e: E2E) -> None:
    levels = ["minimal", "low", "medium", "high", "xhigh"]
    for level in levels:
        e2e.cx.launch(f"level probe {level}", "--level", level)
    e2e.cx.launch("model probe", "--model", "gpt-e2e-model")
    assert e2e.cx.run("wait", *map(str, range(1, 7))).returncode == 0
    seen = {}
    for request in e2e.server.requests:
        task = re.search(r"(level probe \w+|model probe)", request.text)
        assert task, request.text[-300:]
        seen[task.group(1)] = (request.effort, request.model)
    for level in levels:
        assert seen[f"level probe {level}"] == (level, "mock-model")
    # the default level is low; --model replaces the CODEX_HOME config's model
    assert seen["model probe"] == ("low", "gpt-e2e-model")
    assert len(e2e.server.requests) == 6


# -- a full run and its report ----------------------------------------------------------


def test_shell_command_runs_without_prompt_and_the_report_holds_the_facts(e2e: E2E) -> None:
    usages = [
        {"input_tokens": 1200, "cached_input_tokens": 300, "output_tokens": 45,
         "reasoning_output_tokens": 7},
        {"input_tokens": 1400, "cached_input_tokens": 1100, "output_tokens": 12,
         "reasoning_output_tokens": 0},
        {"input_tokens": 1500, "cached_input_tokens": 1300, "output_tokens": 160,
         "reasoning_output_tokens": 31},
    ]
    e2e.server.script(
        Shell("echo hi > made.txt", usage=usages[0],
              then=Shell("echo oops >&2; exit 3", usage=usages[1],
                         then=Message(FINAL, usage=usages[2], hold=120))),
    )
    info = e2e.cx.launch("write made.txt, then try something that fails")
    temp = Path(info["report_path"])
    assert "_TEMP_1_" in temp.name
    # The last answer is held open: the job is certainly running now.
    e2e.server.wait_for_requests(3)
    e2e.server.wait_in_flight(1)
    assert temp.exists(), "the TEMP report is visible while the job runs"
    assert e2e.cx.job(1)["state"] == "running"
    e2e.server.release()

    code, job = wait_job(e2e, 1)
    assert code == 0, job
    assert job["state"] == "succeeded"
    assert (e2e.project / "made.txt").read_text() == "hi\n"  # ran, and nobody was asked
    final = Path(job["report_path"])
    assert final.exists() and not temp.exists()
    assert re.fullmatch(rf"\d{{8}}_\d{{6}}_{job['runner_pid']}_codex_task\.md", final.name)
    assert not list(final.parent.glob("*_TEMP_*"))

    expected = {k: sum(u[k] for u in usages) for k in usages[0]}
    assert job["tokens"] == expected
    text = final.read_text()
    assert re.search(r"`/bin/bash -lc 'echo hi > made\.txt'` → exit 0", text), text
    assert re.search(r"`/bin/bash -lc 'echo oops >&2; exit 3'` → exit 3", text), text
    files = text.split("## Files Changed", 1)[1].split("##", 1)[0]
    assert "`made.txt` (add)" in files
    assert ".codexw" not in files  # codexw's own report is not the agent's change
    assert (
        f"in {expected['input_tokens']} (cached {expected['cached_input_tokens']}), "
        f"out {expected['output_tokens']} (reasoning {expected['reasoning_output_tokens']})"
    ) in text
    assert FINAL in text
    assert "**Reasoning Level:** low" in text

    # the follow-up requests carried the commands' results back to the model
    outputs = [o for r in e2e.server.requests for o in r.tool_outputs.values()]
    assert any("exited with code 0" in o for o in outputs)
    assert any("exited with code 3" in o and "oops" in o for o in outputs)


# -- failures and retries ---------------------------------------------------------------


@pytest.mark.parametrize(("status", "message"), [(500, "high demand")])
def test_server_error_fails_the_job_with_the_servers_message(
    e2e: E2E, status: int, message: str
) -> None:
    e2e.server.default = Fail(status)
    e2e.cx.launch(f"meets a {status}")
    code, job = wait_job(e2e, 1)
    assert code == 1
    assert job["state"] == "failed"
    assert message in job["reason"]
    assert job["exit_code"] == 1
    assert len(e2e.server.requests) == 1  # no retries unless asked
    text = Path(job["report_path"]).read_text()
    assert "**failed**" in text and message in text


def test_a_429_is_classified_as_rate_limited_and_requeued_after_the_cool_down(e2e: E2E) -> None:
    e2e.server.script(Fail(429))  # then the default answer
    e2e.cx.launch("meets a rate limit")  # --retries 0: a rate limit costs none
    waited = e2e.cx.run("wait", "1", timeout=120)
    assert waited.returncode == 0, waited.stdout + waited.stderr + e2e.diagnose()
    first, second = e2e.cx.job(1), e2e.cx.job(2)
    assert first["state"] == "failed" and first["exit_code"] == 1
    assert first["reason"].startswith("rate-limited: ") and "429" in first["reason"]
    assert (second["retry_of"], second["rate_limited"], second["state"]) == (1, 1, "succeeded")
    with e2e.cx.db() as conn:
        ((at, seconds),) = conn.execute(
            "SELECT at, seconds FROM account_events WHERE kind = '429'").fetchall()
    assert seconds > 0 and second["started_at"] >= at + seconds  # the cool-down held it
    assert len(e2e.server.turn_requests()) == 2
    text = Path(first["report_path"]).read_text()
    assert "**failed**" in text and "429 Too Many Requests" in text


def test_a_batch_against_one_stream_adapts_and_every_job_succeeds(
    e2e: E2E, tmp_path: Path
) -> None:
    e2e.server.limit_in_flight = 1  # the real API's 429 above the account's limit
    e2e.server.default = Message("held for 1 s", hold=1)
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("".join(f"limited task {n}\n" for n in range(1, 5)))
    proc = e2e.cx.run("batch", str(tasks), "-j", "4", "--json", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr + e2e.diagnose()
    assert json.loads(proc.stdout)["succeeded"] == 4
    assert 1 <= e2e.server.rejected <= 5, e2e.server.rejected
    assert e2e.server.max_in_flight == 1


def test_500_and_429_are_retried_when_retries_are_asked_for(e2e: E2E) -> None:
    e2e.server.script(Fail(500), Fail(429), Message("third time lucky"))
    e2e.cx.launch("flaky service", "--retries", "2")
    waited = e2e.cx.run("wait", "1", timeout=120)
    assert waited.returncode == 0, waited.stdout + waited.stderr  # wait follows the retries
    first, second, third = (e2e.cx.job(i) for i in (1, 2, 3))
    assert (first["state"], second["state"], third["state"]) == ("failed", "failed", "succeeded")
    assert "high demand" in first["reason"] and "429" in second["reason"]
    assert (second["retry_of"], third["retry_of"]) == (1, 2)
    assert third["attempt"] == 3
    assert len(e2e.server.turn_requests()) == 3  # the server saw the extra attempts
    assert all("flaky service" in r.text for r in e2e.server.requests)
    assert "third time lucky" in Path(third["report_path"]).read_text()


# -- stopping: the native binary (and the Node wrapper, when it runs) go -----------------


def _running_group(e2e: E2E, job_id: int, wrapper: bool = False) -> int:
    """The running job's process group: the native codex alone (codexw bypasses the npm
    wrapper), or the wrapper and its native child with `codex_native = false`."""
    e2e.server.wait_in_flight(1)  # codex is waiting on the (held) answer
    job = wait_until(lambda: (j := e2e.cx.job(job_id))["codex_pgid"] and j, what="codex pgid")
    pgid = job["codex_pgid"]
    node, native = wrapper_and_native(pgid)
    members = [describe(p) for p in group_members(pgid)]
    assert native, members
    assert bool(node) == wrapper, members
    return pgid


def test_timeout_ends_the_native_codex(e2e: E2E) -> None:
    e2e.server.default = Message("never in time", hold=300)
    e2e.cx.launch("take forever", "--timeout", "4s")
    pgid = _running_group(e2e, 1)
    code, job = wait_job(e2e, 1)
    assert code == 1
    assert job["state"] == "timed_out"
    assert "timed out after 4s" in job["reason"]
    assert group_members(pgid) == []
    assert Path(job["report_path"]).exists()


def test_kill_ends_the_node_wrapper_and_the_native_codex(e2e: E2E) -> None:
    e2e.server.default = Message("never", hold=300)
    e2e.cx.env["CODEXW_CODEX_NATIVE"] = "false"  # the wrapper as installed
    info = e2e.cx.launch("run until killed")
    pgid = _running_group(e2e, 1, wrapper=True)
    out = e2e.cx.ok("kill", "1")
    assert "killed" in out.stdout
    job = e2e.cx.job(1)
    assert job["state"] == "killed"
    assert "codexw kill" in job["reason"]
    assert group_members(pgid) == []
    assert not Path(info["report_path"]).exists()
    assert "**killed**" in Path(job["report_path"]).read_text()


# -- continue: the same conversation -----------------------------------------------------


def test_continue_resumes_the_conversation_in_a_new_linked_job(e2e: E2E) -> None:
    e2e.server.script(
        Message("first answer: the plan is ready",
                usage={"input_tokens": 500, "cached_input_tokens": 0, "output_tokens": 50,
                       "reasoning_output_tokens": 5}),
        Shell("echo again > second.txt",
              usage={"input_tokens": 900, "cached_input_tokens": 400, "output_tokens": 30,
                     "reasoning_output_tokens": 3},
              then=Message("follow-up done",
                           usage={"input_tokens": 950, "cached_input_tokens": 800,
                                  "output_tokens": 25, "reasoning_output_tokens": 0})),
    )
    e2e.cx.launch("make a plan", "--level", "high")
    assert e2e.cx.run("wait", "1").returncode == 0
    first = e2e.cx.job(1)
    assert first["thread_id"]

    out = json.loads(e2e.cx.ok("continue", "--json", "1", "now carry it out").stdout)
    assert out["job_id"] == 2 and out["resume_of"] == 1 and out["thread_id"] == first["thread_id"]
    assert e2e.cx.run("wait", "2").returncode == 0
    second = e2e.cx.job(2)
    assert second["state"] == "succeeded"
    assert second["thread_id"] == first["thread_id"]
    assert second["level"] == "high"  # follows the earlier job

    req_first, req_follow, _req_tool = e2e.server.requests
    assert req_follow.conversation == req_first.conversation == first["thread_id"]
    texts = req_follow.user_texts
    assert any("make a plan" in t for t in texts) and texts[-1].startswith("now carry it out")
    assert "first answer: the plan is ready" in req_follow.assistant_texts
    assert req_follow.effort == "high"
    # a follow-up may still write: the sandbox is workspace-write, not resume's read-only
    assert (e2e.project / "second.txt").read_text() == "again\n"
    # its own usage only, although codex reports the thread's total
    assert second["tokens"] == {"input_tokens": 1850, "cached_input_tokens": 1200,
                                "output_tokens": 55, "reasoning_output_tokens": 3}
    assert first["report_path"] != second["report_path"]
    text = Path(second["report_path"]).read_text()
    assert "follow-up done" in text and "`second.txt` (add)" in text

    detail = json.loads(e2e.cx.ok("status", "--json", "2").stdout)["job"]
    assert detail["chain"] == [1, 2]
    assert "conversation  1 succeeded → 2 succeeded" in e2e.cx.ok("status", "2").stdout


# -- pass-through options -----------------------------------------------------------------


def test_profile_add_dir_and_output_schema_reach_codex(e2e: E2E, tmp_path: Path) -> None:
    (e2e.codex_home / "fast.config.toml").write_text('model = "profile-model"\n')
    extra = tmp_path / "shared-dir"
    extra.mkdir()
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({
        "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
        "additionalProperties": False,
    }))
    e2e.server.default = Message('{"ok": true}')
    e2e.cx.launch("answer in JSON", "--profile", "fast", "--add-dir", str(extra),
                  "--output-schema", str(schema))
    assert e2e.cx.run("wait", "1").returncode == 0
    (request,) = e2e.server.requests
    assert request.model == "profile-model"
    assert f"<root>{extra}</root>" in request.text
    fmt = request.body["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["schema"]["required"] == ["ok"]


def test_bad_pass_through_options_are_refused_before_anything_runs(e2e: E2E, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for args, words in [
        (["--profile", "nosuch"], "nosuch.config.toml does not exist"),
        (["--add-dir", str(tmp_path / "missing")], "no such directory"),
        (["--output-schema", str(bad)], "not valid JSON"),
        (["--output-schema", str(tmp_path / "none.json")], "No such file"),
    ]:
        proc = e2e.cx.run("launch", *args, "x")
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr
    assert e2e.server.requests == []


def test_outside_a_git_repository_codex_runs_and_the_report_says_why(e2e: E2E, tmp_path: Path) -> None:
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    proc = e2e.cx.run("launch", "--json", "--cd", str(plain), "work without git", cwd=plain)
    assert proc.returncode == 0, proc.stderr
    assert "not in a git repository" in proc.stderr
    job_id = json.loads(proc.stdout)["job_id"]
    assert e2e.cx.run("wait", str(job_id), cwd=plain).returncode == 0
    job = json.loads(e2e.cx.ok("status", "--json", str(job_id), cwd=plain).stdout)["job"]
    assert job["state"] == "succeeded"
    assert "--skip-git-repo-check" in Path(job["report_path"]).read_text()


# -- doctor -------------------------------------------------------------------------------


def test_doctor_passes_with_the_real_codex(e2e: E2E) -> None:
    proc = e2e.cx.run("doctor", "--json")
    data = json.loads(proc.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert proc.returncode == 0, checks
    assert checks["codex"]["detail"] == e2e.codex
    assert checks["codex version"]["status"] == "ok" and "0.169.0" in checks["codex version"]["detail"]
    assert checks["login"]["status"] == "ok" and "mock" in checks["login"]["detail"]
    assert checks["CODEX_HOME"]["status"] == "ok"


def test_doctor_fails_when_not_logged_in_and_names_the_fix(e2e: E2E) -> None:
    (e2e.codex_home / "config.toml").write_text("")  # the default OpenAI provider: login needed
    proc = e2e.cx.run("doctor")
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if " login " in ln)
    assert line.startswith("FAIL") and "Not logged in" in line and "codex login" in line


# -- parallel limit -------------------------------------------------------------------------


def test_max_parallel_2_over_6_jobs_never_has_more_than_2_requests_in_flight(
    e2e: E2E, tmp_path: Path
) -> None:
    e2e.server.default = Message("held for 2 s", hold=2)
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("".join(f"parallel task {n}\n" for n in range(1, 7)))
    started = time.monotonic()
    proc = e2e.cx.run("batch", str(tasks), "--max-parallel", "2", "--json", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elapsed = time.monotonic() - started
    assert len(e2e.server.requests) == 6
    assert e2e.server.max_in_flight == 2
    assert sorted(re.search(r"parallel task (\d)", r.text).group(1) for r in e2e.server.requests) \
        == [str(n) for n in range(1, 7)]
    assert elapsed >= 3 * 2  # three rounds of two held streams
    for n in range(1, 7):
        assert e2e.cx.job(n)["state"] == "succeeded"


# -- the native binary: what codexw starts instead of the npm wrapper --------------------


def _managed_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode().split("=", 1) for item in raw if b"=" in item)
    return {k: v for k, v in pairs if k.startswith("CODEX_MANAGED")}


def test_native_codex_gets_what_the_npm_wrapper_would_give_it(e2e: E2E) -> None:
    """The same job twice, held at the model: once with the wrapper (codex_native =
    false), once native. The native binary must see the same CODEX_MANAGED_* variables
    the wrapper hands its child, and `status ID` says which program ran."""
    e2e.server.default = Message("held", hold=300)
    seen = []
    for job_id, native in ((1, "false"), (2, "true")):
        e2e.cx.env["CODEXW_CODEX_NATIVE"] = native
        e2e.cx.launch(f"held job {job_id}")
        pgid = _running_group(e2e, job_id, wrapper=native == "false")
        _, natives = wrapper_and_native(pgid)
        seen.append(_managed_env(natives[0]))
        detail = e2e.cx.ok("status", str(job_id)).stdout
        ran = re.search(r"^ *codex  (.*)$", detail, re.M)
        assert ran, detail
        assert ran.group(1).startswith("native " if native == "true" else "npm wrapper "), detail
        e2e.cx.ok("kill", str(job_id))
        wait_until(lambda pgid=pgid: group_members(pgid) == [], what="the job's group gone")
    wrapped, direct = seen
    assert wrapped["CODEX_MANAGED_BY_NPM"] == "1"
    assert wrapped["CODEX_MANAGED_PACKAGE_ROOT"].endswith("node_modules/@openai/codex")
    assert direct == wrapped
