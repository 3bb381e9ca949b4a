"""Run one job on a Celery worker: the same codex run as a local runner's, without a registry.

codex runs exactly as under a local runner (core.run.CodexRun: own process group,
timeout, TERM → grace → KILL of the group, approval never); its sink, instead of a
registry, forwards the raw event lines to the task's Redis stream, and the task
returns the outcome, the run summary and the final message.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, cast

import redis

from codexw.backends.celery import protocol
from codexw.backends.celery.app import WorkerSettings
from codexw.core import naming, paths, process
from codexw.core.codex import RunSummary
from codexw.core.codexbin import CodexProgram
from codexw.core.lifecycle import Ending
from codexw.core.models import Job, JobState
from codexw.core.run import CodexRun, StopRequest, Throttle, codex_env, stderr_log

FORWARD_SIZE = 1 << 20  # the most bytes of the log one `lines` stream entry carries


class Busy(Exception):
    """Another delivery of the same task holds its lock, or Redis did not answer before
    anything ran: the task is tried again later."""


class Stream:
    """The task's Redis keys: its event stream, kill flag and run lock."""

    def __init__(self, client: redis.Redis, task_id: str) -> None:
        self.client = client
        self.key = protocol.events_key(task_id)
        self.kill = protocol.kill_key(task_id)
        self.lock_name = protocol.lock_key(task_id)
        self.token = f"{os.getpid()}:{uuid.uuid4().hex}"

    def add(self, kind: str, data: Any) -> None:
        pipe = self.client.pipeline()
        pipe.xadd(self.key, {"kind": kind, "data": protocol.encode(data)})
        pipe.expire(self.key, protocol.STREAM_TTL)
        pipe.execute()

    def finished(self) -> dict[str, Any] | None:
        """The result of an earlier delivery that already ended, if any."""
        last = cast("list[protocol.StreamEntry]", self.client.xrevrange(self.key, count=1))
        for _id, fields in last:
            if fields.get(b"kind") == b"end":
                return protocol.decode(fields[b"data"])
        return None

    def kill_requested(self) -> bool:
        try:
            return bool(self.client.exists(self.kill))
        except redis.RedisError:
            return False

    def lock(self) -> bool:
        return bool(self.client.set(self.lock_name, self.token, nx=True, ex=protocol.LOCK_TTL))

    def refresh(self) -> None:
        try:
            if self.client.get(self.lock_name) == self.token.encode():
                self.client.expire(self.lock_name, protocol.LOCK_TTL)
            else:  # expired while Redis was away: take it back if free
                self.client.set(self.lock_name, self.token, nx=True, ex=protocol.LOCK_TTL)
        except redis.RedisError:
            pass

    def unlock(self) -> None:
        try:
            if self.client.get(self.lock_name) == self.token.encode():
                self.client.delete(self.lock_name)
        except redis.RedisError:
            pass


class StreamSink:
    """A worker run's reports: the start, the raw event lines and kill checks, through
    the task's Redis stream."""

    def __init__(self, task_id: str, stream: Stream, log_dir: Path, node: str,
                 stop: StopRequest) -> None:
        self.task_id = task_id
        self.stream = stream
        self.log_dir = log_dir
        self.node = node
        self.stop = stop
        self.sent = 0  # bytes of the log already forwarded
        self.started_at: float | None = None
        self.kill_seen = False
        self.kill_check = Throttle(0.5)
        self.lock_refresh = Throttle(protocol.LOCK_REFRESH)
        self.lock_refresh.due()  # the lock was just taken
        for stale in (self.log_file(), stderr_log(self.log_file())):
            try:  # an earlier delivery of this task on this machine
                stale.unlink()
            except FileNotFoundError:
                pass

    def log_file(self) -> Path:
        return self.log_dir / naming.task_log(self.task_id)

    def on_started(self, codex_pid: int, program: CodexProgram) -> bool:
        # Which program ran stays in the worker's own log; the registry does not hold it.
        self.started_at = time.time()
        self.stream.add(
            "start",
            {"host": self.node, "pid": os.getpid(), "codex_pid": codex_pid,
             "started_at": self.started_at, "log": str(self.log_file())},
        )
        return True

    def stop_requested(self) -> bool:
        if self.stop.requested:
            return True
        if self.kill_check.due():
            self.kill_seen = self.kill_seen or self.stream.kill_requested()
        return self.kill_seen

    def kill_ending(self) -> Ending:
        if self.kill_seen or self.stream.kill_requested():
            self.kill_seen = True
            return Ending(JobState.KILLED, "killed by `codexw kill`")
        return Ending(JobState.KILLED, f"the worker's pool process received {self.stop.name}")

    def on_turn_ended(self) -> None:
        pass  # the report is rendered on the submitting side

    def on_progress(self, summary: RunSummary, changed: bool) -> None:
        if self.lock_refresh.due():
            self.stream.refresh()
        if changed:
            self.forward()

    def forward(self, force: bool = False) -> None:
        """Forward the complete lines codex wrote since the last time (all, if `force`)."""
        while True:
            # Bounded reads: a line that never ends is not reread whole every time.
            try:
                with self.log_file().open("rb") as fh:
                    fh.seek(self.sent)
                    data = fh.read(FORWARD_SIZE)
            except OSError:
                return
            full = len(data) == FORWARD_SIZE
            if full:
                # A line longer than a read goes in parts (the other side's splitter
                # joins them), cut between whole characters.
                data = data[: data.rfind(b"\n") + 1] or data[: _utf8_boundary(data)]
            elif not force:
                data = data[: data.rfind(b"\n") + 1]
            if not data:
                return
            try:
                self.stream.add("lines", data.decode("utf-8", "replace"))
            except redis.RedisError:
                return  # sent with the next forward
            self.sent += len(data)
            if not full:
                return


def _utf8_boundary(data: bytes) -> int:
    """Where to cut `data` so no UTF-8 character is split (a continuation byte is 10xxxxxx)."""
    cut = len(data)
    while cut > len(data) - 4 and cut > 0 and data[cut - 1] & 0xC0 == 0x80:
        cut -= 1
    if cut > 0 and data[cut - 1] >= 0xC0:  # a lead byte whose continuation is not here yet
        cut -= 1
    return cut or len(data)


def _job_for(payload: dict[str, Any], settings: WorkerSettings) -> tuple[Job, str | None]:
    """The job as this worker runs it, or why it cannot run here."""
    spec_data = payload["spec"]
    cwd, project, problem = _workdir(spec_data["cwd"], spec_data["project"], settings.workspace)
    timeout = spec_data.get("timeout")
    timeout = settings.max_job_time if not timeout else min(float(timeout), settings.max_job_time)
    spec = protocol.spec_from_payload(
        payload,
        cwd=cwd,
        project=project,
        codex_bin=settings.codex_bin,
        codex_home=settings.codex_home,
        timeout=timeout,
        kill_grace=min(float(spec_data.get("kill_grace") or 10.0), settings.kill_grace),
    )
    job = Job(id=int(payload["job_id"]), spec=spec, state=JobState.RUNNING,
              attempt=int(payload.get("attempt") or 1))
    return job, problem


def _workdir(cwd: str, project: str, workspace: str | None) -> tuple[str, str, str | None]:
    """(cwd, project, problem): the job's directory inside the workspace (same relative
    place as on the submitting side when it exists there), else its own path."""
    if workspace is None:
        if os.path.isdir(cwd):
            return cwd, project, None
        return cwd, project, (
            f"working directory {cwd} does not exist on this worker"
            " (start the worker with --workspace DIR)"
        )
    rel = os.path.relpath(cwd, project)
    if rel.startswith(".."):
        rel = "."
    candidate = os.path.normpath(os.path.join(workspace, rel))
    return (candidate if os.path.isdir(candidate) else workspace), workspace, None


def _result(ending: Ending, run: CodexRun | None, sink: StreamSink | None,
            node: str) -> dict[str, Any]:
    summary = run.summary if run is not None else RunSummary()
    return {
        "state": ending.state.value,
        "reason": ending.reason,
        "exit_code": ending.exit_code,
        "retryable": ending.retryable,
        "host": node,
        "pid": os.getpid(),
        "started_at": sink.started_at if sink is not None else None,
        "ended_at": time.time(),
        "summary": protocol.summary_to_dict(summary),
        "final_message": summary.final_message,
        "tokens": dict(summary.usage),
        "log": str(sink.log_file()) if sink is not None else None,
    }


_clients: dict[int, redis.Redis] = {}


def _client(url: str) -> redis.Redis:
    pid = os.getpid()  # one client per pool process, never one inherited through fork
    if pid not in _clients:
        _clients.clear()
        _clients[pid] = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    return _clients[pid]


def _add_end(stream: Stream, result: dict[str, Any], patience: float = 60.0) -> None:
    """The `end` entry is the outcome: try hard to write it through a Redis blip."""
    deadline = time.monotonic() + patience
    delay = 0.5
    while True:
        try:
            stream.add("end", result)
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def execute(payload: dict[str, Any], *, task_id: str, node: str, settings: WorkerSettings) -> dict[str, Any]:
    """Run the job once for this task, or return the result an earlier delivery recorded."""
    stream = Stream(_client(settings.broker_url), task_id)
    try:
        done = stream.finished()
        if done is not None:
            return done
        if stream.kill_requested():
            result = _result(Ending(JobState.KILLED, "killed by `codexw kill` before it started"),
                             None, None, node)
            stream.add("end", result)
            return result
        if not stream.lock():
            raise Busy(task_id)
    except redis.RedisError as exc:
        raise Busy(f"{task_id}: {exc}") from None
    stop = StopRequest()
    # SIGTERM only: it is what a revoke with terminate, a hard time limit and the death
    # of the worker (see celery_app._pool_process_init) send. SIGINT stays ignored as
    # Celery set it, so Ctrl-C on a worker is a warm shutdown that lets jobs finish.
    previous = signal.signal(signal.SIGTERM, stop)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    ppid = os.getppid()
    run: CodexRun | None = None
    try:
        job, problem = _job_for(payload, settings)
        Path(settings.log_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        sink = StreamSink(task_id, stream, Path(settings.log_dir), node, stop)
        marker = process.job_marker(job.id, str(paths.state_dir().resolve()))
        run = CodexRun(job.spec, sink, codex_env(dict(os.environ), job.spec, marker))
        run.summary.usage_baseline = {
            k: int(v) for k, v in (payload.get("usage_baseline") or {}).items()
        }
        if problem is None and not sink.stop_requested():
            ending = run.wrap_up(run.execute(wake_r))
        elif problem is not None:
            ending = Ending(JobState.FAILED, problem)
        else:
            ending = sink.kill_ending()
        sink.forward(force=True)
        if stop.requested and not sink.kill_seen:
            # Not a `codexw kill`: the worker is going away (it died, or a cold shutdown,
            # or a hard time limit). codex's group is stopped; leave no result so that
            # the task is delivered again (or failed by Celery), never recorded twice.
            stream.unlock()
            os._exit(70 if os.getppid() == ppid else 71)
        result = _result(ending, run, sink, node)
        _add_end(stream, result)
        return result
    finally:
        if run is not None and run.log_fd >= 0:
            os.close(run.log_fd)
            run.log_fd = -1
        stream.unlock()
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        os.close(wake_r)
        os.close(wake_w)
