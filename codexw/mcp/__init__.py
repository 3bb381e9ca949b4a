"""`codexw mcp`: codexw's services as Model Context Protocol tools, for agents that
orchestrate Codex workers (codexw[mcp], the official `mcp` SDK).

Imported only by the `mcp` command. `tools` holds the work (no SDK), `server` the SDK
binding and the stdio transport, `http` the token-protected streamable HTTP one.
"""

from __future__ import annotations

INSTALL_HINT = (  # codexw is installed from a checkout (README): the extra comes from there too
    "in codexw's environment: pip install '/path/to/codexw[mcp]'"
    " (pipx: pipx inject codexw 'mcp>=2.3,<3')"
)


def sdk_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("mcp") is None or importlib.util.find_spec("uvicorn") is None
