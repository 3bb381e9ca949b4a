"""Wake-ups without polling: every registry write pokes the FIFOs of waiting commands.

A waiter (`wait`, `logs -f`, a foreground `batch`) creates a FIFO in
<state>/notify and selects on it; writers call `broadcast()` after each commit.
A FIFO nobody reads any more (its waiter died) is removed by the next writer.
"""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path

from codexw.core import paths


def notify_dir() -> Path:
    return paths.state_dir() / "notify"


def broadcast() -> None:
    directory = notify_dir()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith("."):  # a Listener still setting up its FIFO (see below)
            continue
        path = directory / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader left: a dead waiter's FIFO
                try:
                    os.unlink(path)
                except OSError:
                    pass
            continue
        try:
            os.write(fd, b".")
        except OSError:  # pipe full: that waiter has a wake-up pending anyway
            pass
        finally:
            os.close(fd)


class Listener:
    """A FIFO this process reads; `wait(timeout)` returns when anyone broadcasts."""

    def __init__(self) -> None:
        directory = notify_dir()
        paths.ensure_state_dir()  # not mkdir(parents=True): that would make it 0755
        directory.mkdir(exist_ok=True, mode=0o700)
        name = f"{os.getpid()}.{os.urandom(4).hex()}.fifo"
        self.path = directory / name
        # Made under a hidden name, opened, then renamed into view: a broadcaster
        # that saw the FIFO before its reader was open took it for a dead waiter's
        # and removed it, and the open below failed (found by 50 concurrent commands).
        hidden = directory / f".{name}"
        os.mkfifo(hidden, 0o600)
        self._read_fd = os.open(hidden, os.O_RDONLY | os.O_NONBLOCK)
        # Holding a writer ourselves keeps the FIFO from signalling EOF forever.
        self._keep_fd = os.open(hidden, os.O_WRONLY | os.O_NONBLOCK)
        os.rename(hidden, self.path)

    def fileno(self) -> int:
        return self._read_fd

    def drain(self) -> None:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float | None, extra_fds: list[int] | None = None) -> list[int]:
        """Block until a broadcast, one of `extra_fds` is ready, or `timeout`."""
        fds = [self._read_fd, *(extra_fds or [])]
        ready, _, _ = select.select(fds, [], [], timeout)
        if self._read_fd in ready:
            self.drain()
        return ready

    def close(self) -> None:
        for fd in (self._read_fd, self._keep_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
