"""The real codex in a job's own worktree: the agent's shell command writes there, codexw
commits it on the job's branch, the main tree is untouched, and it merges."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import E2E, git
from tests.e2e.mock_responses import Message, Shell

pytestmark = pytest.mark.e2e


def test_real_codex_writes_in_its_worktree_and_codexw_commits_it_on_the_branch(e2e: E2E) -> None:
    e2e.server.script(Shell("echo from-the-agent > agent.txt", then=Message("wrote agent.txt")))
    head = git(e2e.project, "rev-parse", "HEAD").strip()
    info = e2e.cx.launch("write agent.txt", "--worktree")
    assert e2e.cx.run("wait", str(info["job_id"]), timeout=180).returncode == 0
    job = e2e.cx.job(info["job_id"])
    assert job["state"] == "succeeded", job
    assert (job["branch"], job["base_commit"], job["files_changed"]) == ("codexw/1", head, 1)
    assert not (e2e.project / "agent.txt").exists()  # the main tree was not written
    assert git(e2e.project, "show", "codexw/1:agent.txt") == "from-the-agent\n"
    # codex was told it works in the worktree (its environment context names the cwd).
    assert job["worktree"] in json.dumps(e2e.server.requests[0].body)
    assert "agent.txt" in e2e.cx.ok("diff", "1", "--stat").stdout
    e2e.cx.ok("merge", "1")
    assert (e2e.project / "agent.txt").read_text() == "from-the-agent\n"
