#!/usr/bin/env python3
"""An MCP client session with `codexw mcp`, printed as a transcript: the official SDK's
own client starts `codexw mcp` over stdio, lists its tools, launches TASK (or a batch
of several), waits as a model would (again while jobs are pending) and reads the
results. Run it where codexw and codexw[mcp] are installed, in a git project:

    python examples/mcp_client.py "summarise README.md in three lines"
    python examples/mcp_client.py --level high "task one" "task two"

docs/mcp.md shows a transcript it printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters


def show(direction: str, text: str) -> None:
    for n, line in enumerate(text.splitlines() or [""]):
        sys.stdout.write(f"{direction if n == 0 else ' '} {line}\n")


async def call(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    show("→", f"tools/call {name} {json.dumps(arguments)}")

    async def progress(done: float, total: float | None, message: str | None) -> None:
        show("·", f"progress {done:g}/{total:g}: {message}" if total else f"progress {message}")

    result = await client.call_tool(name, arguments, progress_callback=progress)
    if result.is_error:
        show("←", f"error: {result.content[0].text}")  # type: ignore[union-attr]
        return {}
    show("←", json.dumps(result.structured_content, indent=1))
    show(" ", f"text: {result.content[0].text}")  # type: ignore[union-attr]
    return result.structured_content or {}


async def session(tasks: list[str], level: str | None) -> None:
    command = shutil.which("codexw")
    args = ["mcp"] if command else ["-m", "codexw", "mcp"]
    # The SDK passes a server only a few variables (HOME, PATH, …) unless told: codexw's
    # jobs run with the server's environment, so give it this one.
    server = StdioServerParameters(command=command or sys.executable, args=args,
                                   env=dict(os.environ))
    async with Client(server) as client:
        show("→", "tools/list")
        tools = await client.list_tools()
        show("←", ", ".join(t.name for t in tools.tools))
        options = {"level": level} if level else {}
        if len(tasks) == 1:
            ids = [(await call(client, "launch", {"task": tasks[0], **options})).get("job_id")]
        else:
            batch = [{"task": t, **options} for t in tasks]
            ids = (await call(client, "batch", {"tasks": batch, "max_parallel": 2})).get("job_ids")
        if not ids or None in ids:
            return
        pending = ids
        while pending:
            waited = await call(client, "wait", {"job_ids": pending})
            pending = [p["job_id"] for p in waited.get("pending", [])]
        for job_id in ids:
            await call(client, "result", {"job_id": job_id})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", metavar="TASK")
    parser.add_argument("--level", help="minimal, low, medium, high or xhigh")
    options = parser.parse_args()
    asyncio.run(session(options.tasks, options.level))


if __name__ == "__main__":
    main()
