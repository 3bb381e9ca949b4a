"""`codexw mcp --http PORT`: streamable HTTP on 127.0.0.1, for clients that cannot start
a process. Every request must carry `Authorization: Bearer <token>`, a Host naming
this server (no DNS rebinding) and no foreign Origin (no web page can call it).

The token is made once (`<state dir>/mcp-token`, 0600) and kept, so a client
configured with it keeps working across restarts; delete the file for a new one.
"""

from __future__ import annotations

import hmac
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from codexw.core import paths
from codexw.core.errors import StoreError, UsageError
from codexw.mcp.tools import Settings

HOST = "127.0.0.1"
PATH = "/mcp"
TOKEN_FILE = "mcp-token"


def token_path() -> Path:
    return paths.state_dir() / TOKEN_FILE


def load_token() -> str:
    """The server's bearer token, made on first use (O_EXCL: two servers starting at
    once agree on one)."""
    path = token_path()
    try:
        paths.ensure_state_dir()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
        with open(path, encoding="ascii") as fh:
            token = fh.read().strip()
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read or make the MCP token {path}: {exc}") from None
    if len(token) < 32:
        raise StoreError(f"the MCP token in {path} is too short",
                         "delete the file: a new one is made on the next start")
    return token


class Guard:
    """ASGI middleware in front of the SDK's app: the token, Host and Origin checks."""

    def __init__(self, app: Any, token: str, port: int) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.hosts = {f"{HOST}:{port}".encode(), f"localhost:{port}".encode()}
        self.origins = {b"http://" + h for h in self.hosts}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.lower(), []).append(value)
        host = headers.get(b"host", [])
        origin = headers.get(b"origin", [])
        auth = headers.get(b"authorization", [])
        if len(host) != 1 or host[0] not in self.hosts:
            await _refuse(send, 421, "unknown Host: use http://127.0.0.1:PORT/mcp")
        elif len(origin) > 1 or (origin and origin[0] not in self.origins):
            await _refuse(send, 403, "foreign Origin refused")
        elif len(auth) != 1 or not hmac.compare_digest(auth[0], self.expected):
            await _refuse(send, 401, "missing or wrong bearer token (see codexw mcp --help)")
        else:
            await self.app(scope, receive, send)


async def _refuse(send: Any, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer")] if status == 401 else
                [(b"content-type", b"text/plain; charset=utf-8"),
                 (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def bind(port: int) -> socket.socket:
    """The listening socket on 127.0.0.1 (port 0: any free one)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--http {port}: not a port number", "use 1 to 65535, or 0 for any free port")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"--http {port}: cannot listen on {HOST}:{port}: {exc.strerror}",
                         "choose another port") from None
    sock.listen(64)
    sock.set_inheritable(False)
    return sock


async def serve_http(settings: Settings, sock: socket.socket, token: str) -> None:
    import anyio
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    from codexw.mcp.server import _reaper, build_server

    port = sock.getsockname()[1]
    hosts = [f"{HOST}:{port}", f"localhost:{port}"]
    app = build_server(settings).streamable_http_app(
        streamable_http_path=PATH,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=hosts,
            allowed_origins=[f"http://{h}" for h in hosts]),
        host=HOST,
    )
    config = uvicorn.Config(Guard(app, token, port), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(_reaper)
        await server.serve(sockets=[sock])
        group.cancel_scope.cancel()
