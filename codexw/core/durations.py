"""Parse durations like 90s, 20m, 2h, 7d."""

from __future__ import annotations

import re

from codexw.core.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(text: str, default_unit: str = "s", what: str = "duration") -> float:
    """Return seconds. A bare number uses `default_unit`."""
    match = _RE.fullmatch(str(text).strip())
    if not match:
        raise UsageError(
            f"invalid {what} {text!r}", "use a number with a unit: 90s, 20m, 2h or 7d"
        )
    value = float(match.group(1)) * _UNITS[match.group(2) or default_unit]
    if value <= 0:
        raise UsageError(f"invalid {what} {text!r}", "it must be greater than zero")
    return value


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"
