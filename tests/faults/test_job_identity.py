"""A runner recognises its own job by a key recorded at launch, not by the id alone.

A registry made anew (the old one deleted while a job runs) or a second state dir on
the same project reuses job ids. A runner must never end another registry's job,
share its event log or delete a report it cannot prove is a duplicate of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Env, wait_until
from tests.faults.helpers import wait_running


def _reports_with(cx: Env, text: str) -> list[Path]:
    return [p for p in cx.reports() if text in p.read_text()]


def test_a_registry_made_anew_while_a_job_runs_costs_neither_job_anything(cx: Env) -> None:
    old_gate, new_gate = cx.tmp / "old-gate", cx.tmp / "new-gate"
    cx.launch(f"the old job\n@fake wait-for {old_gate}")
    wait_running(cx, 1)
    for name in ("codexw.db", "codexw.db-wal", "codexw.db-shm"):
        (cx.state / name).unlink(missing_ok=True)
    cx.launch(f"the new job\n@fake wait-for {new_gate}")  # job 1 again, in a new registry
    new = wait_running(cx, 1)
    assert new["task"].startswith("the new job")

    old_gate.touch()  # the old runner ends: its job is in no registry any more
    wait_until(lambda: _reports_with(cx, "the old job")
               and not [p for p in _reports_with(cx, "the old job") if "_TEMP_" in p.name],
               what="the old job's final report")
    assert cx.job(1)["state"] == "running", "the old runner ended the new job 1"
    new_gate.touch()
    assert cx.run("wait", "1").returncode == 0
    ended = cx.job(1)
    assert ended["state"] == "succeeded" and ended["task"].startswith("the new job")
    (old_report,) = _reports_with(cx, "the old job")
    (new_report,) = _reports_with(cx, "the new job")
    assert "_TEMP_" not in old_report.name and Path(ended["report_path"]) == new_report
    log = Path(ended["log_path"]).read_text()
    assert log.count('"thread.started"') == 1, "the two jobs 1 share an event log"


def _launch_in(cx: Env, state: Path, task: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "codexw", "launch", "--json", task], cwd=cx.project,
        env={**cx.env, "CODEXW_STATE_DIR": str(state)}, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_two_state_dirs_on_one_project_never_share_or_delete_a_report(cx: Env) -> None:
    gate = cx.tmp / "gate"
    second_state = cx.tmp / "state-2"
    # Job 1 of each registry, queued in the same second: the same TEMP name by default.
    for _ in range(10):
        for report in cx.reports():
            report.unlink()
        first = _launch_in(cx, cx.state, f"in the first registry\n@fake wait-for {gate}")
        second = _launch_in(cx, second_state, f"in the second registry\n@fake wait-for {gate}")
        if Path(first["report_path"]).name[:15] == Path(second["report_path"]).name[:15]:
            break
        gate.touch()  # not the same second: let both end, try again with fresh registries
        wait_until(lambda: not [p for p in cx.reports() if "_TEMP_" in p.name])
        gate.unlink()
        for state in (cx.state, second_state):
            for name in ("codexw.db", "codexw.db-wal", "codexw.db-shm"):
                (state / name).unlink(missing_ok=True)
    else:
        raise AssertionError("could not queue two jobs in the same second")
    assert first["report_path"] != second["report_path"]
    temps = [p for p in cx.reports() if "_TEMP_" in p.name]
    assert len(temps) == 2, temps
    gate.touch()
    wait_until(lambda: len(_reports_with(cx, "registry")) == 2
               and not [p for p in cx.reports() if "_TEMP_" in p.name],
               what="both final reports")
    assert len(_reports_with(cx, "in the first registry")) == 1
    assert len(_reports_with(cx, "in the second registry")) == 1
    marker = f"CODEXW_STATE_DIR={second_state}"
    from tests.conftest import processes_with_env

    wait_until(lambda: not processes_with_env(marker), what="the second registry's runners")
    assert os.path.exists(second_state / "codexw.db")
