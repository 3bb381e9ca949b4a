"""Storage faults: a state dir that cannot be written, a full disk, a report folder that
disappears, a corrupt registry, a corrupt config, a broken template.

Each gives one clear line (what, where, what to do), exit 2 for the user's bad input
(config, template), exit 1 when the environment stops the command (the registry or a
report cannot be written, a corrupt registry), and loses nothing already recorded; a running job whose report cannot be written still
records its outcome and says where its output went.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import FAKE, Env, wait_until
from tests.faults.helpers import (
    fill_disk,
    group_members,
    one_line_error,
    read_only,
    sha256,
    tmpfs,
    wait_running,
)

# -- helpers --------------------------------------------------------------------------


def _jobs_snapshot(cx: Env) -> list[tuple]:
    with sqlite3.connect(cx.state / "codexw.db") as db:
        return db.execute("SELECT id, state, task, report_path, ended_at FROM jobs").fetchall()


def _one_finished_job(cx: Env) -> dict:
    cx.launch("recorded before the fault")
    assert cx.run("wait", "1").returncode == 0
    return cx.job(1)


def _no_new_reports(cx: Env, before: list[Path]) -> None:
    assert cx.reports() == before, "a report was written for a job that was not recorded"


# -- the state dir cannot be written ---------------------------------------------------


def test_state_dir_read_only_refuses_launch_in_one_line_and_loses_nothing(cx: Env) -> None:
    job = _one_finished_job(cx)
    before, reports = _jobs_snapshot(cx), cx.reports()
    with read_only(cx.state):
        proc = cx.run("launch", "new work")
        assert proc.returncode == 1  # the environment, not the input
        line = one_line_error(proc)
        assert str(cx.state / "codexw.db") in line and "writable" in line
        _no_new_reports(cx, reports)
    assert _jobs_snapshot(cx) == before
    assert cx.job(1) == job


def test_state_dir_under_a_regular_file_is_a_clear_error(cx: Env) -> None:
    blocker = cx.tmp / "not-a-dir"
    blocker.write_text("x")
    env = {"CODEXW_STATE_DIR": str(blocker / "state")}
    for args in (("launch", "x"), ("status",), ("wait", "1")):
        proc = cx.run(*args, env=env)
        assert proc.returncode == 1, (args, proc.stderr)
        line = one_line_error(proc)
        assert str(blocker / "state") in line and "Not a directory" in line
        assert "CODEXW_STATE_DIR" in line  # what to do
    assert blocker.read_text() == "x"
    assert not cx.reports()


NOBODY = 65534


def _as_nobody(base: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-m", "codexw", *args],
        cwd=base / "project", env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv(1) to run codexw as an unprivileged user")
def test_state_dir_not_writable_by_an_unprivileged_user(cx: Env) -> None:
    # Root bypasses permission bits, so this one runs codexw as 'nobody'. Its files
    # live under a world-readable temporary dir (pytest's tmp_path is root-only).
    base = Path(tempfile.mkdtemp(prefix="codexw-nobody-"))
    try:
        base.chmod(0o755)
        (base / "project" / ".git").mkdir(parents=True)
        os.chown(base / "project", NOBODY, NOBODY)
        bin_dir = base / "bin"
        bin_dir.mkdir()
        (bin_dir / "codex").write_text(
            f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {str(FAKE)!r}\n"
            f"runpy.run_path({str(FAKE)!r}, run_name='__main__')\n"
        )
        (bin_dir / "codex").chmod(0o755)
        state = base / "state"
        state.mkdir(mode=0o755)  # owned by root: 'nobody' may read, not write
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(base), "NO_COLOR": "1",
            "CODEXW_STATE_DIR": str(state), "CODEXW_CONFIG_DIR": str(base / "config"),
        }
        proc = _as_nobody(base, ["launch", "x"], env)
        assert proc.returncode == 1, proc.stderr
        line = one_line_error(proc)
        assert "Permission denied" in line and str(state) in line
        assert not list((base / "project").rglob("*.md"))

        # A registry that exists but belongs to someone else: refused, and untouched.
        cx_env = {**cx.env, "CODEXW_STATE_DIR": str(state)}
        subprocess.run([sys.executable, "-m", "codexw", "status"], env=cx_env, check=True,
                       capture_output=True)
        state.chmod(0o755)  # readable by 'nobody' (codexw made it 0700), still not writable
        (state / "codexw.db").chmod(0o644)
        digest = sha256(state / "codexw.db")
        proc = _as_nobody(base, ["launch", "x"], env)
        assert proc.returncode == 1, proc.stderr
        line = one_line_error(proc)
        assert str(state / "codexw.db") in line
        assert sha256(state / "codexw.db") == digest
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- the disk is full ------------------------------------------------------------------


def test_full_disk_under_the_state_dir_refuses_launch_and_loses_nothing(cx: Env) -> None:
    with tmpfs(cx.state, "1m"):
        job = _one_finished_job(cx)
        reports = cx.reports()
        filler = fill_disk(cx.state)
        proc = cx.run("launch", "new work")
        assert proc.returncode == 1  # a full disk is no usage error
        line = one_line_error(proc)
        assert "no space left" in line and "free some disk space" in line
        _no_new_reports(cx, reports)
        filler.unlink()
        assert cx.job(1) == job
        assert [j["id"] for j in json.loads(cx.ok("status", "--json").stdout)["jobs"]] == [1]


def test_full_disk_under_the_project_refuses_launch_and_batch_queues_nothing(cx: Env) -> None:
    with tmpfs(cx.project / ".codexw", "256k"):
        (cx.project / ".codexw" / "workers").mkdir()
        filler = fill_disk(cx.project / ".codexw")
        proc = cx.run("launch", "x")
        assert proc.returncode == 1
        line = one_line_error(proc)
        assert "No space left on device" in line and "nothing was queued" in line
        # Room for a few TEMP reports, not for twenty: the batch is queued whole or not at all.
        with open(filler, "r+b") as fh:
            fh.truncate(filler.stat().st_size - 16 * 1024)
        tasks = cx.tmp / "tasks.txt"
        tasks.write_text("\n".join(f"task {i}" for i in range(20)))
        proc = cx.run("batch", str(tasks), "--detach")
        assert proc.returncode == 1
        assert "nothing was queued" in one_line_error(proc)
        assert not list((cx.project / ".codexw").rglob("*_TEMP_*")), "orphaned TEMP reports"
    with sqlite3.connect(cx.state / "codexw.db") as db:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0


@pytest.mark.slow
def test_disk_filling_up_while_a_job_runs_costs_log_lines_not_the_outcome(cx: Env) -> None:
    gate = cx.tmp / "gate"
    with tmpfs(cx.state, "4m"):
        cx.launch(f"@fake wait-for {gate}\n@fake events 3000")
        job = wait_running(cx, 1)
        filler = fill_disk(cx.state)
        gate.touch()  # codex now writes ~500 KB of events into a full disk

        wait_until(lambda: not group_members(job["codex_pgid"]), timeout=120,
                   what="codex to finish")
        filler.unlink()
        assert cx.run("wait", "1", timeout=120).returncode == 0
        ended = cx.job(1)
        assert ended["state"] == "succeeded"
        assert "event log incomplete" in ended["reason"]
        assert "No space left on device" in ended["reason"]
        assert Path(ended["report_path"]).exists()
        assert "`echo 2999` → exit 0" in Path(ended["report_path"]).read_text()


# -- the report folder goes away while a job runs --------------------------------------


@pytest.mark.slow
def test_report_folder_deleted_while_job_runs_is_recreated(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.launch(f"@fake wait-for {gate}")
    wait_running(cx, 1)
    shutil.rmtree(cx.project / ".codexw")
    gate.touch()
    assert cx.run("wait", "1").returncode == 0
    job = cx.job(1)
    assert job["state"] == "succeeded" and job["reason"] is None
    assert Path(job["report_path"]).parent == cx.project / ".codexw" / "workers"
    assert Path(job["report_path"]).exists()


@pytest.mark.slow
def test_report_folder_unusable_at_the_end_report_goes_to_the_state_dir(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.launch(f"@fake wait-for {gate}")
    wait_running(cx, 1)
    shutil.rmtree(cx.project / ".codexw")
    (cx.project / ".codexw").write_text("a file where the report folder was")
    gate.touch()
    waited = cx.run("wait", "1")
    assert waited.returncode == 0
    job = cx.job(1)
    assert job["state"] == "succeeded"
    report = Path(job["report_path"])
    assert report.parent == cx.state / "reports" / "workers" and report.exists()
    assert "Not a directory" in job["reason"] and f"written to {report} instead" in job["reason"]
    assert str(report) in waited.stdout  # wait tells where it went


@pytest.mark.slow
def test_no_report_possible_anywhere_outcome_recorded_and_log_named(cx: Env) -> None:
    gate = cx.tmp / "gate"
    cx.launch(f"@fake wait-for {gate}")
    wait_running(cx, 1)
    shutil.rmtree(cx.project / ".codexw")
    (cx.project / ".codexw").write_text("blocked")
    (cx.state / "reports").write_text("blocked too")
    gate.touch()
    assert cx.run("wait", "1").returncode == 0
    job = cx.job(1)
    assert job["state"] == "succeeded"
    assert job["report_path"] is None  # never a path to a TEMP report that is gone
    assert f"the event log is {job['log_path']}" in job["reason"]
    assert Path(job["log_path"]).exists()


# -- a corrupt registry ----------------------------------------------------------------


def _populate(cx: Env, n: int = 300) -> None:
    """A registry of several hundred pages, written through codexw's own store."""
    from codexw.core.models import JobSpec, JobState
    from codexw.core.store import Store

    store = Store.open()
    with store.transaction():
        for i in range(n):
            spec = JobSpec(task=f"task {i} " + "t" * 2000, level="low", type="workers",
                           cwd=str(cx.project), project=str(cx.project), codex_bin="codex")
            job_id = store.insert_job(spec, now=time.time())
            store.finish(job_id, JobState.SUCCEEDED, ended_at=time.time())
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def _garbage_header(db: Path) -> None:
    with open(db, "r+b") as fh:
        fh.write(b"this is not an SQLite file at all" * 4)


def _truncated(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 3)


def _damaged_rows(db: Path) -> None:
    raw = bytearray(db.read_bytes())
    at = raw.find(b"task 150 ")
    raw[at + 20: at + 220] = b"\xff" * 200  # not UTF-8 any more, in the middle of the file
    db.write_bytes(bytes(raw))


ALL_COMMANDS = [("status", "--all"), ("status", "151"), ("launch", "x"), ("wait", "151"),
                ("kill", "151"), ("retry", "151"), ("batch", "-", "--detach"),
                ("status", "--all", "--json")]
# A damaged row is found by the commands that read it; launch never reads job 151.
READERS = [c for c in ALL_COMMANDS if c[0] not in ("launch", "batch")]


@pytest.mark.parametrize(("damage", "commands"),
                         [(_garbage_header, ALL_COMMANDS), (_truncated, ALL_COMMANDS),
                          (_damaged_rows, READERS)],
                         ids=["garbage-header", "truncated", "damaged-rows"])
def test_corrupt_registry_gives_one_line_exit_1_and_is_never_overwritten(  # type: ignore[no-untyped-def]
    cx: Env, damage, commands
) -> None:
    _populate(cx)
    db = cx.state / "codexw.db"
    damage(db)
    digest = sha256(db)
    for args in commands:
        proc = cx.run(*args, input="a\nb\n")
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        line = one_line_error(proc)
        assert f"the registry {db} is corrupt" in line, line
        assert f"mv {db} {db}.corrupt" in line  # what to do
        assert sha256(db) == digest, f"codexw {args[0]} changed the corrupt registry"
    assert not cx.reports()
    # Following the hint works: a new registry, the old one kept for inspection.
    db.rename(db.with_name("codexw.db.corrupt"))
    for wal in ("codexw.db-wal", "codexw.db-shm"):
        (cx.state / wal).unlink(missing_ok=True)
    cx.launch("after the move")
    assert cx.run("wait", "1").returncode == 0


# -- a corrupt config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'level = "high', "not valid TOML"),
        (b"\xff\xfe level = 1", "not valid UTF-8"),
        (b'colour = "red"', "unknown key 'colour'"),
        (b'level = "HIGH"', "bad value 'HIGH' for 'level'"),
        (b"max_parallel = 0", "bad value 0 for 'max_parallel'"),
        (b'timeout = "soon"', "bad value 'soon' for 'timeout'"),
        (b"codex_args = 5", "bad value 5 for 'codex_args'"),
    ],
    ids=["toml", "utf8", "unknown-key", "level", "max-parallel", "duration", "type"],
)
@pytest.mark.parametrize("where", ["user", "project"])
def test_corrupt_config_is_a_one_line_error_naming_the_file(
    cx: Env, where: str, content: bytes, expected: str
) -> None:
    path = (cx.tmp / "config" / "config.toml" if where == "user"
            else cx.project / ".codexw" / "config.toml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    for args in (("launch", "x"), ("batch", "-", "--detach")):
        proc = cx.run(*args, input="a\nb\n")
        assert proc.returncode == 2, (args, proc.stderr)
        line = one_line_error(proc)
        assert str(path) in line and expected in line, line
    assert path.read_bytes() == content
    assert not (cx.state / "codexw.db").exists() or not _jobs_snapshot(cx)
    assert not list((cx.project / ".codexw").glob("*/*.md"))


def test_bad_codexw_environment_variable_names_the_variable(cx: Env) -> None:
    proc = cx.run("launch", "x", env={"CODEXW_RETRIES": "lots"})
    assert proc.returncode == 2
    assert "environment variable CODEXW_RETRIES" in one_line_error(proc)


# -- a broken template -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"{% if job.id %}never closed", "Unexpected end of template"),
        (b"{{ no_such_variable }}", "'no_such_variable' is undefined"),
        (b"{{ job.no_such_field }}", "no attribute 'no_such_field'"),
        (b"{{ 1 / 0 }}", "ZeroDivisionError"),
        (b"{{ job.id + 'x' }}", "TypeError"),
        (b"\xff\xfe{{ job.id }}", "utf-8"),
        (b"{% include 'missing.md' %}", "missing.md"),
        (b"{{ job.__class__.__mro__ }}", "unsafe"),
    ],
    ids=["syntax", "unknown-variable", "unknown-field", "zero-division", "type-error",
         "not-utf8", "missing-include", "sandbox-escape"],
)
def test_broken_template_is_refused_at_launch_with_one_line(cx: Env, text: bytes, expected: str) -> None:
    templates = cx.tmp / "templates"
    templates.mkdir()
    (templates / "worker-task.md").write_bytes(text)
    config = cx.tmp / "config" / "config.toml"
    config.write_text(config.read_text() + f'templates_dir = "{templates}"\n')
    proc = cx.run("launch", "x")
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert str(templates / "worker-task.md") in line and expected in line, line
    assert "fix the template" in line
    assert not (cx.state / "codexw.db").exists() or not _jobs_snapshot(cx)
    assert not cx.reports()


@pytest.mark.slow
def test_template_failing_only_at_the_end_falls_back_and_keeps_the_outcome(cx: Env) -> None:
    templates = cx.tmp / "templates"
    templates.mkdir()
    # Fine for the succeeded sample launch checks, broken for a failed job.
    (templates / "worker-task.md").write_text(
        "# {{ job.id }}\n{% if job.state == 'failed' %}{{ job.reason.no_such }}{% endif %}\n"
    )
    config = cx.tmp / "config" / "config.toml"
    config.write_text(config.read_text() + f'templates_dir = "{templates}"\n')
    cx.ok("launch", "@fake fail auth")
    assert cx.run("wait", "1").returncode == 1
    job = cx.job(1)
    assert job["state"] == "failed"
    assert "401 Unauthorized" in job["reason"] and "report template failed" in job["reason"]
    text = Path(job["report_path"]).read_text()
    assert "report template failed" in text and "@fake fail auth" in text
