"""`codexw mcp`: serve codexw's tools to agents over the Model Context Protocol."""

from __future__ import annotations

import sys

import typer

from codexw.cli import render
from codexw.core.errors import UsageError


def mcp(
    http: int = typer.Option(None, "--http", metavar="PORT", help="Serve streamable HTTP on 127.0.0.1:PORT (0: any free port) instead of stdio; requests need the bearer token."),
    allow_full_access: bool = typer.Option(False, "--allow-full-access", help="Let callers launch jobs with sandbox danger-full-access (refused otherwise)."),
) -> None:
    """Serve launch, batch, status, wait, result, logs, kill and continue as MCP tools.

    Over stdio by default (an MCP client starts `codexw mcp` itself). The server keeps
    no state of its own: jobs it launched run on if it stops. With --http, the token is
    in <state dir>/mcp-token (made on first use); clients send
    `Authorization: Bearer <token>`. See docs/mcp.md.
    """
    from codexw.mcp import INSTALL_HINT, sdk_missing

    if sdk_missing():
        raise UsageError("the MCP server is not installed", INSTALL_HINT)
    import anyio

    from codexw.mcp.tools import Settings

    settings = Settings(allow_full_access=allow_full_access)
    if http is None:
        from codexw.mcp.server import serve_stdio

        anyio.run(serve_stdio, settings)
        return
    from codexw.mcp.http import PATH, bind, load_token, serve_http, token_path

    token = load_token()
    sock = bind(http)
    port = sock.getsockname()[1]
    sys.stderr.write(render.clean(
        f"codexw mcp: serving http://127.0.0.1:{port}{PATH}"
        f" (header Authorization: Bearer <the token in {token_path()}>)\n"))
    sys.stderr.flush()
    anyio.run(serve_http, settings, sock, token)
