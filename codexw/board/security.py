"""Who may talk to the board: a token, the Host header and the Origin, on every request.

- The URL `codexw board` prints carries a random token; the first visit trades it for
  a cookie (HttpOnly, SameSite=Strict) and is redirected to the URL without it. Every
  request needs the token, from the cookie or the query string: another local user's
  browser or process, or a web page, does not have it.
- Host must be one the board listens as (127.0.0.1:PORT, localhost:PORT, [::1]:PORT,
  or the --host given): a DNS-rebinding page reaches the board under its own name.
- A request with an Origin must come from the board's own origin, and a request that
  changes something (POST) must carry one: no cross-site form or fetch posts here.

Every answer carries a Content-Security-Policy that allows the board's own script and
styles only (no inline script), so a report's text can never run as code.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
     b" connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
SAFE_METHODS = frozenset({"GET", "HEAD"})


def allowed_hosts(host: str, port: int, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Host header values the board answers to."""
    names = {"127.0.0.1", "localhost", "[::1]", *extra}
    if host not in ("0.0.0.0", "::"):
        names.add(f"[{host}]" if ":" in host else host)
    return frozenset(f"{name}:{port}".lower() for name in names)


class Guard:
    """ASGI middleware in front of the whole app (pages, API, events, static files)."""

    def __init__(self, app: ASGIApp, token: str, hosts: frozenset[str], cookie: str,
                 any_ip_port: int | None = None) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = hosts
        self.cookie = cookie
        # Listening on every address (--host 0.0.0.0 --allow-remote): any IP literal on
        # this port is also a name of this board. DNS rebinding needs a DNS name.
        self.any_ip_port = any_ip_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await _refuse(send, 403, "only HTTP")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        problem = self.problem(scope, headers)
        if problem is not None:
            await _refuse(send, 403, problem)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token") and scope["method"] in SAFE_METHODS and scope["path"] == "/":
            # The first visit: the token goes into a cookie and out of the address bar.
            await _redirect_with_cookie(send, self.cookie, self.token.decode())
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, secured)

    def problem(self, scope: Scope, headers: dict[str, str]) -> str | None:
        """Why this request is refused, None if it may pass."""
        host = headers.get("host", "").lower()
        if not self.known(host):
            return "unknown Host: the board answers only to the address it printed"
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"http://{host}":  # the page's own only
            return "cross-origin request refused"
        if scope["method"] not in SAFE_METHODS:
            if origin is None:
                return "a request that changes something must come from the board's page"
            if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return "cross-site request refused"
        if not self.has_token(scope, headers):
            return "missing or wrong token: open the URL `codexw board` printed"
        return None

    def known(self, host: str) -> bool:
        """Whether `host` (HOST:PORT, from a Host header or an Origin) names this board."""
        if host in self.hosts:
            return True
        if self.any_ip_port is None:
            return False
        name, _, port = host.rpartition(":")
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return port == str(self.any_ip_port)

    def has_token(self, scope: Scope, headers: dict[str, str]) -> bool:
        offered: list[str] = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(
            "token", [])
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie:
                offered.append(value)
        return any(hmac.compare_digest(value.encode(), self.token) for value in offered)


async def _refuse(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(send: Send, cookie: str, token: str) -> None:
    value = f"{cookie}={token}; Path=/; HttpOnly; SameSite=Strict".encode()
    await send({"type": "http.response.start", "status": 303, "headers": [
        (b"location", b"/"), (b"set-cookie", value), (b"content-length", b"0"),
        *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": b""})
