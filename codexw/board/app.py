"""The board's ASGI app: the page, its JSON API, the live feed (Server-Sent Events).

Every action calls the CLI's own services (launch, batch, kill, retry, continue) in a
worker thread; their typed errors become JSON answers with the same one-line message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from codexw.board import charts
from codexw.board.security import Guard
from codexw.core.errors import CodexwError, NotFoundError, UsageError
from codexw.services import board as service
from codexw.services.board import BoardQuery

STATIC = Path(__file__).resolve().parent / "static"
BODY_LIMIT = 4 << 20  # bytes of a JSON request (a pasted batch)


def _error(exc: CodexwError) -> JSONResponse:
    status = 404 if isinstance(exc, NotFoundError) else (
        400 if exc.exit_code == UsageError.exit_code else 500)
    return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=status)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return await run_in_threadpool(fn, *args)


async def _body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > BODY_LIMIT:
            raise UsageError("request too large", f"at most {BODY_LIMIT >> 20} MiB")
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise UsageError("the request is not JSON") from None
    if not isinstance(data, dict):
        raise UsageError("the request is not a JSON object")
    return data


def _text(data: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise UsageError(f"{key} is missing")
        return None
    if not isinstance(value, str):
        raise UsageError(f"{key} must be text")
    return value


def _int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{key} must be a whole number") from None
    return number


def _targets(data: dict[str, Any]) -> tuple[str, ...] | None:
    """`notify` as typed in a form (targets separated by spaces), None if empty."""
    text = _text(data, "notify")
    return tuple(text.split()) if text else None


def create_app(query: BoardQuery, token: str, hosts: frozenset[str], cookie: str,
               any_ip_port: int | None = None) -> Starlette:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def board(request: Request) -> Response:
        return JSONResponse(await _call(service.snapshot, query))

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            async for snapshot in service.changes(query):
                yield b"event: board\ndata: " + json.dumps(snapshot).encode() + b"\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    async def job(request: Request) -> Response:
        return JSONResponse(await _call(service.job_view, request.path_params["job_id"]))

    async def kill(request: Request) -> Response:
        from codexw.services.kill import kill_jobs

        done = await _call(kill_jobs, [request.path_params["job_id"]])
        return JSONResponse({"killed": [r.to_dict() for r in done]})

    async def retry(request: Request) -> Response:
        from codexw.services.retry import retry_jobs

        done = await _call(retry_jobs, [request.path_params["job_id"]])
        return JSONResponse({"retried": [r.to_dict() for r in done]})

    async def follow_up(request: Request) -> Response:
        from codexw.services.followup import ContinueRequest, continue_job

        data = await _body(request)
        task = _text(data, "task", required=True)
        result = await _call(continue_job, ContinueRequest(request.path_params["job_id"],
                                                           task or ""))
        return JSONResponse(result.to_dict())

    async def launch(request: Request) -> Response:
        from codexw.services.launch import LaunchRequest
        from codexw.services.launch import launch as launch_job

        data = await _body(request)
        after = data.get("after") or []
        if isinstance(after, str):
            after = [a for a in after.replace(",", " ").split() if a]
        try:
            after_ids = tuple(int(a) for a in after)
        except (TypeError, ValueError):
            raise UsageError("after must be job ids") from None
        req = LaunchRequest(
            task=_text(data, "task", required=True) or "",
            level=_text(data, "level"), type=_text(data, "type"), model=_text(data, "model"),
            sandbox=_text(data, "sandbox"), timeout=_text(data, "timeout"),
            retries=_int(data, "retries"), priority=_int(data, "priority") or 0,
            after=after_ids, cwd=_text(data, "cwd") or query.cwd,
            report_sections=False if data.get("no_sections") else None,
            notify=_targets(data),
        )
        result = await _call(launch_job, req)
        return JSONResponse({**result.to_dict(), "waiting_for": result.waiting_for})

    async def batch(request: Request) -> Response:
        from codexw.services.batch import BatchRequest, submit
        from codexw.services.launch import LaunchRequest

        data = await _body(request)
        fmt = _text(data, "format")
        if fmt is not None and fmt not in ("text", "jsonl", "toml"):
            raise UsageError(f"unknown format {fmt!r}", "use text, jsonl or toml")
        req = BatchRequest(
            source="<board>", text=_text(data, "text", required=True) or "", fmt=fmt or "text",
            max_parallel=_int(data, "max_parallel"),
            defaults=LaunchRequest(task="", level=_text(data, "level"),
                                   type=_text(data, "type"), cwd=query.cwd,
                                   notify=_targets(data)),
        )
        submitted = await _call(submit, req)
        return JSONResponse(submitted.to_dict())

    async def stats(request: Request) -> Response:
        numbers = await _call(service.stats, query)
        return JSONResponse({**numbers, "html": charts.stats_html(numbers)})

    async def codexw_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CodexwError)
        return _error(exc)

    routes = [
        Route("/", index),
        Route("/api/board", board),
        Route("/api/events", events),
        Route("/api/stats", stats),
        Route("/api/jobs/{job_id:int}", job),
        Route("/api/jobs/{job_id:int}/kill", kill, methods=["POST"]),
        Route("/api/jobs/{job_id:int}/retry", retry, methods=["POST"]),
        Route("/api/jobs/{job_id:int}/continue", follow_up, methods=["POST"]),
        Route("/api/launch", launch, methods=["POST"]),
        Route("/api/batch", batch, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token, hosts=hosts, cookie=cookie,
                               any_ip_port=any_ip_port)],
        exception_handlers={CodexwError: codexw_error},
    )
