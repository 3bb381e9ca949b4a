"""`codexw board`: a live Kanban of every job in the browser (the `board` extra).

Imported only by the `board` command: starlette and uvicorn are optional. The page,
its script and its styles ship in static/ (no CDN: the board works offline); what it
shows comes from codexw.services.board, what it does goes through the CLI's services.
"""

from __future__ import annotations

import importlib

INSTALL_HINT = (
    "install the board into codexw's environment: pipx inject codexw starlette uvicorn"
    " (without pipx: pip install '/path/to/codexw[board]')"
)


def missing() -> str | None:
    """The first package of the `board` extra that is not installed, or None."""
    for name in ("starlette", "uvicorn"):
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None
