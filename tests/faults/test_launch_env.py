"""A job runs with the environment of the command that launched it, whoever starts it.

A queued job is started by whoever frees a slot: another job's runner, cron's
`cleanup`, a `kill` run under `env -i`. codex must still get the launching command's
API key, HOME and PATH, kept in a 0600 file of the state dir (never in the registry),
which goes away once no attempt can need it.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from tests.conftest import Env, wait_until
from tests.faults.helpers import wait_running


def _one_at_a_time(cx: Env) -> None:
    config = Path(cx.env["CODEXW_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + "max_parallel = 1\n")


def _api_keys_by_task(cx: Env) -> dict[str, str | None]:
    return {run["prompt"].split("\n")[0]: run["api_key"] for run in cx.fake_runs()}


def _env_files(cx: Env) -> list[Path]:
    folder = cx.state / "env"
    return sorted(folder.glob("*.json")) if folder.exists() else []


def test_queued_job_runs_with_its_own_launch_environment_not_the_one_that_fills_the_slot(
    cx: Env,
) -> None:
    _one_at_a_time(cx)
    gate = cx.tmp / "gate"
    cx.ok("launch", f"task A\n@fake wait-for {gate}", env={"OPENAI_API_KEY": "key-A"})
    wait_running(cx, 1)
    cx.ok("launch", "task B", env={"OPENAI_API_KEY": "key-B"})
    assert cx.job(2)["state"] == "queued"
    gate.touch()  # job 1's runner frees the slot and starts job 2
    assert cx.run("wait", "1", "2").returncode == 0
    assert _api_keys_by_task(cx) == {"task A": "key-A", "task B": "key-B"}


def test_slot_filled_by_a_command_run_under_env_i_still_gives_the_job_its_environment(
    cx: Env,
) -> None:
    _one_at_a_time(cx)
    gate = cx.tmp / "gate"
    cx.launch(f"first\n@fake wait-for {gate}")
    wait_running(cx, 1)
    home = str(cx.tmp / "home-of-b")
    cx.ok("launch", "second", env={"OPENAI_API_KEY": "key-B", "HOME": home})
    # cron-like: nothing but what selects the registry; this kill frees the slot.
    bare = {"CODEXW_STATE_DIR": cx.env["CODEXW_STATE_DIR"],
            "CODEXW_CONFIG_DIR": cx.env["CODEXW_CONFIG_DIR"],
            "PYTHONPYCACHEPREFIX": cx.env["PYTHONPYCACHEPREFIX"]}
    import subprocess

    done = subprocess.run([sys.executable, "-m", "codexw", "kill", "1"], cwd=cx.project,
                          env=bare, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert cx.run("wait", "2").returncode == 0, cx.job(2)
    second = [run for run in cx.fake_runs() if run["prompt"].startswith("second")]
    assert len(second) == 1
    assert second[0]["api_key"] == "key-B" and second[0]["home"] == home
    assert str(cx.bin_dir) in second[0]["path"].split(os.pathsep)


def test_launch_environment_is_private_kept_for_retries_and_removed_when_no_attempt_needs_it(
    cx: Env,
) -> None:
    gate = cx.tmp / "gate"
    cx.ok("launch", "--retries", "1", f"@fake fail-first 1 500\n@fake wait-for {gate}",
          env={"OPENAI_API_KEY": "sk-kept-for-the-retry"})
    # The first attempt failed (transient) and its retry is queued or running: the
    # environment is still there, 0600, and the registry never holds it.
    wait_until(lambda: cx.job(1)["state"] == "failed", what="first attempt to fail")
    (kept,) = _env_files(cx)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert b"sk-kept-for-the-retry" in kept.read_bytes()
    for name in ("codexw.db", "codexw.db-wal"):
        path = cx.state / name
        assert not path.exists() or b"sk-kept-for-the-retry" not in path.read_bytes()
    gate.touch()
    assert cx.run("wait", "1").returncode == 0  # follows the retry
    assert _api_keys_by_task(cx) == {"@fake fail-first 1 500": "sk-kept-for-the-retry"}
    assert [r["api_key"] for r in cx.fake_runs()] == ["sk-kept-for-the-retry"] * 2
    wait_until(lambda: not _env_files(cx), what="the launch environment to be removed")
