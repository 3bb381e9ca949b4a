"""The Celery backend with real parts: a real redis-server, real `codexw worker` processes
(Celery prefork workers) and the fake codex.

Skipped when redis-server or celery is missing, unless CODEXW_REQUIRE_CELERY=1 (CI),
which turns a missing part into a failure. Every test leaves no process behind: the
fixtures stop redis and the workers and assert that they are gone, and `cx` asserts
that nothing carrying the test's state dir (workers, pool processes, codex, the
remote runners) still runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Env, wait_until

pytestmark = pytest.mark.slow

REQUIRED = os.environ.get("CODEXW_REQUIRE_CELERY") == "1"
# Short enough for a test, long enough that a running task is never redelivered:
# jobs end within max-job-time + kill-grace, the visibility timeout is longer.
WORKER_LIMITS = ("--max-job-time", "6s", "--kill-grace", "2s", "--visibility-timeout", "16s")


def _missing(what: str) -> None:
    message = f"{what} (pip install 'codexw[celery]'; apt-get install redis-server)"
    if REQUIRED:
        pytest.fail(f"CODEXW_REQUIRE_CELERY=1 but {message}")
    pytest.skip(message)


@pytest.fixture
def need_celery() -> None:
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None:
        _missing("celery or redis-py is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def _group_members(pgid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


@pytest.fixture
def redis_url(cx: Env, need_celery: None) -> Iterator[str]:
    """A private redis-server on a free loopback port: no persistence, stopped after."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if binary is None:
        _missing("redis-server is not installed")
    import redis

    workdir = cx.tmp / "redis"
    workdir.mkdir()
    proc = None
    for _attempt in range(5):
        port = _free_port()
        log = open(workdir / f"redis-{port}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=cx.env, start_new_session=True,
        )
        log.close()
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

        def up(client: redis.Redis = client, proc: subprocess.Popen[bytes] = proc) -> bool:
            if proc.poll() is not None:
                return True
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(up, timeout=30, what="redis-server to answer")
        if proc.poll() is None:
            break  # else the port was taken meanwhile: try another
    assert proc is not None and proc.poll() is None, "redis-server would not start"
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        assert _gone(proc.pid), "redis-server is still running"


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def node(self) -> str:
        return f"{self.name}@test"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


StartWorker = Callable[..., Worker]


def _stop_worker(worker: Worker) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL of the whole group; nothing may be left."""
    pgid = worker.proc.pid  # started in its own session
    if worker.proc.poll() is None:
        worker.proc.send_signal(signal.SIGTERM)
        try:
            worker.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            worker.proc.wait(timeout=30)
    try:
        wait_until(lambda: not _group_members(pgid), timeout=30,
                   what=f"worker {worker.name}'s pool processes to exit")
    except AssertionError:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise


@pytest.fixture
def workers(cx: Env, redis_url: str) -> Iterator[StartWorker]:
    started: list[Worker] = []

    def start(name: str, *extra: str, concurrency: int = 1, env: dict[str, str] | None = None) -> Worker:
        log = cx.tmp / f"worker-{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "codexw", "worker", "--broker", redis_url,
                 "--concurrency", str(concurrency), "--name", f"{name}@test", *WORKER_LIMITS,
                 *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**cx.env, **(env or {})}, cwd=cx.tmp, start_new_session=True,
            )
        worker = Worker(name, proc, log)
        started.append(worker)
        wait_until(lambda: f"{worker.node} ready." in worker.text() or proc.poll() is not None,
                   timeout=120, what=f"worker {name} to be ready")
        assert proc.poll() is None, f"worker {name} exited:\n{worker.text()}"
        return worker

    yield start
    errors = []
    for worker in started:
        try:
            _stop_worker(worker)
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, errors


def _remote(url: str) -> tuple[str, ...]:
    return ("--backend", "celery", "--broker", url)


def _job_row(cx: Env, job_id: int) -> dict:
    return cx.job(job_id)


def _wait_running(cx: Env, job_id: int, timeout: float = 60) -> dict:
    return wait_until(
        lambda: (j := cx.job(job_id))["state"] == "running" and j["host"] and j,
        timeout=timeout, what=f"job {job_id} to run on a worker",
    )


def _no_fake_codex_left(cx: Env) -> None:
    alive = cx.fake_state / "alive.json"

    def none_alive() -> bool:
        try:
            pids = json.loads(alive.read_text())
        except (OSError, ValueError):
            return True
        return all(_gone(p) for p in pids)

    wait_until(none_alive, timeout=30, what="every fake codex to exit")


# -- results ----------------------------------------------------------------------------


def test_remote_job_result_report_log_and_status_like_a_local_job(
    cx: Env, workers: StartWorker, redis_url: str
) -> None:
    workers("w1")
    data = cx.launch("@fake write made.txt; @fake events 3\nremote task", *_remote(redis_url))
    job_id = data["job_id"]
    assert cx.run("wait", str(job_id)).returncode == 0
    job = cx.job(job_id)
    assert job["state"] == "succeeded" and job["exit_code"] == 0
    assert job["backend"] == "celery" and job["queue"] == "codex"
    assert job["host"] == "w1@test" and job["celery_task_id"]
    assert job["tokens"]["input_tokens"] == 100 and job["tokens"]["output_tokens"] == 20
    assert job["thread_id"]
    # The worker ran codex in the job's directory (the same machine here), the way a
    # local runner does: approval never, the job's level and sandbox.
    assert (cx.project / "made.txt").read_text() == "hi\n"
    (run,) = cx.fake_runs()
    assert run["cd"] == str(cx.project) and run["sandbox"] == "workspace-write"
    assert run["config"]["approval_policy"] == "never"
    assert run["config"]["model_reasoning_effort"] == "low"
    # The report lands in the project under the remote runner's PID, like a local one.
    (report,) = cx.reports()
    assert f"_{job['runner_pid']}_codex_task.md" in report.name and "_TEMP_" not in report.name
    text = report.read_text()
    assert "**succeeded**" in text and "remote task" in text and "`made.txt` (add)" in text
    assert "echo 2" in text and "in 100" in text
    assert job["report_path"] == str(report)
    # The worker's events are in the job's log here: `logs` reads them like a local job's.
    out = cx.ok("logs", str(job_id)).stdout
    assert "echo 2" in out and "add made.txt" in out and "Task Summary" in out
    detail = cx.ok("status", str(job_id)).stdout
    assert "worker  w1@test" in detail and "backend  celery, queue codex" in detail


def test_config_from_environment_and_progress_while_running(
    cx: Env, workers: StartWorker, redis_url: str
) -> None:
    workers("w1")
    env = {"CODEXW_BACKEND": "celery", "CODEXW_BROKER_URL": redis_url, "CODEXW_QUEUE": "codex"}
    gate = cx.tmp / "gate"
    proc = cx.ok("launch", "--json", f"@fake events 2; @fake wait-for {gate}\nslow one", env=env)
    job_id = json.loads(proc.stdout)["job_id"]
    _wait_running(cx, job_id)
    # Progress streams back while codex runs: the events so far, in the registry and log.
    wait_until(lambda: "echo 1" in (cx.job(job_id)["last_action"] or ""), timeout=30,
               what="progress from the worker")
    follow = subprocess.Popen(
        [sys.executable, "-m", "codexw", "logs", "-f", str(job_id)], cwd=cx.project,
        env=cx.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    temp = [p for p in cx.reports() if "_TEMP_" in p.name]
    assert temp and "echo 1" in temp[0].read_text()
    gate.write_text("go")
    out, err = follow.communicate(timeout=120)
    assert follow.returncode == 0, err
    assert b"echo 0" in out and b"echo 1" in out and b"Task Summary" in out
    assert cx.job(job_id)["state"] == "succeeded"


def test_launch_celery_needs_a_broker(cx: Env, need_celery: None) -> None:
    proc = cx.run("launch", "--backend", "celery", "task")
    assert proc.returncode == 2
    assert "needs a broker" in proc.stderr and "CODEXW_BROKER_URL" in proc.stderr
    proc = cx.run("launch", "--backend", "celery", "--broker", "http://x", "task")
    assert proc.returncode == 2 and "redis://" in proc.stderr


# -- the bound across workers -------------------------------------------------------------


def test_batch_bound_holds_across_two_workers(
    cx: Env, workers: StartWorker, redis_url: str
) -> None:
    # Two workers could run four jobs at once; the batch allows three.
    workers("w1", concurrency=2)
    workers("w2", concurrency=2)
    tasks = cx.project / "tasks.txt"
    tasks.write_text("\n".join(f"@fake sleep 3 ;task {i}" for i in range(7)) + "\n")
    proc = cx.run("batch", str(tasks), "-j", "3", *_remote(redis_url), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "7 succeeded, 0 failed of 7" in proc.stdout
    assert cx.max_running() == 3
    jobs = json.loads(cx.ok("status", "--json", "--batch", "1").stdout)["jobs"]
    assert len(jobs) == 7 and {j["state"] for j in jobs} == {"succeeded"}
    # Each worker holds at most two tasks, so three at once means both took work.
    assert {j["host"] for j in jobs} == {"w1@test", "w2@test"}
    assert len(cx.fake_runs()) == 7
    finals = [p for p in cx.reports() if "_TEMP_" not in p.name]
    assert len(finals) == 7


# -- a worker that dies -------------------------------------------------------------------


def test_worker_killed_mid_task_is_redelivered_and_recorded_once(
    cx: Env, workers: StartWorker, redis_url: str
) -> None:
    one = workers("w1")
    two = workers("w2")
    data = cx.launch("@fake sleep 3\nsurvive a dead worker", *_remote(redis_url))
    job_id = data["job_id"]
    job = _wait_running(cx, job_id)
    victim, other = (one, two) if job["host"] == one.node else (two, one)
    wait_until(lambda: len(cx.fake_runs()) == 1, timeout=30, what="codex to start")
    first_codex = cx.fake_runs()[0]["pid"]
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=30)
    # Its pool process stops codex's group and leaves without a result.
    wait_until(lambda: _gone(first_codex), timeout=30, what="the first codex to stop")
    wait_until(lambda: not _group_members(victim.proc.pid), timeout=30,
               what="the dead worker's pool processes to exit")
    proc = cx.run("wait", "--timeout", "150s", str(job_id), timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = cx.job(job_id)
    assert job["state"] == "succeeded" and job["host"] == other.node
    assert job["attempts"] == [] and job["attempt"] == 1
    runs = [r for r in cx.fake_runs() if "survive a dead worker" in r["prompt"]]
    assert len(runs) == 2  # the lost run and the redelivered one
    # Exactly one outcome: one job row, one final report, no TEMP left.
    with cx.db() as db:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    (report,) = cx.reports()
    assert "_TEMP_" not in report.name
    assert f"worker {victim.node} was lost mid-run; the task was redelivered to {other.node}" in report.read_text()
    _no_fake_codex_left(cx)


# -- auth ---------------------------------------------------------------------------------


def test_worker_without_auth_exits_nonzero_within_30s(cx: Env, need_celery: None) -> None:
    started = time.monotonic()
    proc = cx.run("worker", "--broker", "redis://127.0.0.1:9/0", "--concurrency", "2",
                  env={"FAKE_CODEX_LOGGED_OUT": "1"}, timeout=30)
    assert time.monotonic() - started < 30
    assert proc.returncode == 2
    assert "codex is not logged in" in proc.stderr and "codex login" in proc.stderr
    assert "takes no work" in proc.stderr


def test_worker_without_codex_or_broker_exits_nonzero(cx: Env, need_celery: None) -> None:
    env = {"PATH": os.pathsep.join(p for p in cx.env["PATH"].split(os.pathsep)
                                   if p != str(cx.bin_dir))}
    proc = cx.run("worker", "--broker", "redis://127.0.0.1:9/0", env=env, timeout=30)
    assert proc.returncode == 2 and "codex" in proc.stderr and "not found" in proc.stderr
    proc = cx.run("worker", "--broker", "redis://127.0.0.1:9/0", timeout=30)
    assert proc.returncode == 2 and "cannot reach the broker" in proc.stderr


# -- kill ---------------------------------------------------------------------------------


def test_kill_remote_job_leaves_no_process_behind(
    cx: Env, workers: StartWorker, redis_url: str
) -> None:
    worker = workers("w1")
    # A codex that ignores SIGTERM and a grandchild in its group that does too: only
    # the worker's SIGKILL of the whole group stops them.
    data = cx.launch("@fake grandchild; @fake ignore-term; @fake sleep 60\nkill me",
                     *_remote(redis_url))
    job_id = data["job_id"]
    _wait_running(cx, job_id)
    wait_until(lambda: list(cx.fake_state.glob("grandchild.*")), timeout=30,
               what="the grandchild to start")
    grandchild = int(next(cx.fake_state.glob("grandchild.*")).name.split(".")[1])
    codex_pid = cx.fake_runs()[0]["pid"]
    runner_pid = cx.job(job_id)["runner_pid"]
    out = cx.ok("kill", str(job_id)).stdout
    assert "running → killed" in out
    job = cx.job(job_id)
    assert job["state"] == "killed" and job["reason"] == "killed by `codexw kill`"
    for pid in (grandchild, codex_pid, runner_pid):
        wait_until(lambda pid=pid: _gone(pid), timeout=30, what=f"process {pid} to be gone")
    (report,) = cx.reports()
    assert "**killed**" in report.read_text()
    # The worker lives on and takes the next job; its timeout is the job's.
    assert worker.proc.poll() is None
    data = cx.launch("@fake sleep 30\ntoo slow", "--timeout", "2s", *_remote(redis_url))
    assert cx.run("wait", str(data["job_id"])).returncode == 1
    job = cx.job(data["job_id"])
    assert job["state"] == "timed_out" and "timed out after 2s" in job["reason"]
    _no_fake_codex_left(cx)


def test_kill_before_a_worker_takes_it_then_a_worker_in_its_workspace(
    cx: Env, workers: StartWorker, redis_url: str
) -> None:
    data = cx.launch("@fake write never.txt\nnever runs", *_remote(redis_url))
    job_id = data["job_id"]
    wait_until(lambda: "waiting for a worker" in (cx.job(job_id)["last_action"] or ""),
               timeout=30, what="the job to be queued on the broker")
    out = cx.ok("kill", str(job_id)).stdout
    assert "killed" in out
    assert cx.job(job_id)["state"] == "killed"
    # A worker that starts now finds the task revoked and flagged: it never runs it.
    workspace = cx.tmp / "checkout"
    workspace.mkdir()
    workers("w1", "--workspace", str(workspace))
    data = cx.launch("@fake write here.txt\nin the workspace", *_remote(redis_url))
    assert cx.run("wait", str(data["job_id"])).returncode == 0
    assert (workspace / "here.txt").exists() and not (cx.project / "here.txt").exists()
    assert [r for r in cx.fake_runs() if "never runs" in r["prompt"]] == []
    assert not (cx.project / "never.txt").exists() and not (workspace / "never.txt").exists()
    assert cx.job(data["job_id"])["host"] == "w1@test"


# -- retries, follow-ups, a lost remote runner ---------------------------------------------


def test_remote_retry_and_continue_run_on_the_workers(
    cx: Env, workers: StartWorker, redis_url: str
) -> None:
    workers("w1")
    data = cx.launch("@fake fail-first 1 429\nflaky", "--retries", "1", *_remote(redis_url))
    assert cx.run("wait", str(data["job_id"])).returncode == 0
    first = cx.job(data["job_id"])
    assert first["state"] == "failed" and "429" in first["reason"]
    (retry,) = [j for j in json.loads(cx.ok("status", "--json", "--all").stdout)["jobs"]
                if j["retry_of"] == first["id"]]
    assert retry["state"] == "succeeded" and retry["backend"] == "celery"
    assert retry["host"] == "w1@test" and retry["celery_task_id"] != first["celery_task_id"]
    # A follow-up resumes the conversation on the workers (where its session lives).
    out = json.loads(cx.ok("continue", "--json", str(retry["id"]), "and now tests").stdout)
    follow_id = out["job_id"]
    assert cx.run("wait", str(follow_id)).returncode == 0
    follow = cx.job(follow_id)
    assert follow["backend"] == "celery" and follow["host"] == "w1@test"
    assert follow["thread_id"] == retry["thread_id"]
    # codex reports the thread's total; the follow-up is charged only its own turn.
    assert follow["tokens"]["input_tokens"] == 100
    resumed = [r for r in cx.fake_runs() if r["resume"]]
    assert len(resumed) == 1 and resumed[0]["resume"] == retry["thread_id"]


def test_lost_remote_runner_stops_the_job_on_the_worker(
    cx: Env, workers: StartWorker, redis_url: str
) -> None:
    worker = workers("w1")
    data = cx.launch("@fake sleep 60\norphaned", *_remote(redis_url))
    job_id = data["job_id"]
    job = _wait_running(cx, job_id)
    wait_until(lambda: cx.fake_runs(), timeout=30, what="codex to start")
    codex_pid = cx.fake_runs()[0]["pid"]
    os.kill(job["runner_pid"], signal.SIGKILL)
    wait_until(lambda: _gone(job["runner_pid"]), timeout=30, what="the remote runner to die")
    # The next command sees the runner gone: the job is lost and its task flagged and
    # revoked, so the worker stops codex's group.
    job = cx.job(job_id)
    assert job["state"] == "lost" and "ended without recording an outcome" in job["reason"]
    wait_until(lambda: _gone(codex_pid), timeout=30, what="the worker to stop codex")
    assert worker.proc.poll() is None
    _no_fake_codex_left(cx)
