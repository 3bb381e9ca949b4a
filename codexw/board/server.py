"""Start the board: bind the socket first (so the printed URL is true), then serve."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass

from codexw.board.security import allowed_hosts
from codexw.core.errors import UsageError
from codexw.services.board import BoardQuery


@dataclass
class Board:
    url: str
    host: str
    port: int
    token: str
    query: BoardQuery
    sock: socket.socket
    remote: bool  # listening beyond this machine (--host with --allow-remote)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare(host: str, port: int, query: BoardQuery, allow_remote: bool = False) -> Board:
    """Check the address, bind it, make the token. Nothing listens beyond this machine
    unless asked twice: --host and --allow-remote."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is out of range", "0 (any free port) to 65535")
    remote = not is_loopback(host)
    if remote and not allow_remote:
        raise UsageError(
            f"--host {host} would let other machines reach the board",
            "add --allow-remote if that is what you want (anyone with the URL's token can"
            " see and run jobs)",
        )
    bind_host = "127.0.0.1" if host == "localhost" else host
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind_host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         "choose another --port (0: any free port)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    shown = "127.0.0.1" if bind_host in ("0.0.0.0", "::") else bind_host
    shown = f"[{shown}]" if ":" in shown else shown
    return Board(f"http://{shown}:{port}/?token={token}", host, port, token, query, sock, remote)


def run(board: Board) -> None:
    """Serve until interrupted (Ctrl-C)."""
    import uvicorn

    from codexw.board.app import create_app

    extra = () if not board.remote else (socket.gethostname(), socket.getfqdn())
    wildcard = board.host in ("0.0.0.0", "::")
    app = create_app(board.query, board.token, allowed_hosts(board.host, board.port, extra),
                     cookie=f"codexw_board_{board.port}",
                     any_ip_port=board.port if wildcard else None)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                            timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[board.sock])
