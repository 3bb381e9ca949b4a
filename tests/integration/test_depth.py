"""Jobs that launch jobs: codex runs one level deeper than the command that launched it
(CODEXW_DEPTH), and a launch at depth >= max_depth is refused before anything is recorded."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import Env


def _job_count(cx: Env) -> int:
    with cx.db() as db:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


def test_codex_of_a_job_runs_one_level_deeper_than_its_launcher(cx: Env) -> None:
    cx.launch("from a person's shell")
    cx.ok("launch", "from inside a job", env={"CODEXW_DEPTH": "1"})
    assert cx.run("wait", "1", "2").returncode == 0
    depths = {run["prompt"].split("\n", 1)[0]: run["depth"] for run in cx.fake_runs() if run}
    assert depths == {"from a person's shell": "1", "from inside a job": "2"}


def test_launch_batch_continue_and_retry_at_max_depth_are_refused(cx: Env) -> None:
    cx.launch("@fake fail auth\nfirst")
    assert cx.run("wait", "1").returncode == 1
    deep = {"CODEXW_DEPTH": "2"}  # the default max_depth is 2
    refused = [
        cx.run("launch", "a grandchild's child", env=deep),
        cx.run("batch", "-", "--detach", input="one\ntwo\n", env=deep),
        cx.run("continue", "1", "go on", env=deep),
        cx.run("retry", "1", env=deep),
    ]
    for proc in refused:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "CODEXW_DEPTH=2" in lines[0] and "max_depth is 2" in lines[0]
    assert _job_count(cx) == 1  # nothing recorded


def test_max_depth_from_the_user_config_allows_a_deeper_tree(cx: Env) -> None:
    config = cx.tmp / "config" / "config.toml"
    config.write_text(config.read_text() + "max_depth = 3\n")
    cx.ok("launch", "deeper", env={"CODEXW_DEPTH": "2"})
    assert cx.run("wait", "1").returncode == 0
    assert [run["depth"] for run in cx.fake_runs() if run] == ["3"]
    refused = cx.run("launch", "too deep", env={"CODEXW_DEPTH": "3"})
    assert refused.returncode == 2 and "max_depth is 3" in refused.stderr


def test_a_depth_that_is_not_a_number_and_a_bad_max_depth_are_refused(cx: Env) -> None:
    bad = cx.run("launch", "x", env={"CODEXW_DEPTH": "two"})
    assert bad.returncode == 2 and "CODEXW_DEPTH='two' is not a job depth" in bad.stderr
    huge = cx.run("launch", "x", env={"CODEXW_MAX_DEPTH": "1000"})
    assert huge.returncode == 2 and "max_depth" in huge.stderr
    zero = cx.run("launch", "x", env={"CODEXW_MAX_DEPTH": "0"})
    assert zero.returncode == 2 and "max_depth" in zero.stderr
    assert json.loads(cx.ok("status", "--json").stdout)["jobs"] == []


def test_a_launcher_that_lost_the_depth_is_as_deep_as_its_ancestors(cx: Env) -> None:
    """An MCP client (Codex) starts its servers with a few variables only: the depth is
    also read from the environments the launching process's ancestors started with."""
    def scrubbed(depth: str, *args: str) -> subprocess.CompletedProcess[str]:
        # sh stays (no exec of its last command): the ancestor whose environment has it
        script = 'env -u CODEXW_DEPTH "$0" -m codexw "$@"; exit $?'
        return subprocess.run(["/bin/sh", "-c", script, sys.executable, *args],
                              env={**cx.env, "CODEXW_DEPTH": depth}, cwd=cx.project,
                              capture_output=True, text=True, timeout=120)

    refused = scrubbed("2", "launch", "x")
    assert refused.returncode == 2 and "CODEXW_DEPTH=2" in refused.stderr
    allowed = scrubbed("1", "launch", "y")
    assert allowed.returncode == 0, allowed.stderr
    assert cx.run("wait", "1").returncode == 0
    assert [run["depth"] for run in cx.fake_runs() if run] == ["2"]
