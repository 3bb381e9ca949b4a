"""`codexw mcp`: the tools of codexw.mcp.tools served over MCP with the official SDK.

Tools run the (blocking) services in worker threads, so a `wait` of 50 s leaves the
server free for other calls; each answer is structured content plus a short text.
A CodexwError becomes an MCP tool error carrying the CLI's one-line message.
"""
# No `from __future__ import annotations`: the SDK reads these signatures at runtime.

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError

from codexw import __version__
from codexw.core import process
from codexw.core.errors import CodexwError
from codexw.core.models import LEVELS, SANDBOXES, Job
from codexw.mcp import tools
from codexw.mcp.tools import Reply, Settings

WAIT_SLICE = 10.0  # seconds between progress notifications while `wait` blocks
REAP_EVERY = 1.0  # seconds: runners this server spawned are reaped (a zombie looks alive)

INSTRUCTIONS = """\
codexw runs OpenAI Codex agents as detached background jobs on this machine. Use it to
hand self-contained tasks to Codex workers and collect their results.

- launch (one task) or batch (many, at most max_parallel at once) returns at once with
  job ids. Jobs run detached: they go on whether you wait or not, and survive this server.
- Then call wait(job_ids): it blocks until they end or about 50 s pass, and says which
  are done and which pending; call it again for the pending ones. Prefer wait over
  polling status in a loop.
- result(job_id) gives the outcome, the agent's final message, the files it changed and
  its token usage; logs(job_id) what it did step by step; status lists jobs.
- level is the reasoning effort: minimal, low (the default), medium, high, xhigh. Higher
  levels think longer and cost more tokens and time: use low for routine edits, high or
  xhigh only for hard problems.
- A job id stands for its retries too: wait and result follow them to the last attempt.
"""

JOB_ID = Field(description="A job id (an integer), as launch or batch returned it.")
JOB_IDS = Field(description="Job ids (integers).")


class Launched(TypedDict):
    job_id: int
    state: str
    report_path: str | None
    waiting_for: str | None
    warnings: list[str]


class BatchSubmitted(TypedDict):
    batch_id: int
    job_ids: list[int]
    max_parallel: int
    warnings: list[str]


class Jobs(TypedDict):
    jobs: list[dict[str, Any]]


class Waited(TypedDict):
    done: list[dict[str, Any]]
    pending: list[dict[str, Any]]


class Result(TypedDict):
    job_id: int
    attempt_id: int
    state: str
    outcome_reason: str | None
    final_message: str | None
    files: list[dict[str, str]]
    usage: dict[str, int]
    report_path: str | None
    branch: str | None


class Logs(TypedDict):
    job_id: int
    state: str
    entries: list[dict[str, Any]]


class Killed(TypedDict):
    jobs: list[dict[str, Any]]


def _answer(reply: Reply) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=reply.text)],
                          structured_content=reply.data)


def _error(exc: CodexwError) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)


def _blocking(fn: Callable[..., Reply], *args: Any, **kwargs: Any) -> Reply:
    try:
        return fn(*args, **kwargs)
    finally:
        process.reap_children()


async def _run(fn: Callable[..., Reply], *args: Any, **kwargs: Any) -> CallToolResult:
    try:
        reply = await anyio.to_thread.run_sync(functools.partial(_blocking, fn, *args, **kwargs))
    except CodexwError as exc:
        return _error(exc)
    return _answer(reply)


class Server(MCPServer):
    """MCPServer whose argument errors are one line, like the CLI's usage errors
    (pydantic's own message takes four, with a link)."""

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context | None = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError):
                raise
            first = cause.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
            more = len(cause.errors()) - 1
            raise ToolError(
                f"{name}: bad argument {where.lstrip('.') or 'arguments'}: {first['msg']}"
                + (f" (and {more} more)" if more else "")
            ) from None


def build_server(settings: Settings) -> Server:
    server = Server("codexw", instructions=INSTRUCTIONS, version=__version__,
                       log_level="WARNING")
    levels = ", ".join(LEVELS)
    sandboxes = ", ".join(SANDBOXES)
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(
        name="launch",
        description=(
            "Start one Codex agent on a task as a detached background job; returns at once"
            " with its job_id (then call wait). The job runs on after this call and after"
            " this server exits. Arguments are checked before anything is recorded."
        ),
    )
    async def launch(
        task: Annotated[str, Field(description="What the agent should do: a self-contained instruction.")],
        level: Annotated[str | None, Field(description=f"Reasoning effort: {levels}. Default low; higher costs more tokens and time.")] = None,
        type: Annotated[str | None, Field(description="Report folder and template: workers (default), research, or a name [a-z0-9][a-z0-9_-]*.")] = None,
        cwd: Annotated[str | None, Field(description="Working directory (relative to the server's). Default: the server's.")] = None,
        model: Annotated[str | None, Field(description="Codex model. Default: codex's own.")] = None,
        sandbox: Annotated[str | None, Field(description=f"One of {sandboxes}. Default workspace-write; danger-full-access only if the server allows it.")] = None,
        timeout: Annotated[str | None, Field(description='Stop the job after this long: "90s", "20m", "2h".')] = None,
        worktree: Annotated[bool | None, Field(description="Run in a git worktree of its own, on a branch of its own (when this codexw supports it).")] = None,
        after: Annotated[list[int] | None, Field(description="Start only after these job ids succeeded.")] = None,
    ) -> Annotated[CallToolResult, Launched]:
        return await _run(tools.launch, settings, task=task, level=level, type=type, cwd=cwd,
                          model=model, sandbox=sandbox, timeout=timeout, worktree=worktree,
                          after=after)

    @server.tool(
        name="batch",
        description=(
            "Start many Codex agents at once as one batch, never more than max_parallel"
            " running at a time; returns at once with batch_id and job_ids (then call wait)."
            " Each task is a string or an object {task, level, type, model, priority, timeout,"
            " retries, name, after: [names]}. The whole batch is checked first: one bad task"
            " starts none."
        ),
    )
    async def batch(
        tasks: Annotated[list[str | dict[str, Any]], Field(description="The tasks: strings, or objects with a 'task' key.")],
        max_parallel: Annotated[int | None, Field(description="At most this many run at once (default: config, else 4).")] = None,
        retries: Annotated[int | None, Field(description="Automatic retries of transient failures (429, 5xx) per task.")] = None,
        cwd: Annotated[str | None, Field(description="Working directory of every task (relative to the server's).")] = None,
    ) -> Annotated[CallToolResult, BatchSubmitted]:
        return await _run(tools.batch, settings, tasks=tasks, max_parallel=max_parallel,
                          retries=retries, cwd=cwd)

    @server.tool(
        name="status",
        description=(
            "List jobs (newest first) with the fields of `codexw status --json`, or one job"
            " in detail with job_id. Scoped to the server's project unless all_projects."
            " To block until jobs end, call wait instead of polling this."
        ),
        annotations=read_only,
    )
    async def status(
        job_id: Annotated[int | None, Field(description="Show this job alone, in detail.")] = None,
        latest: Annotated[int | None, Field(description="How many of the newest jobs (default 10).")] = None,
        state: Annotated[str | None, Field(description="Only jobs in this state: queued, starting, running, succeeded, failed, timed_out, killed, lost, cancelled.")] = None,
        batch_id: Annotated[int | None, Field(description="Only the jobs of this batch.")] = None,
        all_projects: Annotated[bool, Field(description="Every project's jobs, not only this server's project.")] = False,
    ) -> Annotated[CallToolResult, Jobs]:
        return await _run(tools.status, settings, job_id=job_id, latest=latest, state=state,
                          batch_id=batch_id, all_projects=all_projects)

    @server.tool(
        name="wait",
        description=(
            "Block until every given job has ended (following retries) or timeout_s passes"
            " (default 50 s, under the 60 s a client gives a tool call); returns which are"
            " done and which still pending. If some are pending, call wait again with them:"
            " the jobs keep running meanwhile. Sends progress notifications while it waits."
        ),
        annotations=read_only,
    )
    async def wait(
        job_ids: Annotated[list[int], JOB_IDS],
        ctx: Context,
        timeout_s: Annotated[int | None, Field(description="Seconds to wait at most (0 to 3600, default 50).")] = None,
    ) -> Annotated[CallToolResult, Waited]:
        try:
            ids, seconds = tools.check_wait(job_ids, timeout_s)
        except CodexwError as exc:
            return _error(exc)
        return await _wait(ctx, ids, seconds)

    @server.tool(
        name="result",
        description=(
            "What a job came to: state, outcome_reason, the agent's final message, the files"
            " it changed, token usage, report_path, and its git branch if it had one. Follows"
            " retries to the last attempt. Works while it runs too (the message so far)."
        ),
        annotations=read_only,
    )
    async def result(job_id: Annotated[int, JOB_ID]) -> Annotated[CallToolResult, Result]:
        return await _run(tools.result, settings, job_id=job_id)

    @server.tool(
        name="logs",
        description="The last entries of what a job's agent did: messages, commands with exit codes, files, errors.",
        annotations=read_only,
    )
    async def logs(
        job_id: Annotated[int, JOB_ID],
        tail: Annotated[int | None, Field(description="How many of the last entries (default 40).")] = None,
    ) -> Annotated[CallToolResult, Logs]:
        return await _run(tools.logs, settings, job_id=job_id, tail=tail)

    @server.tool(
        name="kill",
        description=(
            "Stop jobs: a running one loses its whole process tree (TERM, grace, KILL), a"
            " queued one is cancelled. A job id stands for its retries too."
        ),
        annotations=ToolAnnotations(destructive_hint=True, open_world_hint=False),
    )
    async def kill(job_ids: Annotated[list[int], JOB_IDS]) -> Annotated[CallToolResult, Killed]:
        return await _run(tools.kill, settings, job_ids=job_ids)

    @server.tool(
        name="continue",
        description=(
            "Follow up in an ended job's Codex conversation: a new job that resumes it with"
            " another instruction (same directory and sandbox). Returns its job_id at once."
        ),
    )
    async def continue_(
        job_id: Annotated[int, JOB_ID],
        task: Annotated[str, Field(description="The follow-up instruction.")],
    ) -> Annotated[CallToolResult, Launched]:
        return await _run(tools.continue_, settings, job_id=job_id, task=task)

    @server.resource("codexw://job/{id}/report", name="report", mime_type="text/markdown",
                     description="A job's Markdown report (live while it runs).")
    async def report(id: str) -> str:
        return await anyio.to_thread.run_sync(_resource, tools.report_text, id)

    @server.resource("codexw://job/{id}/log", name="log", mime_type="text/plain",
                     description="A job's log, readable: messages, commands, files, errors.")
    async def log(id: str) -> str:
        return await anyio.to_thread.run_sync(_resource, tools.log_text, id)

    return server


def _resource(read: Callable[[int], str], job_id: str) -> str:
    from mcp.server.mcpserver.exceptions import ResourceError

    if not job_id.isascii() or not job_id.isdigit():
        raise ResourceError(f"invalid job id {job_id!r}")
    try:
        return read(int(job_id))
    except CodexwError as exc:
        raise ResourceError(str(exc)) from None


async def _wait(ctx: Context, ids: list[int], seconds: int) -> CallToolResult:
    """tools.wait_once in slices, with a progress notification after each ending and
    each slice (so a client sees it alive); the registry wakes it, not a poll."""
    ended: set[int] = set()
    total = len(ids)

    def on_end(asked: int, job: Job) -> None:
        if asked not in ended:
            ended.add(asked)
            anyio.from_thread.run(ctx.report_progress, len(ended), total,
                                  f"job {asked} {job.state.value}")

    deadline = anyio.current_time() + seconds
    while True:
        left = max(0.0, deadline - anyio.current_time())
        try:
            jobs, timed_out = await anyio.to_thread.run_sync(
                functools.partial(tools.wait_once, ids, min(left, WAIT_SLICE), on_end))
        except CodexwError as exc:
            return _error(exc)
        finally:
            process.reap_children()
        if not timed_out or left <= WAIT_SLICE:
            return _answer(tools.waited(jobs, seconds))
        await ctx.report_progress(len(ended), total, f"{total - len(ended)} still running")


async def _reaper() -> None:
    while True:
        process.reap_children()
        await anyio.sleep(REAP_EVERY)


async def serve_stdio(settings: Settings) -> None:
    server = build_server(settings)
    async with anyio.create_task_group() as group:
        group.start_soon(_reaper)
        await server.run_stdio_async()
        group.cancel_scope.cancel()
