"""The real codex CLI through `codexw mcp`: an MCP client (the SDK's own, over stdio)
launches a job, waits for it and reads its result, against the local mock Responses
server; and a wait that times out, then a kill, through the same tools."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.mock_responses import Message, Shell

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
