"""Races found by the concurrency tests, pinned down deterministically."""

from __future__ import annotations

import os

import pytest

from codexw.core import notify
from tests.conftest import Env


def test_broadcast_during_listener_setup_neither_removes_nor_misses_the_fifo(
    cx: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkfifo = os.mkfifo

    def mkfifo_then_someone_broadcasts(path, mode=0o666, *a, **kw):  # type: ignore[no-untyped-def]
        real_mkfifo(path, mode, *a, **kw)
        notify.broadcast()  # another codexw commits right now, before the reader is open

    monkeypatch.setattr(notify.os, "mkfifo", mkfifo_then_someone_broadcasts)
    with notify.Listener() as listener:
        assert listener.path.exists()
        notify.broadcast()
        assert listener.wait(5.0) == [listener.fileno()]  # and the wake-up arrives
    assert not list(notify.notify_dir().iterdir())
