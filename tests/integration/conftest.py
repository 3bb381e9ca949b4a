"""Fixtures shared by the integration tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Env


def git(cwd: Path | str, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def repo(cx: Env) -> Env:
    """The project as a real git repository with one commit."""
    shutil.rmtree(cx.project / ".git")
    git(cx.project, "init", "-q", "-b", "main")
    git(cx.project, "config", "user.name", "Test User")
    git(cx.project, "config", "user.email", "test@example.com")
    (cx.project / "shared.txt").write_text("line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n")
    (cx.project / ".gitignore").write_text(".env\n")
    git(cx.project, "add", ".")
    git(cx.project, "commit", "-qm", "init")
    return cx
