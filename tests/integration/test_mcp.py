"""`codexw mcp` driven by the official SDK's own client over stdio, against a real
`codexw mcp` process with the fake codex: the tools and their schemas, launch → wait
→ result, batch, kill, refusals that record nothing, a wait that times out; the `cx`
fixture checks that no process is left (server, runners, codex)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env, wait_until

if os.environ.get("CODEXW_REQUIRE_E2E") == "1":  # CI installs codexw[mcp]: never skip there
    import mcp  # noqa: F401
mcp_client = pytest.importorskip("mcp", reason="codexw[mcp] is not installed")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

pytestmark = pytest.mark.slow

TOOLS = {"launch", "batch", "status", "wait", "result", "logs", "kill", "continue"}


def server(cx: Env, *args: str, env: dict[str, str] | None = None) -> Client:
    return Client(StdioServerParameters(
        command=sys.executable, args=["-m", "codexw", "mcp", *args],
        env={**cx.env, **(env or {})}, cwd=str(cx.project)))


def run(cx: Env, body: Callable[[Client], Awaitable[Any]], *args: str,
        env: dict[str, str] | None = None) -> Any:
    async def main() -> Any:
        async with server(cx, *args, env=env) as client:
            return await body(client)
    return asyncio.run(main())


def jobs_in_registry(cx: Env) -> list[dict[str, Any]]:
    return json.loads(cx.ok("status", "--all", "--json").stdout)["jobs"]


def test_tools_resources_and_their_schemas(cx: Env) -> None:
    async def body(client: Client) -> Any:
        return (await client.list_tools(), await client.list_resource_templates())

    tools, templates = run(cx, body)
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) == TOOLS
    launch = by_name["launch"].input_schema
    assert launch["required"] == ["task"]
    assert set(launch["properties"]) == {"task", "level", "type", "cwd", "model", "sandbox",
                                         "timeout", "worktree", "after"}
    assert launch["properties"]["after"]["anyOf"][0] == {"type": "array", "items": {"type": "integer"}}
    wait = by_name["wait"].input_schema
    assert wait["required"] == ["job_ids"]
    assert wait["properties"]["job_ids"]["items"] == {"type": "integer"}
    assert wait["properties"]["timeout_s"]["anyOf"][0] == {"type": "integer"}
    assert "call wait again" in by_name["wait"].description
    assert set(by_name["result"].output_schema["properties"]) == {
        "job_id", "attempt_id", "state", "outcome_reason", "final_message", "files", "usage",
        "report_path", "branch"}
    assert set(by_name["batch"].input_schema["properties"]) >= {"tasks", "max_parallel", "retries"}
    assert set(by_name["status"].input_schema["properties"]) == {
        "job_id", "latest", "state", "batch_id", "all_projects"}
    assert {t.uri_template for t in templates.resource_templates} == {
        "codexw://job/{id}/report", "codexw://job/{id}/log"}


def test_launch_wait_result_continue_and_resources(cx: Env) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def body(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["launch"] = await client.call_tool("launch", {
            "task": "@fake sleep 0.3; @fake write made.txt; @fake message all done here\nmake a file",
            "level": "high"})
        job_id = out["launch"].structured_content["job_id"]
        out["wait"] = await client.call_tool("wait", {"job_ids": [job_id], "timeout_s": 60},
                                             progress_callback=on_progress)
        out["result"] = await client.call_tool("result", {"job_id": job_id})
        out["status"] = await client.call_tool("status", {})
        out["one"] = await client.call_tool("status", {"job_id": job_id})
        out["logs"] = await client.call_tool("logs", {"job_id": job_id, "tail": 3})
        out["report"] = await client.read_resource(f"codexw://job/{job_id}/report")
        out["log"] = await client.read_resource(f"codexw://job/{job_id}/log")
        out["continue"] = await client.call_tool("continue", {"job_id": job_id,
                                                              "task": "now add tests"})
        follow = out["continue"].structured_content["job_id"]
        out["wait2"] = await client.call_tool("wait", {"job_ids": [follow]})
        return out

    out = run(cx, body)
    launched = out["launch"]
    assert not launched.is_error
    assert launched.structured_content["job_id"] == 1
    assert launched.structured_content["state"] in ("queued", "starting", "running")
    assert "_TEMP_1_" in launched.structured_content["report_path"]
    assert "job 1" in launched.content[0].text

    waited = out["wait"].structured_content
    assert [d["job_id"] for d in waited["done"]] == [1] and waited["pending"] == []
    assert waited["done"][0]["state"] == "succeeded"
    assert progress and progress[-1][:2] == (1, 1)

    result = out["result"].structured_content
    assert result["state"] == "succeeded" and result["outcome_reason"] is None
    assert result["final_message"] == "all done here"
    assert {"path": "made.txt", "kind": "add"} in result["files"] or \
        any(f["path"].endswith("made.txt") for f in result["files"])
    assert result["usage"]["input_tokens"] == 100 and result["branch"] is None
    assert Path(result["report_path"]).exists() and "_TEMP_" not in result["report_path"]
    assert "all done here" in out["result"].content[0].text

    # status: the same fields as `status --json`
    listed = out["status"].structured_content["jobs"]
    cli = json.loads(cx.ok("status", "--json").stdout)["jobs"]
    assert [j["id"] for j in listed] == [1]
    assert set(listed[0]) == set(cli[0])
    assert out["one"].structured_content["jobs"][0]["level"] == "high"

    entries = out["logs"].structured_content["entries"]
    assert len(entries) == 3 and entries[-1]["text"] == "job 1 succeeded"
    assert "all done here" in out["report"].contents[0].text
    assert "made.txt" in out["log"].contents[0].text

    follow = out["continue"].structured_content["job_id"]
    assert follow == 2 and out["wait2"].structured_content["done"][0]["state"] == "succeeded"
    runs = [r for r in cx.fake_runs() if r]
    assert runs[-1]["resume"] is not None  # codex exec resume THREAD


def test_wait_that_times_out_returns_pending_and_kill_stops_the_job(cx: Env) -> None:
    gate = cx.tmp / "gate"

    async def body(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["launch"] = await client.call_tool("launch", {"task": f"@fake wait-for {gate}\nhold"})
        out["wait"] = await client.call_tool("wait", {"job_ids": [1], "timeout_s": 1})
        out["kill"] = await client.call_tool("kill", {"job_ids": [1]})
        out["result"] = await client.call_tool("result", {"job_id": 1})
        return out

    out = run(cx, body)
    waited = out["wait"]
    assert not waited.is_error
    assert waited.structured_content["done"] == []
    assert [p["job_id"] for p in waited.structured_content["pending"]] == [1]
    assert "call wait([1]) again" in waited.content[0].text
    killed = out["kill"].structured_content["jobs"]
    assert [(k["job_id"], k["after"]) for k in killed] == [(1, "killed")]
    assert out["result"].structured_content["state"] == "killed"


def test_batch_runs_every_task_within_its_bound(cx: Env) -> None:
    async def body(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["batch"] = await client.call_tool("batch", {
            "tasks": ["@fake sleep 0.5\none", {"task": "@fake sleep 0.5\ntwo", "level": "high"},
                      "@fake sleep 0.5\nthree"],
            "max_parallel": 2})
        ids = out["batch"].structured_content["job_ids"]
        out["wait"] = await client.call_tool("wait", {"job_ids": ids})
        out["status"] = await client.call_tool(
            "status", {"batch_id": out["batch"].structured_content["batch_id"]})
        return out

    out = run(cx, body)
    submitted = out["batch"].structured_content
    assert submitted["job_ids"] == [1, 2, 3] and submitted["max_parallel"] == 2
    assert [d["state"] for d in out["wait"].structured_content["done"]] == ["succeeded"] * 3
    levels = {j["id"]: j["level"] for j in out["status"].structured_content["jobs"]}
    assert levels == {1: "low", 2: "high", 3: "low"}
    assert cx.max_running() <= 2


def test_bad_arguments_are_tool_errors_with_the_cli_message_and_record_nothing(cx: Env) -> None:
    config = cx.tmp / "config" / "config.toml"

    async def body(client: Client) -> dict[str, Any]:
        calls = {
            "level": ("launch", {"task": "x", "level": "bogus"}),
            "type": ("launch", {"task": "x", "type": "Bad Type"}),
            "timeout": ("launch", {"task": "x", "timeout": "soon"}),
            "sandbox": ("launch", {"task": "x", "sandbox": "danger-full-access"}),
            "after": ("launch", {"task": "x", "after": [99]}),
            "cwd": ("launch", {"task": "x", "cwd": "no/such/dir"}),
            "empty": ("launch", {"task": "   "}),
            "ids": ("wait", {"job_ids": ["seven"]}),
            "unknown": ("wait", {"job_ids": [42]}),
            "negative": ("wait", {"job_ids": [1], "timeout_s": -1}),
            "batch": ("batch", {"tasks": ["fine", {"task": "bad", "level": "bogus"}]}),
            "batch_key": ("batch", {"tasks": [{"task": "x", "colour": "red"}]}),
            "state": ("status", {"state": "done"}),
            "result": ("result", {"job_id": 7}),
            "continue": ("continue", {"job_id": 7, "task": "more"}),
        }
        return {key: await client.call_tool(name, args) for key, (name, args) in calls.items()}

    out = run(cx, body)
    for key, answer in out.items():
        assert answer.is_error, key
        assert len(answer.content[0].text.splitlines()) == 1, key
    cli = cx.run("launch", "--level", "bogus", "x")
    assert cli.returncode == 2 and out["level"].content[0].text in cli.stderr
    assert out["level"].content[0].text.startswith("unknown level 'bogus'")
    assert "sandbox danger-full-access is refused over MCP" in out["sandbox"].content[0].text
    assert "tasks line 2: unknown level 'bogus'" in out["batch"].content[0].text
    assert "unknown key 'colour'" in out["batch_key"].content[0].text
    assert out["unknown"].content[0].text == cx.run("wait", "42").stderr.removeprefix(
        "codexw: ").strip()
    assert "unknown state 'done'" in out["state"].content[0].text
    assert out["ids"].content[0].text == (
        "wait: bad argument job_ids[0]: Input should be a valid integer, unable to parse string"
        " as an integer")
    assert jobs_in_registry(cx) == []

    # danger-full-access from the user's own config is refused too, unless the server allows it
    config.write_text(config.read_text() + 'sandbox = "danger-full-access"\n')

    async def launch(client: Client) -> Any:
        return await client.call_tool("launch", {"task": "@fake sleep 0.1\nx"})

    assert run(cx, launch).is_error and jobs_in_registry(cx) == []
    allowed = run(cx, launch, "--allow-full-access")
    assert not allowed.is_error, allowed.content
    assert cx.run("wait", "1").returncode == 0
    assert [r["sandbox"] for r in cx.fake_runs() if r] == ["danger-full-access"]


def test_a_job_in_its_own_worktree_through_mcp_reports_its_branch(repo: Env) -> None:
    async def body(client: Client) -> Any:
        launched = await client.call_tool("launch", {
            "task": "@fake write-text notes.txt from the worktree\nwrite notes", "worktree": True})
        job_id = launched.structured_content["job_id"]
        await client.call_tool("wait", {"job_ids": [job_id], "timeout_s": 60})
        return await client.call_tool("result", {"job_id": job_id})

    result = run(repo, body)
    assert not result.is_error, result.content
    assert result.structured_content["state"] == "succeeded"
    assert result.structured_content["branch"] == "codexw/1"
    assert not (repo.project / "notes.txt").exists()  # written in the worktree, not here
    shown = subprocess.run(["git", "show", "codexw/1:notes.txt"], cwd=repo.project,
                           capture_output=True, text=True, check=True).stdout
    assert shown == "from the worktree\n"


def test_jobs_outlive_the_server_and_a_killed_server_loses_nothing(cx: Env) -> None:
    gate = cx.tmp / "gate"
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexw", "mcp"], cwd=cx.project, env=cx.env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None

    def send(message: dict[str, Any]) -> None:
        proc.stdin.write((json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode())  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    def answer(request_id: int) -> dict[str, Any]:
        while True:
            message = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            if message.get("id") == request_id:
                return message

    # The plain JSON-RPC an MCP client sends over stdio (legacy initialize handshake).
    send({"id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}})
    assert "result" in answer(1)
    send({"method": "notifications/initialized"})
    send({"id": 2, "method": "tools/call", "params": {
        "name": "launch", "arguments": {"task": f"@fake wait-for {gate}\nhold on"}}})
    launched = answer(2)["result"]
    assert launched["structuredContent"]["job_id"] == 1
    wait_until(lambda: cx.job(1)["state"] == "running", what="job 1 running")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdin.close()
    proc.stdout.close()
    assert cx.job(1)["state"] == "running"  # the job runs on without its server
    gate.touch()
    assert cx.run("wait", "1").returncode == 0


def test_depth_is_carried_and_bounded_through_the_server(cx: Env) -> None:
    async def launch(client: Client) -> Any:
        answer = await client.call_tool("launch", {"task": "@fake sleep 0.1\nchild"})
        if not answer.is_error:
            await client.call_tool("wait", {"job_ids": [answer.structured_content["job_id"]]})
        return answer

    refused = run(cx, launch, env={"CODEXW_DEPTH": "2"})
    assert refused.is_error
    assert "CODEXW_DEPTH=2" in refused.content[0].text and "max_depth is 2" in refused.content[0].text
    assert jobs_in_registry(cx) == []
    allowed = run(cx, launch, env={"CODEXW_DEPTH": "1"})  # codex that started this server: a job
    assert not allowed.is_error
    assert [r["depth"] for r in cx.fake_runs() if r] == ["2"]


def test_a_server_started_without_the_depth_is_as_deep_as_the_codex_that_started_it(
    cx: Env,
) -> None:
    """Codex starts an MCP server with a few variables only (not CODEXW_DEPTH): here a
    shell at depth 2 stands for that codex, and starts the server without it."""
    script = 'env -u CODEXW_DEPTH "$0" -m codexw mcp; exit $?'
    client = Client(StdioServerParameters(
        command="/bin/sh", args=["-c", script, sys.executable],
        env={**cx.env, "CODEXW_DEPTH": "2"}, cwd=str(cx.project)))

    async def main() -> Any:
        async with client:
            return await client.call_tool("launch", {"task": "a child of a grandchild"})

    refused = asyncio.run(main())
    assert refused.is_error and "CODEXW_DEPTH=2" in refused.content[0].text
    assert jobs_in_registry(cx) == []


def _http_server(cx: Env) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexw", "mcp", "--http", "0"], cwd=cx.project, env=cx.env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert line.startswith("codexw mcp: serving http://127.0.0.1:"), line
    port = int(line.split("127.0.0.1:", 1)[1].split("/", 1)[0])
    return proc, port


def _post(port: int, headers: dict[str, str]) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    conn.request("POST", "/mcp", body=body, headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        **headers})
    status = conn.getresponse().status
    conn.close()
    return status


def test_http_needs_the_token_and_refuses_foreign_hosts_and_origins(cx: Env) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    proc, port = _http_server(cx)
    try:
        token_file = cx.state / "mcp-token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600 and len(token) >= 32
        good = {"Authorization": f"Bearer {token}"}
        assert _post(port, {}) == 401
        assert _post(port, {"Authorization": "Bearer " + "x" * len(token)}) == 401
        assert _post(port, {**good, "Host": f"evil.example:{port}"}) == 421
        assert _post(port, {**good, "Origin": "http://evil.example"}) == 403
        assert _post(port, {**good, "Origin": f"http://127.0.0.1:{port}"}) not in (401, 403, 421)

        async def body() -> dict[str, Any]:
            async with httpx2.AsyncClient(headers=good) as http, Client(
                streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
            ) as client:
                tools = await client.list_tools()
                launched = await client.call_tool("launch", {"task": "@fake sleep 0.2\nover http"})
                waited = await client.call_tool("wait", {"job_ids": [1]})
                return {"tools": tools, "launched": launched, "waited": waited}

        out = asyncio.run(body())
        assert {t.name for t in out["tools"].tools} == TOOLS
        assert out["launched"].structured_content["job_id"] == 1
        assert out["waited"].structured_content["done"][0]["state"] == "succeeded"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
    again, _port = _http_server(cx)  # the same token across restarts
    again.send_signal(signal.SIGTERM)
    again.wait(timeout=30)
    assert again.stderr is not None
    again.stderr.close()
    assert (cx.state / "mcp-token").read_text().strip() == token
