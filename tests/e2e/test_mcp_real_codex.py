"""The real codex CLI through `codexw mcp`: an MCP client (the SDK's own, over stdio)
launches a job, waits for it and reads its result, against the local mock Responses
server; a wait that times out, then a kill, through the same tools; and the real
codex itself as the MCP client: a codexw job whose codex fans out a child job through
`codexw mcp`, and the child, one level deeper, is refused a grandchild."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.mock_responses import Call, Message, Shell

pytest.importorskip("mcp", reason="codexw[mcp] is not installed")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

pytestmark = pytest.mark.e2e

FINAL = (
    "## Task Summary\nWrote made.txt.\n\n## Files Modified\n- made.txt\n\n"
    "## Changes Made\nOne file.\n\n## Issues Encountered\nNone.\n\n## Next Steps\nNone."
)


def client(e2e: E2E) -> Client:
    return Client(StdioServerParameters(
        command=sys.executable, args=["-m", "codexw", "mcp"], env=dict(e2e.cx.env),
        cwd=str(e2e.project)))


def test_an_mcp_client_launches_waits_for_and_reads_a_real_codex_job(e2e: E2E) -> None:
    e2e.server.script(Shell("echo depth=$CODEXW_DEPTH > made.txt", then=Message(FINAL)))

    async def body() -> dict[str, Any]:
        async with client(e2e) as mcp:
            out: dict[str, Any] = {}
            out["launch"] = await mcp.call_tool("launch", {"task": "write made.txt",
                                                           "level": "high"})
            job_id = out["launch"].structured_content["job_id"]
            out["wait"] = await mcp.call_tool("wait", {"job_ids": [job_id], "timeout_s": 55})
            while out["wait"].structured_content["pending"]:  # as a model would: again
                out["wait"] = await mcp.call_tool("wait", {"job_ids": [job_id]})
            out["result"] = await mcp.call_tool("result", {"job_id": job_id})
            return out

    out = asyncio.run(body())
    assert not out["launch"].is_error, out["launch"].content
    assert out["wait"].structured_content["done"][0]["state"] == "succeeded"
    result = out["result"].structured_content
    assert result["state"] == "succeeded", e2e.diagnose()
    assert result["final_message"] == FINAL
    assert {"path": "made.txt", "kind": "add"} in result["files"]
    assert result["usage"]["input_tokens"] > 0
    # the agent's command ran one level below the person who started the MCP server
    assert (e2e.project / "made.txt").read_text() == "depth=1\n"
    assert [r.effort for r in e2e.server.turn_requests()][0] == "high"


def test_a_wait_that_times_out_leaves_the_real_job_running_and_kill_stops_it(e2e: E2E) -> None:
    e2e.server.default = Message("never in time", hold=300)

    async def body() -> dict[str, Any]:
        async with client(e2e) as mcp:
            out: dict[str, Any] = {}
            out["launch"] = await mcp.call_tool("launch", {"task": "run until killed"})
            await asyncio.to_thread(e2e.server.wait_in_flight, 1)  # codex awaits the held answer
            out["wait"] = await mcp.call_tool("wait", {"job_ids": [1], "timeout_s": 1})
            out["kill"] = await mcp.call_tool("kill", {"job_ids": [1]})
            out["result"] = await mcp.call_tool("result", {"job_id": 1})
            return out

    out = asyncio.run(body())
    assert [p["job_id"] for p in out["wait"].structured_content["pending"]] == [1]
    assert out["kill"].structured_content["jobs"][0]["after"] == "killed"
    assert out["result"].structured_content["state"] == "killed"


MCP_SERVER = """
[mcp_servers.codexw]
command = {python}
args = ["-m", "codexw", "mcp"]
cwd = {cwd}
# codex passes its MCP servers a few variables only (not CODEXW_DEPTH: codexw finds
# that in codex's own environment); these make the server use this test's registry.
env_vars = ["CODEXW_STATE_DIR", "CODEXW_CONFIG_DIR", "CODEXW_CODEX_BIN", "CODEX_HOME",
            "MOCK_API_KEY", "PYTHONPATH"]
startup_timeout_sec = 60
tool_timeout_sec = 120
# codex asks before a tool call that may write; with approval_policy never (as codexw
# runs it) it refuses unless told to approve this server's tools
default_tools_approval_mode = "approve"
"""
NS = "mcp__codexw"


def test_a_codex_job_fans_out_through_codexw_mcp_and_its_child_cannot(e2e: E2E) -> None:
    config = e2e.codex_home / "config.toml"
    config.write_text(config.read_text() + MCP_SERVER.format(
        python=json.dumps(sys.executable), cwd=json.dumps(str(e2e.project))))
    e2e.server.script(
        # job 1 (the parent): launch a child through codexw's MCP tools, wait, read it
        Call("launch", {"task": "child: record your depth", "level": "low"}, NS,
             then=Call("wait", {"job_ids": [2], "timeout_s": 50}, NS,
                       then=Call("result", {"job_id": 2}, NS,
                                 then=Message("the child is done")))),
        # job 2 (the child, depth 2): record its depth, then try to launch a grandchild
        Shell("echo depth=$CODEXW_DEPTH > child.txt",
              then=Call("launch", {"task": "grandchild"}, NS, then=Message("refused, fine"))),
    )
    e2e.cx.launch("parent: fan out one child through codexw")
    waited = e2e.cx.run("wait", "1", timeout=240)
    assert waited.returncode == 0, e2e.diagnose()
    child = e2e.cx.job(2)
    assert child["state"] == "succeeded", e2e.diagnose()
    assert (e2e.project / "child.txt").read_text() == "depth=2\n"
    jobs = json.loads(e2e.cx.ok("status", "--all", "--json").stdout)["jobs"]
    assert sorted(j["id"] for j in jobs) == [1, 2]  # no grandchild was recorded
    outputs = [o for r in e2e.server.requests for o in r.tool_outputs.values()]
    # what the parent's codex got back from the MCP tools, and the child's refusal
    assert any('"job_id":2' in o.replace(" ", "") for o in outputs)
    assert any('"state":"succeeded"' in o.replace(" ", "") and "child.txt" in o for o in outputs)
    assert any("CODEXW_DEPTH=2" in o and "max_depth is 2" in o for o in outputs)
