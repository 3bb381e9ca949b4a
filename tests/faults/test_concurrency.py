"""Many codexw processes at once: 50 simultaneous launches, and launches, a batch,
status, wait and cleanup all running together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Env

pytestmark = pytest.mark.slow

# Each child blocks on a shared pipe, then becomes `codexw …`: closing the pipe's
# write end releases all of them at the same instant.
AT_THE_SIGNAL = "import os, sys; os.read(0, 1); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"


def _start_together(cx: Env, commands: list[list[str]]) -> list[subprocess.Popen[bytes]]:
    read_end, write_end = os.pipe()
    procs = [
        subprocess.Popen([sys.executable, "-c", AT_THE_SIGNAL, "-m", "codexw", *args],
                         stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=cx.project, env=cx.env)
        for args in commands
    ]
    os.close(read_end)
    os.close(write_end)  # go
    return procs


def _finish(procs: list[subprocess.Popen[bytes]], timeout: float = 600) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append((proc.returncode, out.decode(), err.decode()))
    return results


def _limit(cx: Env, n: int) -> None:
    config = cx.tmp / "config" / "config.toml"
    config.write_text(config.read_text() + f"max_parallel = {n}\n")


def test_fifty_simultaneous_launches_make_fifty_jobs_and_fifty_reports(cx: Env) -> None:
    _limit(cx, 4)  # 50 fake agents at once would only measure the machine
    results = _finish(_start_together(cx, [["launch", "--json", f"task number {i}"]
                                           for i in range(50)]))
    for code, _out, err in results:
        assert code == 0, err
        assert "locked" not in err and "Traceback" not in err
    launched = [json.loads(out) for _, out, _ in results]
    ids = [item["job_id"] for item in launched]
    assert sorted(ids) == list(range(1, 51))
    assert len({item["report_path"] for item in launched}) == 50
    waited = cx.run("wait", *map(str, ids), timeout=900)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    rows = cx.db().execute("SELECT id, state, task, report_path FROM jobs ORDER BY id").fetchall()
    assert len(rows) == 50 and {r["state"] for r in rows} == {"succeeded"}
    assert sorted(r["task"] for r in rows) == sorted(f"task number {i}" for i in range(50))
    reports = {r["report_path"] for r in rows}
    assert len(reports) == 50 and all(Path(p).exists() for p in reports)
    assert len(cx.reports()) == 50 and not [p for p in cx.reports() if "_TEMP_" in p.name]
    prompts = [r["prompt"].split("\n---")[0].strip() for r in cx.fake_runs()]
    assert sorted(prompts) == sorted(f"task number {i}" for i in range(50))  # each ran once
    assert cx.max_running() <= 4


def test_launches_batch_status_wait_and_cleanup_together_stay_correct(cx: Env) -> None:
    _limit(cx, 3)
    (cx.project / ".codexw").mkdir()  # cleanup refuses a directory that is no codexw project
    tasks = cx.project / "tasks.txt"
    tasks.write_text("\n".join(f"@fake sleep 0.2; batch task {i}" for i in range(12)) + "\n")
    commands = [["batch", str(tasks), "-j", "2", "--json"]]
    commands += [["launch", "--json", f"@fake sleep 0.2\nsingle {i}"] for i in range(10)]
    commands += [["status", "--all", "--json"] for _ in range(5)]
    commands += [["cleanup", "--age", "1s", "--json"] for _ in range(3)]
    commands += [["status", "--stats", "--json"]]
    results = _finish(_start_together(cx, commands))
    for args, (code, _out, err) in zip(commands, results, strict=True):
        assert "locked" not in err and "Traceback" not in err, (args, err)
        assert code == 0, (args, err)
    batch = json.loads(results[0][1])
    assert batch["total"] == 12 and batch["succeeded"] == 12
    singles = [json.loads(out)["job_id"] for _, out, _ in results[1:11]]
    # wait and cleanup again while the last singles may still run.
    both = _finish([
        subprocess.Popen([sys.executable, "-m", "codexw", *args], cwd=cx.project, env=cx.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for args in (["wait", "--json", *map(str, singles)], ["cleanup", "--age", "1s", "--json"],
                     ["status", "--json", "--all"])
    ])
    for code, _out, err in both:
        assert code == 0 and "locked" not in err, err
    waited = json.loads(both[0][1])
    assert waited["all_succeeded"] and len(waited["jobs"]) == 10
    rows = cx.db().execute("SELECT id, state, report_path FROM jobs").fetchall()
    assert len(rows) == 22 and {r["state"] for r in rows} == {"succeeded"}
    # Every finished job's report exists where the registry says (archived or not).
    assert all(r["report_path"] and Path(r["report_path"]).exists() for r in rows)
    assert not list((cx.project / ".codexw").rglob("*_TEMP_*"))
    assert len(cx.fake_runs()) == 22
    assert cx.max_running() <= 3
