"""Shared fixtures: an isolated codexw (state, config, project) and a fake codex on PATH.

Every test that starts processes gets `no_leftovers`: at the end, no process that
carries this test's CODEXW_STATE_DIR in its environment may still run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAKE = REPO / "tests" / "fakes" / "fake_codex.py"


def processes_with_env(marker: str) -> list[int]:
    """PIDs whose environment holds `marker` (our test's state dir)."""
    needle = marker.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
            with open(f"/proc/{name}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll a predicate with a generous deadline (for things with no event to wait on)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


@dataclass
class Env:
    tmp: Path
    state: Path
    project: Path
    fake_state: Path
    bin_dir: Path
    env: dict[str, str]

    def run(
        self, *args: str, input: str | bytes | None = None, cwd: Path | None = None,
        timeout: float = 120, env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [sys.executable, "-m", "codexw", *args],
            input=data if data is not None else b"",
            capture_output=True,
            cwd=cwd or self.project,
            env={**self.env, **(env or {})},
            timeout=timeout,
        )
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
        )

    def ok(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
        proc = self.run(*args, **kw)
        assert proc.returncode == 0, f"codexw {' '.join(args)} → {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def launch(self, task: str, *args: str) -> dict:
        return json.loads(self.ok("launch", "--json", *args, task).stdout)

    def job(self, job_id: int) -> dict:
        return json.loads(self.ok("status", "--json", str(job_id)).stdout)["job"]

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.state / "codexw.db")
        conn.row_factory = sqlite3.Row
        return conn

    def fake_runs(self) -> list[dict]:
        path = self.fake_state / "runs.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def max_running(self) -> int:
        path = self.fake_state / "max_running"
        return int(path.read_text()) if path.exists() else 0

    def reports(self, job_type: str = "workers") -> list[Path]:
        folder = self.project / ".codexw" / job_type
        return sorted(folder.glob("*.md")) if folder.exists() else []


@pytest.fixture(scope="session")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pycache")


@pytest.fixture
def cx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pycache: Path) -> Iterator[Env]:
    state = tmp_path / "state"
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    codex = bin_dir / "codex"
    codex.write_text(
        f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {str(FAKE)!r}\n"
        f"runpy.run_path({str(FAKE)!r}, run_name='__main__')\n"
    )
    codex.chmod(0o755)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(
        'backoff_base = "0.2s"\nkill_grace = "3s"\nrate_limit_backoff = "0.2s"\n')
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("CODEXW_", "FAKE_CODEX_", "CODEX_HOME"))
    }
    env.update(
        CODEXW_STATE_DIR=str(state),
        CODEXW_CONFIG_DIR=str(config_dir),
        FAKE_CODEX_STATE=str(tmp_path / "fake"),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        NO_COLOR="1",
        # Bytecode is cached once per session, under the session's temp dir (not the
        # tree): without it every codexw process would recompile codexw.
        PYTHONPYCACHEPREFIX=str(pycache),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    e = Env(tmp_path, state, project, tmp_path / "fake", bin_dir, env)
    yield e
    marker = f"CODEXW_STATE_DIR={state}"
    try:
        wait_until(lambda: not processes_with_env(marker), timeout=20, what="codexw processes to exit")
    except AssertionError:
        left = processes_with_env(marker)
        details = []
        for pid in left:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                details.append(f"{pid}: {cmdline!r}")
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        raise AssertionError("processes left behind:\n" + "\n".join(details)) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow", action="store_true", help="also run tests marked slow or e2e (CI does)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords or "e2e" in item.keywords:
            item.add_marker(skip)
