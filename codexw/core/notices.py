"""One-line notices from core for the user (e.g. the keys of an untrusted project config
being ignored). Core never prints: the CLI sets the sink (stderr). A module of its own so
that setting the sink costs every command nothing (config.py takes ~8 ms to import)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

_sink: Callable[[str], None] | None = None
_given: set[str] = set()


def set_sink(sink: Callable[[str], None] | None) -> None:
    global _sink
    _sink = sink


def notice(message: str) -> None:
    """Give `message` to the sink, once per process (config may be loaded twice)."""
    if _sink is not None and message not in _given:
        _given.add(message)
        _sink(message)
