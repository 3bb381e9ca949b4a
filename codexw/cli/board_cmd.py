"""`codexw board`: serve the live Kanban of jobs on this machine's loopback."""

from __future__ import annotations

import os
import sys

import typer

from codexw.cli import render
from codexw.core.errors import UsageError


def board(
    port: int = typer.Option(0, "--port", metavar="PORT", help="Port to listen on. [default: any free port]"),
    host: str = typer.Option("127.0.0.1", "--host", metavar="HOST", help="Address to listen on; other than loopback needs --allow-remote. [default: 127.0.0.1]"),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a --host that other machines can reach (prints a warning)."),
    all_projects: bool = typer.Option(False, "--all-projects", help="Show the jobs of every project, not only this one."),
    open_browser: bool = typer.Option(False, "--open", help="Open the board in the web browser."),
) -> None:
    """Serve a live board of jobs (Kanban) in the browser, on http://127.0.0.1:PORT/.

    Prints the URL with its token (needed by every request; kept in a cookie after the
    first visit). Cards move as jobs change, without reloading. Ctrl-C stops it.
    Needs the board extra: pipx inject codexw starlette uvicorn.
    """
    from codexw import board as board_pkg

    name = board_pkg.missing()
    if name is not None:
        raise UsageError(f"the board needs {name}, which is not installed", board_pkg.INSTALL_HINT)
    from codexw.board.server import prepare, run
    from codexw.services.board import BoardQuery

    served = prepare(host, port, BoardQuery(cwd=os.getcwd(), all_projects=all_projects),
                     allow_remote=allow_remote)
    if served.remote:
        render.warn(f"the board listens on {host}, beyond this machine: anyone who can reach"
                    " it and has the URL's token can see and run jobs")
    render.write(f"board: {served.url}\n(Ctrl-C stops it)\n")
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(served.url)
    run(served)
