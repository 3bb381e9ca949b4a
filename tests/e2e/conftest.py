"""Fixtures for driving the real codex CLI through codexw against the mock server.

CODEXW_E2E_CODEX names the codex to run (`.ci/run` installs the pinned version with
npm and sets it). Without it these tests skip, saying why; with CODEXW_REQUIRE_E2E=1
(CI) a missing codex fails them instead.

Each test gets: its own mock Responses server on 127.0.0.1, its own CODEX_HOME whose
config.toml selects that server as a custom provider (no login needed, no retries
inside codex), its own HOME, and a real git repository as the project (`cx.project`),
so every `cx.run(...)` works there with the real codex.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.e2e.mock_responses import MockResponses

CODEX_ENV = "CODEXW_E2E_CODEX"
REQUIRE_ENV = "CODEXW_REQUIRE_E2E"
PINNED = "0.169.0"
INSTALL = (
    f"npm install --prefix .cache/codex @openai/codex@{PINNED} && export "
    f"{CODEX_ENV}=$PWD/.cache/codex/node_modules/.bin/codex (`.ci/run` does both)"
)

PROVIDER_CONFIG = """\
model = "mock-model"
model_provider = "mock"

[model_providers.mock]
name = "mock"
base_url = "{base_url}"
wire_api = "responses"
env_key = "MOCK_API_KEY"
request_max_retries = 0
stream_max_retries = 0
"""


def real_codex() -> str:
    """The codex under test, or skip (fail in CI) with the reason."""
    path = os.environ.get(CODEX_ENV, "")
    if not path:
        problem = f"{CODEX_ENV} is not set"
    elif not os.path.isfile(path):
        problem = f"{CODEX_ENV}={path} does not exist"
    elif not os.access(path, os.X_OK):
        problem = f"{CODEX_ENV}={path} is not executable"
    else:
        return os.path.abspath(path)
    message = f"real codex CLI unavailable: {problem}; to run the e2e tests: {INSTALL}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {message}", pytrace=False)
    pytest.skip(message)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
        stdin=subprocess.DEVNULL,
    ).stdout


@dataclass
class E2E:
    cx: Env
    server: MockResponses
    codex: str
    codex_home: Path

    @property
    def project(self) -> Path:
        return self.cx.project

    def diagnose(self) -> str:
        """Jobs, runner logs and codex's stderr: printed when a test fails."""
        lines = []
        try:
            with self.cx.db() as conn:
                for row in conn.execute(
                    "SELECT id, state, attempt, reason, exit_code, runner_pid, codex_pgid"
                    " FROM jobs ORDER BY id"
                ):
                    keys = row.keys()  # a sqlite3.Row iterates over values
                    lines.append("job " + " ".join(f"{k}={row[k]!r}" for k in keys))
        except Exception as exc:  # the registry may not exist yet
            lines.append(f"registry: {exc}")
        logs = self.cx.state / "logs"
        for path in sorted(logs.glob("*.log")) if logs.exists() else []:
            text = path.read_text(errors="replace").strip()
            if text:
                lines.append(f"--- {path.name}\n{text[-3000:]}")
        lines.append(f"--- mock server: {len(self.server.requests)} requests, "
                     f"max in flight {self.server.max_in_flight}")
        return "\n".join(lines)


@pytest.fixture
def mock_server() -> Iterator[MockResponses]:
    with MockResponses() as server:
        yield server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def e2e(cx: Env, mock_server: MockResponses, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[E2E]:
    codex = real_codex()
    home = tmp_path / "home"
    home.mkdir()
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(PROVIDER_CONFIG.format(base_url=mock_server.base_url))
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    extra = {
        "CODEXW_CODEX_BIN": codex,
        "CODEX_HOME": str(codex_home),
        "MOCK_API_KEY": "dummy-key-for-the-mock-server",
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
        "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
    }
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    cx.env.update(extra)
    git(workspace, "init", "-q", "-b", "main")
    (workspace / "README.md").write_text("e2e workspace\n")
    git(workspace, "add", "README.md")
    git(workspace, "commit", "-q", "-m", "initial")
    cx.project = workspace  # every cx helper now works in the real repository
    e = E2E(cx, mock_server, codex, codex_home)
    yield e
    if request.node.stash.get(_FAILED, False):
        print(e.diagnose())
