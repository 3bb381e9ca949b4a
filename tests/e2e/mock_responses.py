"""A scriptable stand-in for the OpenAI Responses API, for driving the real codex CLI.

Standard library only. It listens on 127.0.0.1 (random port, one thread per
connection), answers `POST /v1/responses` with Server-Sent Events the way codex
0.169.0 reads them (see CODEX_CLI.md), and records every request.

A test scripts the answers in order, one per *turn request* (a request that does
not carry a tool result):

    server.script(Message("done"), Fail(429), Shell("echo hi > a.txt", then=Message("ok")))

`Shell` answers with a `function_call` to codex's `exec_command` tool; codex runs
the command and sends a follow-up request holding the `function_call_output`,
which the server answers with `then` (matched by call id, so parallel jobs do not
mix up their follow-ups). `Call` does the same for any tool, such as an MCP server's
(`namespace="mcp__codexw"`). When the script is empty, `server.default` answers.

Every answer can `hold` the stream open for some seconds (after `response.created`,
or until `release()`) and report `usage`. The server records, per request: path, model,
`reasoning.effort`, the user text, tool results, the conversation key
(`prompt_cache_key`, which codex sets to the thread id) and when it started and
ended; `max_in_flight` is the most requests that were open at the same moment.

A shared limit, as the real API has per key: `limit_in_flight = K` answers 429 to a
request that arrives while K streams are open (without a Retry-After header, as the
real API often does), and `tokens_per_window = N` answers 429 once the responses of the
last `token_window` seconds (60 by default) reported N tokens. A request refused this
way is recorded with status 429 and counted in `rejected`; it does not hold a stream.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_USAGE = {"input_tokens": 100, "cached_input_tokens": 0, "output_tokens": 20,
                 "reasoning_output_tokens": 0}


@dataclass
class Message:
    """Answer with an assistant message (the agent's final message of the turn)."""

    text: str = "done"
    hold: float = 0.0
    usage: dict[str, int] | None = None


@dataclass
class Shell:
    """Ask codex to run `cmd` through `exec_command`; answer the follow-up with `then`."""

    cmd: str
    then: Message | Shell | Call = field(default_factory=Message)
    hold: float = 0.0
    usage: dict[str, int] | None = None


@dataclass
class Fail:
    """Answer with an HTTP error status (500, 429, …) and an OpenAI-style error body."""

    status: int = 500
    message: str | None = None
    hold: float = 0.0


@dataclass
class Call:
    """Ask codex to call tool `name` with `arguments`, in `namespace` for an MCP
    server's tools (codex 0.169.0 offers them as `{"type": "namespace", "name":
    "mcp__<server>", "tools": [...]}`); answer the follow-up with `then`.

    codex starts its MCP servers beside the first request, so that request may not
    offer them yet: until a request does, the call waits behind `sleep 0.2` commands."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    then: Message | Shell | Call = field(default_factory=Message)
    hold: float = 0.0
    usage: dict[str, int] | None = None


Reply = Message | Shell | Call | Fail


@dataclass
class Request:
    """What the server saw of one request."""

    number: int
    path: str
    body: dict[str, Any]
    started: float
    ended: float | None = None
    status: int | None = None
    limited: bool = False  # refused by the shared limit (429)

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def effort(self) -> str | None:
        reasoning = self.body.get("reasoning") or {}
        return reasoning.get("effort") if isinstance(reasoning, dict) else None

    @property
    def conversation(self) -> str | None:
        """codex's thread id for this request (its prompt cache key)."""
        return self.body.get("prompt_cache_key")

    def _items(self) -> list[dict[str, Any]]:
        items = self.body.get("input")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    @property
    def tool_names(self) -> set[str]:
        """The tools (and tool namespaces) this request offers the model."""
        tools = self.body.get("tools")
        return {t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)} \
            if isinstance(tools, list) else set()

    @property
    def user_texts(self) -> list[str]:
        """Texts of the user's messages, in order (codex's own context blocks included)."""
        texts = []
        for item in self._items():
            if item.get("type") == "message" and item.get("role") == "user":
                for part in item.get("content") or []:
                    if isinstance(part, dict) and part.get("type") == "input_text":
                        texts.append(str(part.get("text", "")))
        return texts

    @property
    def text(self) -> str:
        return "\n".join(self.user_texts)

    @property
    def tool_outputs(self) -> dict[str, str]:
        """call id → output of every function call result in the input."""
        found = {}
        for item in self._items():
            if item.get("type") == "function_call_output":
                output = item.get("output")
                found[str(item.get("call_id"))] = (
                    output if isinstance(output, str) else json.dumps(output)
                )
        return found

    @property
    def assistant_texts(self) -> list[str]:
        texts = []
        for item in self._items():
            if item.get("type") == "message" and item.get("role") == "assistant":
                for part in item.get("content") or []:
                    if isinstance(part, dict) and part.get("type") == "output_text":
                        texts.append(str(part.get("text", "")))
        return texts


class MockResponses:
    """The server. Use as a context manager, or call start() and stop()."""

    def __init__(self) -> None:
        self.default: Reply = Message("done")
        self.requests: list[Request] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._script: list[Reply] = []
        self._pending: dict[str, Message | Shell | Call] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._released = threading.Event()
        self.limit_in_flight: int | None = None
        self.tokens_per_window: int | None = None
        self.token_window = 60.0
        self.rejected = 0
        self._spent: list[tuple[float, int]] = []  # (when, tokens) of answered responses
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> MockResponses:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="mock-responses",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()  # ends every hold at once
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> MockResponses:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- scripting --------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue answers for the next turn requests, in order."""
        with self._lock:
            self._script.extend(replies)

    def turn_requests(self) -> list[Request]:
        """Requests that start a turn (not tool follow-ups)."""
        with self._lock:
            return [r for r in self.requests if not r.tool_outputs]

    def wait_for_requests(self, count: int, timeout: float = 60.0) -> list[Request]:
        """Block until `count` requests have arrived (event-driven, no sleeps)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"the mock server saw {len(self.requests)} requests, expected {count}"
                    )
                self._lock.wait(left)
            return list(self.requests)

    def wait_in_flight(self, count: int, timeout: float = 60.0) -> None:
        """Block until at least `count` requests are open at once."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._in_flight < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"never {count} requests in flight (now {self._in_flight})"
                    )
                self._lock.wait(left)

    # -- serving ----------------------------------------------------------------------

    def _limited(self, now: float) -> bool:
        if self.limit_in_flight is not None and self._in_flight >= self.limit_in_flight:
            return True
        if self.tokens_per_window is not None:
            self._spent = [(t, n) for t, n in self._spent if t > now - self.token_window]
            return sum(n for _, n in self._spent) >= self.tokens_per_window
        return False

    def _begin(self, path: str, body: dict[str, Any]) -> tuple[Request, Reply]:
        with self._lock:
            request = Request(len(self.requests) + 1, path, body, time.time())
            self.requests.append(request)
            if self._limited(request.started):
                self.rejected += 1
                request.limited = True
                self._lock.notify_all()
                return request, Fail(429, "Rate limit reached. Too Many Requests")
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            reply: Reply | None = None
            for call_id in request.tool_outputs:
                if call_id in self._pending:
                    reply = self._pending.pop(call_id)
                    break
            if reply is None:
                reply = self._script.pop(0) if self._script else self.default
            if isinstance(reply, Call) and reply.namespace and \
                    reply.namespace not in request.tool_names:
                reply = Shell("sleep 0.2", then=reply)  # its MCP server is still starting
            self._lock.notify_all()
            return request, reply

    def _end(self, request: Request, status: int) -> None:
        with self._lock:
            request.ended = time.time()
            request.status = status
            if not request.limited:
                self._in_flight -= 1
            self._lock.notify_all()

    def release(self) -> None:
        """End every hold now, and make later holds return at once."""
        self._released.set()

    def _hold(self, seconds: float) -> None:
        if seconds > 0:
            self._released.wait(seconds)

    def _events(self, reply: Message | Shell | Call) -> Iterator[dict[str, Any]]:
        n = next(self._ids)
        response_id = f"resp_{n}"
        yield {"type": "response.created", "response": {"id": response_id}}
        if isinstance(reply, Shell):
            call_id = f"call_{n}"
            with self._lock:
                self._pending[call_id] = reply.then
            item: dict[str, Any] = {
                "type": "function_call", "id": f"fc_{n}", "call_id": call_id,
                "name": "exec_command", "arguments": json.dumps({"cmd": reply.cmd}),
            }
        elif isinstance(reply, Call):
            call_id = f"call_{n}"
            with self._lock:
                self._pending[call_id] = reply.then
            item = {"type": "function_call", "id": f"fc_{n}", "call_id": call_id,
                    "name": reply.name, "arguments": json.dumps(reply.arguments)}
            if reply.namespace:
                item["namespace"] = reply.namespace
        else:
            item = {"type": "message", "role": "assistant", "id": f"msg_{n}",
                    "content": [{"type": "output_text", "text": reply.text}]}
        yield {"type": "response.output_item.added", "output_index": 0, "item": item}
        self._hold(reply.hold)
        yield {"type": "response.output_item.done", "output_index": 0, "item": item}
        usage = reply.usage or DEFAULT_USAGE
        with self._lock:
            self._spent.append((time.time(), usage.get("input_tokens", 0)
                                + usage.get("output_tokens", 0)))
        yield {"type": "response.completed",
               "response": {"id": response_id, "usage": _wire_usage(usage)}}


def _wire_usage(usage: dict[str, int]) -> dict[str, Any]:
    """codex's usage keys → the Responses API's usage object."""
    inp = usage.get("input_tokens", 0)
    out = usage.get("output_tokens", 0)
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": usage.get("cached_input_tokens", 0)},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": usage.get("reasoning_output_tokens", 0)},
        "total_tokens": inp + out,
    }


_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def _handler_for(server: MockResponses) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            # codex may look for /models; we have none to offer.
            self._plain(404, {"error": {"message": "not found", "type": "not_found"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            if not isinstance(body, dict):
                body = {"_raw": body}
            request, reply = server._begin(self.path, body)
            status = 200
            try:
                if not self.path.rstrip("/").endswith("/responses"):
                    status = 404
                    self._plain(404, {"error": {"message": f"no route {self.path}"}})
                elif isinstance(reply, Fail):
                    status = reply.status
                    server._hold(reply.hold)
                    message = reply.message or _REASONS.get(reply.status, "error")
                    self._plain(reply.status, {"error": {
                        "message": message, "type": "server_error" if status >= 500 else
                        "rate_limit_exceeded", "code": None}})
                else:
                    self._stream(reply)
            except (BrokenPipeError, ConnectionResetError):
                status = 499  # the client went away (killed or timed out)
            finally:
                server._end(request, status)

        def _plain(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, reply: Message | Shell | Call) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for event in server._events(reply):
                chunk = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
                self.wfile.write(chunk)
                self.wfile.flush()

    return Handler
