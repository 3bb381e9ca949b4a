"""Job-end notifications (core.announce) with real parts: a local HTTP server started
by the test receives the webhooks, real runners (and a SIGKILLed one), a real command
hook, the real registry."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Env, wait_until
from tests.faults.helpers import alive, wait_running


class Hooks:
    """A webhook receiver on 127.0.0.1: every POST body, in order of arrival. While
    `hold` is cleared, requests wait (a slow webhook)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hooks.lock:
                    hooks.received.append(
                        {**json.loads(body), "_key": self.headers.get("Idempotency-Key")}
                    )
                hooks.arrived.set()
                hooks.hold.wait(60)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 60) -> list[dict]:
        wait_until(lambda: len(self.received) >= n, timeout=timeout, what=f"{n} webhooks")
        return list(self.received)

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    yield h
    h.close()


def announcements(cx: Env) -> list[dict]:
    with cx.db() as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM announcements ORDER BY id")]


def all_settled(cx: Env) -> list[dict]:
    """Wait until every announcement is sent or failed (and its sender gone: `cx`)."""
    return wait_until(
        lambda: (rows := announcements(cx)) and all(r["state"] in ("sent", "failed") for r in rows)
        and rows, timeout=60, what="announcements settled",
    )


def test_one_webhook_per_job_end_and_one_for_a_retry_chain(cx: Env, hooks: Hooks) -> None:
    ok = cx.launch("@fake message done\nsecond line", "--notify", f"webhook:{hooks.url}")
    bad = cx.launch("@fake fail auth", "--notify", f"webhook:{hooks.url}")
    # An automatic retry's failed first attempt is not announced: the chain's last is.
    chain = cx.launch("@fake fail-first 1 429", "--retries", "1", "--notify",
                      f"webhook:{hooks.url}")
    assert cx.run("wait", str(ok["job_id"]), str(bad["job_id"]), str(chain["job_id"])
                  ).returncode == 1
    got = hooks.wait_for(3)
    rows = all_settled(cx)
    cx.ok("status")  # a later command's reconcile sends nothing again
    by_state = {m["state"]: m for m in hooks.received}
    assert len(hooks.received) == 3 and len(rows) == 3, got
    assert set(by_state) == {"succeeded", "failed"} and [m["state"] for m in got].count(
        "succeeded") == 2
    first = next(m for m in got if m["job_id"] == ok["job_id"])
    assert first["task"] == "@fake message done"  # the task's head
    assert first["report_path"] == cx.job(ok["job_id"])["report_path"]
    assert first["report_path"].endswith("_codex_task.md") and "_TEMP_" not in first[
        "report_path"]
    assert first["text"].startswith(f"codexw: job {ok['job_id']} succeeded after ")
    assert first["duration"] > 0
    retried = next(m for m in got if m["job_id"] not in (ok["job_id"], bad["job_id"]))
    assert retried["attempt"] == 2 and retried["state"] == "succeeded"
    assert cx.job(chain["job_id"])["state"] == "failed"  # the first attempt: never announced
    assert {r["state"] for r in rows} == {"sent"}
    assert len({m["_key"] for m in got}) == 3


@pytest.mark.slow
def test_a_job_whose_runner_was_sigkilled_is_announced_once_by_the_command_that_finds_it(
    cx: Env, hooks: Hooks
) -> None:
    job = cx.launch("@fake sleep 60", "--notify", f"webhook:{hooks.url}")
    running = wait_running(cx, job["job_id"])
    os.kill(running["runner_pid"], signal.SIGKILL)
    wait_until(lambda: not alive(running["runner_pid"]), what="runner gone")
    assert cx.run("wait", str(job["job_id"])).returncode == 1  # reconcile: lost
    got = hooks.wait_for(1)
    all_settled(cx)
    for _ in range(3):
        cx.ok("status")
    assert len(hooks.received) == 1, got
    assert got[0]["state"] == "lost" and got[0]["job_id"] == job["job_id"]
    assert "runner" in got[0]["reason"]
    assert got[0]["report_path"] == cx.job(job["job_id"])["report_path"]


def _env_dump_hook(cx: Env, name: str, code: int = 0) -> Path:
    out = cx.tmp / f"{name}.json"
    hook = cx.tmp / name
    hook.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(out)!r}, 'a').write(json.dumps({{k: v for k, v in os.environ.items()"
        f" if k.startswith('CODEXW_')}}) + '\\n')\nsys.exit({code})\n"
    )
    hook.chmod(0o755)
    return out


def test_a_command_hook_gets_the_jobs_fields_and_a_failing_one_changes_nothing(
    cx: Env,
) -> None:
    out = _env_dump_hook(cx, "hook")
    failing_out = _env_dump_hook(cx, "failing-hook", code=3)
    job = cx.launch("@fake message fine\nmore", "--notify", f"command:{cx.tmp / 'hook'}",
                    "--notify", f"command:{cx.tmp / 'failing-hook'}")
    cx.ok("wait", str(job["job_id"]))
    (row,) = all_settled(cx)
    env = json.loads(out.read_text())
    assert json.loads(failing_out.read_text())["CODEXW_JOB_ID"] == str(job["job_id"])
    final = cx.job(job["job_id"])
    assert env["CODEXW_EVENT"] == "job_end"
    assert env["CODEXW_JOB_ID"] == str(job["job_id"])
    assert env["CODEXW_JOB_STATE"] == "succeeded"
    assert env["CODEXW_JOB_TASK"] == "@fake message fine"
    assert env["CODEXW_JOB_REPORT"] == final["report_path"]
    assert env["CODEXW_JOB_EXIT_CODE"] == "0"
    assert float(env["CODEXW_JOB_DURATION"]) >= 0
    # The failing hook is recorded and logged; the job's outcome is untouched.
    assert row["state"] == "failed" and "exited with 3" in row["error"]
    assert final["state"] == "succeeded"
    assert "failed: " in (cx.state / "logs" / "announce.log").read_text()


def test_a_slow_webhook_never_holds_the_runner(cx: Env, hooks: Hooks) -> None:
    hooks.hold.clear()
    job = cx.launch("@fake message quick", "--notify", f"webhook:{hooks.url}")
    cx.ok("wait", str(job["job_id"]))
    assert hooks.arrived.wait(60)
    # The webhook is still answering; the runner has left all the same.
    runner = cx.job(job["job_id"])["runner_pid"]
    wait_until(lambda: not alive(runner), timeout=10, what="the runner to exit")
    assert announcements(cx)[0]["state"] == "sending"
    hooks.hold.set()
    assert all_settled(cx)[0]["state"] == "sent"


def test_a_batch_is_announced_once_at_its_end_with_counts(cx: Env, hooks: Hooks) -> None:
    tasks = cx.tmp / "tasks.txt"
    tasks.write_text("@fake message a\n@fake fail auth\n@fake message c\n")
    assert cx.run("batch", str(tasks), "-j", "2", "--notify", f"webhook:{hooks.url}").returncode == 1
    (message,) = hooks.wait_for(1)
    all_settled(cx)
    assert message["event"] == "batch_end"
    assert message["counts"] == {"succeeded": 2, "failed": 1}
    assert len(message["failed"]) == 1 and "1 failed" in message["text"]
    assert len(hooks.received) == 1
    # --notify-each: every job's end as well.
    cx.run("batch", str(tasks), "-j", "2", "--notify", f"webhook:{hooks.url}", "--notify-each")
    got = hooks.wait_for(5)
    all_settled(cx)
    assert sorted(m["event"] for m in got[1:]) == ["batch_end", "job_end", "job_end", "job_end"]


@pytest.mark.parametrize(("target", "why"), [
    ("webhook:ftp://example.com/x", "http:// or https://"),
    ("command:relative/hook", "absolute path"), ("pager", "not a notification target"),
    ("command:/nonexistent/x", "not an executable file"),
])
def test_a_bad_notify_target_is_one_line_and_records_nothing(
    cx: Env, target: str, why: str
) -> None:
    proc = cx.run("launch", "--notify", target, "a task")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("codexw: --notify: ") and why in proc.stderr
    assert not (cx.state / "codexw.db").exists() or not cx.db().execute(
        "SELECT 1 FROM jobs").fetchall()
