"""What a report says must be true: no start time for a job that never ran, the model
codex's own config chose, and the files an agent made outside git."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Env
from tests.faults.helpers import wait_running


def test_a_job_cancelled_in_the_queue_shows_no_start_time(cx: Env) -> None:
    config = Path(cx.env["CODEXW_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + "max_parallel = 1\n")
    gate = cx.tmp / "gate"
    cx.launch(f"first\n@fake wait-for {gate}")
    wait_running(cx, 1)
    cx.launch("never runs")
    cx.ok("kill", "2")
    gate.touch()
    assert cx.run("wait", "1").returncode == 0
    text = Path(cx.job(2)["report_path"]).read_text()
    assert "**Started:** never started" in text
    assert "| Started / ended | - /" in text


def test_the_report_names_the_model_codex_config_chose(cx: Env) -> None:
    home = cx.tmp / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text('model = "gpt-from-config"\n')
    job = json.loads(cx.ok("launch", "--json", "a task", env={"CODEX_HOME": str(home)}).stdout)
    assert cx.run("wait", str(job["job_id"])).returncode == 0
    text = Path(cx.job(job["job_id"])["report_path"]).read_text()
    assert "| Model | gpt-from-config (codex's config) |" in text
    # A model given to codexw is the one shown.
    job = json.loads(cx.ok("launch", "--json", "-m", "gpt-flag", "another",
                           env={"CODEX_HOME": str(home)}).stdout)
    assert cx.run("wait", str(job["job_id"])).returncode == 0
    assert "| Model | gpt-flag |" in Path(cx.job(job["job_id"])["report_path"]).read_text()


def test_files_an_agent_makes_outside_git_are_listed(cx: Env, tmp_path: Path) -> None:
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    proc = cx.run("launch", "--json", "@fake write made.txt", cwd=plain)
    assert proc.returncode == 0, proc.stderr
    job_id = json.loads(proc.stdout)["job_id"]
    assert cx.run("wait", str(job_id), cwd=plain).returncode == 0
    text = Path(cx.job(job_id)["report_path"]).read_text()
    assert "- `made.txt` (add)" in text


def test_logs_of_a_timed_out_job_end_by_saying_so(cx: Env) -> None:
    cx.launch("@fake sleep 60", "--timeout", "1s")
    assert cx.run("wait", "1").returncode == 1
    for args in (("logs", "1"), ("logs", "-f", "1")):
        last = cx.ok(*args).stdout.strip().splitlines()[-1]
        assert "job 1 timed_out: timed out after 1s" in last, (args, last)
    assert "timed_out" not in cx.ok("logs", "--raw", "1").stdout  # --raw is codex's alone
