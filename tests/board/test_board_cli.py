"""`codexw board`'s command line: what it refuses before serving anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from codexw import board
from tests.conftest import Env


def test_a_host_beyond_this_machine_needs_allow_remote(cx: Env) -> None:
    if board.missing() is not None:
        pytest.skip("the board extra is not installed")
    proc = cx.run("board", "--host", "0.0.0.0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "codexw: --host 0.0.0.0 would let other machines reach the board (add --allow-remote"
        " if that is what you want (anyone with the URL's token can see and run jobs))"
    ]
    assert cx.run("board", "--port", "70000").returncode == 2


def test_without_the_extra_board_names_the_command_that_installs_it(cx: Env) -> None:
    # uvicorn made unimportable, as in an environment without codexw[board].
    code = ("import sys; sys.modules['uvicorn'] = None; sys.argv = ['codexw', 'board'];"
            " from codexw.cli.app import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cx.env, cwd=cx.project, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"codexw: the board needs uvicorn, which is not installed ({board.INSTALL_HINT})"
    ]
