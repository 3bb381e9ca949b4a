"""A job that cannot start because the state dir's disk is full ends `failed` with the
reason, kept in the registry, and is not retried as if the failure were transient."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Env, wait_until
from tests.faults.helpers import fill_disk, tmpfs, wait_running


def test_job_starting_on_a_full_state_disk_fails_with_the_reason_and_is_not_retried(
    cx: Env,
) -> None:
    config = Path(cx.env["CODEXW_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + "max_parallel = 1\n")
    gate = cx.tmp / "gate"
    # The files a job start writes (event log, prompt) live under logs/: that disk is full,
    # while the registry beside it still has room to record what happened.
    (cx.state / "logs").mkdir(parents=True)
    with tmpfs(cx.state / "logs", "1m"):
        cx.launch(f"@fake wait-for {gate}")
        wait_running(cx, 1)
        # Longer than the page job 1's prompt frees when its codex exits.
        cx.launch("starts on a full disk\n" + "x" * 65536, "--retries", "2")
        filler = fill_disk(cx.state / "logs")
        gate.touch()  # job 1 ends; its runner starts job 2, whose prompt cannot be written
        wait_until(lambda: cx.job(2)["state"] not in ("queued", "starting", "running"),
                   timeout=120, what="job 2 to end")
        job = cx.job(2)
        assert job["state"] == "failed", job
        assert "No space left on device" in job["reason"], job["reason"]
        jobs = json.loads(cx.ok("status", "--json", "--all").stdout)["jobs"]
        assert sorted(j["id"] for j in jobs) == [1, 2], "the failure was retried"
        assert cx.job(1)["state"] == "succeeded"
        filler.unlink()
