"""The board's guard on its own: which requests pass (token, Host, Origin)."""

from __future__ import annotations

from codexw.board.security import Guard, allowed_hosts

TOKEN = "s3cret-token"


async def _app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    pass


def _problem(guard: Guard, method: str = "GET", query: str = f"token={TOKEN}",
             **headers: str) -> str | None:
    scope = {"type": "http", "method": method, "path": "/api/board",
             "query_string": query.encode()}
    return guard.problem(scope, {k.replace("_", "-"): v for k, v in headers.items()})


def test_loopback_board_needs_token_known_host_and_its_own_origin() -> None:
    guard = Guard(_app, TOKEN, allowed_hosts("127.0.0.1", 8765), "c")
    assert _problem(guard, host="127.0.0.1:8765") is None
    assert _problem(guard, host="localhost:8765") is None
    assert _problem(guard, query="", host="127.0.0.1:8765") is not None
    assert _problem(guard, query="", host="127.0.0.1:8765", cookie=f"x=1; c={TOKEN}") is None
    assert _problem(guard, query="token=s3cret", host="127.0.0.1:8765") is not None
    assert "Host" in (_problem(guard, host="rebind.example:8765") or "")
    assert "Host" in (_problem(guard, host="127.0.0.1:9999") or "")
    assert _problem(guard, "POST", host="127.0.0.1:8765",
                    origin="http://127.0.0.1:8765") is None
    # The page's own origin only: not another name of the board, not another site.
    assert _problem(guard, "POST", host="127.0.0.1:8765", origin="http://localhost:8765")
    assert _problem(guard, "POST", host="127.0.0.1:8765", origin="http://evil.example")
    assert _problem(guard, "POST", host="127.0.0.1:8765")
    assert _problem(guard, "POST", host="127.0.0.1:8765", origin="http://127.0.0.1:8765",
                    sec_fetch_site="cross-site")


def test_a_board_on_every_address_answers_to_ip_literals_never_to_other_names() -> None:
    guard = Guard(_app, TOKEN, allowed_hosts("0.0.0.0", 8765, ("buildbox",)), "c",
                  any_ip_port=8765)
    assert _problem(guard, host="192.168.1.20:8765") is None
    assert _problem(guard, host="[fe80::1]:8765") is None
    assert _problem(guard, host="buildbox:8765") is None
    assert _problem(guard, host="192.168.1.20:1234") is not None
    assert _problem(guard, host="attacker.example:8765") is not None
