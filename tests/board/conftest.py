"""Fixtures for the board: a real `codexw board` process on 127.0.0.1 and one real
chromium for the whole session, driven by Playwright.

The browser is Debian's chromium (`apt-get install chromium`, as `.ci/run` does),
found on PATH or named by CODEXW_CHROMIUM; Playwright never downloads one. Without
chromium, Playwright or the board extra these tests skip, saying why; with
CODEXW_REQUIRE_E2E=1 (CI) they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env

REQUIRED = os.environ.get("CODEXW_REQUIRE_E2E") == "1"
INSTALL = ("apt-get install chromium; pip install -e '.[dev,board]' (`.ci/run` does both)")


def _unavailable(problem: str) -> None:
    message = f"board browser tests need {problem}; to run them: {INSTALL}"
    if REQUIRED:
        pytest.fail(f"CODEXW_REQUIRE_E2E=1 but {message}")
    pytest.skip(message)


def chromium_path() -> str | None:
    named = os.environ.get("CODEXW_CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium for the board's browser tests (they are one module), started without
    any test's CODEXW_* in its environment, so no test's leftover check ever finds it.

    Module, not session: Playwright's sync API runs an event loop in the main thread
    while it is started, and any later test's `asyncio.run()` would fail beside it."""
    for module in ("starlette", "uvicorn", "playwright"):
        if importlib.util.find_spec(module) is None:
            _unavailable(f"the Python package {module}")
    executable = chromium_path()
    if executable is None:
        _unavailable("chromium")
    from playwright.sync_api import sync_playwright

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CODEXW_", "FAKE_CODEX_"))}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(clean)
    try:
        playwright = sync_playwright().start()
        chromium = playwright.chromium.launch(
            executable_path=executable, env=clean,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield chromium
    chromium.close()
    playwright.stop()


@dataclass
class Board:
    url: str  # with the token
    base: str  # http://127.0.0.1:PORT
    token: str
    proc: subprocess.Popen[str]


@pytest.fixture
def board(cx: Env) -> Iterator[Board]:
    """`codexw board` for the test's project; stopped with Ctrl-C (SIGINT) at the end."""
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec(
            "uvicorn") is None:
        _unavailable("the board extra (starlette, uvicorn)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexw", "board", "--port", "0"], cwd=cx.project, env=cx.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        assert match, f"no URL from codexw board: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"  # type: ignore[union-attr]
        yield Board(match.group(0), match.group(1), match.group(2), proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("codexw board did not stop on Ctrl-C") from None


@pytest.fixture
def page(browser: Any, board: Board) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 860})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(board.url)
    page.wait_for_selector("#live.on")  # the event stream is connected
    yield page
    context.close()


def screenshot_to(name: str) -> Path | None:
    """Where a test saves a screenshot for the docs: CODEXW_SCREENSHOT_DIR (e.g. docs/),
    else nowhere beyond tmp_path."""
    folder = os.environ.get("CODEXW_SCREENSHOT_DIR")
    return Path(folder) / name if folder else None
