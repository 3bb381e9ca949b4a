"""A closing terminal (SIGHUP) must not cut `launch` or `batch` in half.

Recording jobs and starting their runners takes a moment (longer while another
codexw holds the registry's write lock). SIGHUP's default action would end the
command anywhere in between, leaving a job queued with nobody to start it until
the next codexw command. While this guard is active a hang-up is only noted (the
handler sets a flag, nothing else); the command finishes what it began, then
leaves quietly since nobody is left to read its output. Runners live in their
own sessions: the hang-up never reaches them.
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType


class deferred_hangup:  # noqa: N801 - used as a context manager, like contextlib's
    def __init__(self) -> None:
        self.received = False
        self._previous: object = None

    def _note(self, _signum: int, _frame: FrameType | None) -> None:
        self.received = True

    def __enter__(self) -> deferred_hangup:
        self._previous = signal.signal(signal.SIGHUP, self._note)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        signal.signal(signal.SIGHUP, self._previous)  # type: ignore[arg-type]
