"""codex app-server notifications → the `codex exec --json` events codexw already reads.

An app-server job's log holds exec-format lines, so `RunSummary`, the reports, `logs` and
`logs -f` work on it unchanged. Only what those read is carried over; the app-server's
own shapes (camelCase items, usage in `thread/tokenUsage/updated`) stop here. Checked
against `codex app-server generate-json-schema` of the pinned codex (tests/e2e).
"""

from __future__ import annotations

from typing import Any

from codexw.core.models import TOKEN_KEYS

_STATUS = {"inProgress": "in_progress", "completed": "completed", "failed": "failed",
           "declined": "declined"}
_USAGE = {"inputTokens": "input_tokens", "cachedInputTokens": "cached_input_tokens",
          "outputTokens": "output_tokens", "reasoningOutputTokens": "reasoning_output_tokens"}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _kind(value: Any) -> str:
    """A file change's kind: a string, or `{"type": "add"}` in the v2 schema."""
    if isinstance(value, dict):
        value = value.get("type")
    return value if isinstance(value, str) else "update"


def item(raw: Any) -> dict[str, Any] | None:
    """One app-server thread item as an exec item, or None for kinds exec does not show."""
    if not isinstance(raw, dict):
        return None
    kind, ident = raw.get("type"), _text(raw.get("id"))
    status = _STATUS.get(_text(raw.get("status")), "completed")
    if kind == "commandExecution":
        return {"id": ident, "type": "command_execution", "command": _text(raw.get("command")),
                "aggregated_output": _text(raw.get("aggregatedOutput")),
                "exit_code": raw.get("exitCode") if isinstance(raw.get("exitCode"), int) else None,
                "status": status}
    if kind == "agentMessage":
        return {"id": ident, "type": "agent_message", "text": _text(raw.get("text"))}
    if kind == "fileChange":
        changes = _list(raw.get("changes"))
        return {"id": ident, "type": "file_change", "status": status,
                "changes": [{"path": _text(c.get("path")), "kind": _kind(c.get("kind"))}
                            for c in changes if isinstance(c, dict)]}
    if kind == "reasoning":
        parts = _list(raw.get("summary"))
        return {"id": ident, "type": "reasoning", "text": "\n".join(map(_text, parts))}
    if kind == "mcpToolCall":
        return {"id": ident, "type": "mcp_tool_call", "server": _text(raw.get("server")),
                "tool": _text(raw.get("tool")), "status": status}
    if kind == "webSearch":
        return {"id": ident, "type": "web_search", "query": _text(raw.get("query"))}
    return None


def usage_of(params: dict[str, Any]) -> dict[str, int]:
    """The tokens of the latest model response, from `thread/tokenUsage/updated`."""
    usage = params.get("tokenUsage")
    last = usage.get("last") if isinstance(usage, dict) else None
    if not isinstance(last, dict):
        return {}
    out = {}
    for theirs, ours in _USAGE.items():
        value = last.get(theirs)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[ours] = value
    return out


def turn_usage(total: dict[str, int]) -> dict[str, int]:
    return {key: total.get(key, 0) for key in TOKEN_KEYS}
