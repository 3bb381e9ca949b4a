"""The stand-in runner of a remote job: `python -m codexw.backends.celery.remote JOB KEY`.

It stands in for the local runner on the submitting machine, so the registry, the
daemonless queue, `status`, `wait`, `logs` and `kill` treat a remote job like a local
one: it is spawned only when the job got a slot (that is how a batch's bound holds
across every worker), it sends the job to the Celery queue, mirrors the worker's
event lines into the job's log and its progress into the registry and the TEMP
report, and when the result comes back it writes the final report into the project
and records the outcome, once. SIGTERM (what `codexw kill` sends) sets the task's kill
flag and revokes it with terminate; the worker stops codex's whole process group and
reports the job killed.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any, cast

from codexw.backends.celery import protocol
from codexw.core import lifecycle, process, scheduler
from codexw.core.codex import RunSummary
from codexw.core.lifecycle import Ending
from codexw.core.models import Job, JobState
from codexw.core.run import StopRequest, Throttle
from codexw.core.store import Store

STATE_CHECK_INTERVAL = 2.0
KILL_CONFIRM_MARGIN = 8.0  # beyond the job's kill grace, to hear back from the worker


class Client:
    """The submitting side's handle on the broker: Celery for tasks, Redis for streams."""

    def __init__(self, broker_url: str, queue: str) -> None:
        import redis

        from codexw.backends.celery.app import make_app

        self.broker_url = broker_url
        self.queue = queue
        self.app = make_app(broker_url, queue)
        self.redis = redis.Redis.from_url(broker_url, socket_connect_timeout=5, socket_timeout=15)

    def send(self, task_id: str, payload: dict[str, Any], time_limit: float | None) -> None:
        self.app.send_task(
            protocol.TASK_NAME,
            args=[payload],
            task_id=task_id,
            queue=self.queue,
            time_limit=time_limit,
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 1.0,
                          "interval_max": 2.0},
        )

    def kill(self, task_id: str) -> None:
        """Flag the task killed (a worker checks before and while running it), then
        revoke it with terminate (the pool process running it gets SIGTERM)."""
        self.redis.set(protocol.kill_key(task_id), "1", ex=protocol.STREAM_TTL)
        self.app.control.revoke(task_id, terminate=True, signal="SIGTERM")

    def read(self, task_id: str, after: str, block_ms: int) -> list[tuple[str, str, Any]]:
        # block=None: answer at once (BLOCK 0 would wait forever).
        found = cast("list[tuple[bytes, list[protocol.StreamEntry]]] | None", self.redis.xread(
            {protocol.events_key(task_id): after}, count=200, block=block_ms or None
        ))
        entries = []
        for _key, items in found or []:
            for entry_id, fields in items:
                kind = fields.get(b"kind", b"").decode()
                entries.append((entry_id.decode(), kind, protocol.decode(fields[b"data"])))
        return entries

    def trim(self, task_id: str) -> None:
        """Keep only the `end` entry: enough for a late redelivery to return the result."""
        self.redis.xtrim(protocol.events_key(task_id), maxlen=1)

    def state(self, task_id: str) -> tuple[str, Any]:
        result = self.app.AsyncResult(task_id)
        return result.state, result.info


def time_limit_for(job: Job) -> float | None:
    """Celery's hard limit for the task: the job's timeout plus time to stop it."""
    if not job.spec.timeout:
        return None
    return job.spec.timeout + job.spec.kill_grace + 30.0


class RemoteRun:
    def __init__(self, store: Store, job: Job, stop: StopRequest) -> None:
        self.store = store
        self.job = job
        self.stop = stop
        self.progress = Throttle()
        self.summary = RunSummary()  # progress, from the lines as they arrive
        self.result: dict[str, Any] | None = None
        self.started = False
        self.host: str | None = None
        self.log_fd = -1
        self.dirty = False
        self.deliveries = 0

    # -- the run -------------------------------------------------------------------

    def run(self) -> Ending:
        spec = self.job.spec
        if not spec.broker_url:
            return Ending(JobState.FAILED, "no broker recorded for this remote job")
        log = lifecycle.log_path(self.job.id)
        self.log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        task_id = self.job.celery_task_id or str(uuid.uuid4())
        with self.store.transaction():
            self.store.set_paths(self.job.id, None, str(log))
            self.store.set_remote(self.job.id, task_id=task_id)
        where = f"{protocol.mask_url(spec.broker_url)} queue {spec.queue}"
        try:
            client = Client(spec.broker_url, spec.queue or "codex")
            baseline = lifecycle.usage_before(self.store, spec.resume_of)
            client.send(task_id, protocol.payload_for(self.job, baseline), time_limit_for(self.job))
        except Exception as exc:  # kombu/redis raise many kinds; all mean "not sent"
            return Ending(JobState.FAILED, f"could not send the job to {where}: {exc}",
                          retryable=True)
        self.set_action(f"queued on {where}: waiting for a worker")
        return self.follow(client, task_id)

    def follow(self, client: Client, task_id: str) -> Ending:
        after = "0-0"
        kill_deadline: float | None = None
        next_state_check = time.monotonic() + STATE_CHECK_INTERVAL
        broker_down_since: float | None = None
        while True:
            if self.stop.requested and kill_deadline is None:
                kill_deadline = time.monotonic() + self.job.spec.kill_grace + KILL_CONFIRM_MARGIN
                try:
                    client.kill(task_id)
                except Exception as exc:
                    self.summary.warnings.append(f"could not reach the broker to kill: {exc}")
                if not self.started and not self.seen_start(client, task_id, after):
                    # The kill flag keeps any worker from starting it later.
                    return Ending(JobState.KILLED, "killed by `codexw kill` before a worker took it")
            if kill_deadline is not None and time.monotonic() > kill_deadline:
                return Ending(JobState.KILLED,
                              "killed by `codexw kill` (the worker did not confirm in time)")
            try:
                entries = client.read(task_id, after, block_ms=1000)
                broker_down_since = None
            except Exception as exc:
                broker_down_since = broker_down_since or time.time()
                since = time.strftime("%H:%M:%S", time.localtime(broker_down_since))
                self.set_action(f"broker unreachable since {since}: {exc}")
                time.sleep(1.0)
                continue
            for entry_id, kind, data in entries:
                after = entry_id
                if kind == "start":
                    self.on_start(data)
                elif kind == "lines":
                    self.on_lines(data)
                elif kind == "end":
                    self.result = data
                    try:
                        client.trim(task_id)
                    except Exception:
                        pass  # the stream expires anyway
                    return self.ending_from_result(data)
            self.flush()
            if time.monotonic() >= next_state_check:
                next_state_check = time.monotonic() + STATE_CHECK_INTERVAL
                ending = self.check_state(client, task_id, after)
                if ending is not None:
                    return ending

    def seen_start(self, client: Client, task_id: str, after: str) -> bool:
        try:
            return any(kind == "start" for _id, kind, _data in client.read(task_id, after, 0))
        except Exception:
            return False

    def check_state(self, client: Client, task_id: str, after: str) -> Ending | None:
        """A task that ended without an `end` entry: failed or revoked by Celery."""
        try:
            state, info = client.state(task_id)
        except Exception:
            return None
        if state not in ("FAILURE", "REVOKED"):
            return None
        if state == "REVOKED" and self.started and self.stop.requested:
            return None  # revoked by our kill: the worker reports once codex's group is gone
        # The `end` entry is written before the task returns: one last look for it.
        try:
            for _id, kind, data in client.read(task_id, after, block_ms=0):
                if kind == "end":
                    self.result = data
                    return self.ending_from_result(data)
                if kind == "lines":
                    self.on_lines(data)
        except Exception:
            pass
        if state == "REVOKED":
            why = "killed by `codexw kill`" if self.stop.requested else "revoked on the worker"
            return Ending(JobState.KILLED, why)
        return Ending(JobState.FAILED, f"the worker failed the task: {type_name(info)}: {info}")

    # -- events ----------------------------------------------------------------------

    def on_start(self, data: dict[str, Any]) -> None:
        host = str(data.get("host") or "?")
        self.deliveries += 1
        if self.started:
            # A redelivery (the first worker was lost): the job starts over there.
            note = f"worker {self.host} was lost mid-run; the task was redelivered to {host}"
            self.summary = RunSummary(warnings=[*self.summary.warnings, note])
            os.ftruncate(self.log_fd, 0)
        self.started = True
        self.host = host
        self.summary.last_action = f"started on {host}"
        with self.store.transaction():
            self.store.set_remote(self.job.id, host=host)
            self.store.mark_running(
                self.job.id, os.getpid(), None, float(data.get("started_at") or time.time())  # type: ignore[arg-type]
            )
        self.job = self.store.get_job(self.job.id)
        self.dirty = True
        self.flush(force=True)

    def on_lines(self, text: str) -> None:
        raw = text.encode("utf-8")
        os.write(self.log_fd, raw)
        # An entry may end mid-line (a worker forwards a very long line in parts).
        self.summary.feed_bytes(raw)
        self.dirty = True

    def ending_from_result(self, data: dict[str, Any]) -> Ending:
        try:
            state = JobState(str(data.get("state")))  # a non-str names no state either
        except ValueError:
            return Ending(JobState.FAILED, f"the worker sent an unknown outcome {data.get('state')!r}")
        if not state.is_final:
            return Ending(JobState.FAILED, f"the worker sent a non-final outcome {state.value}")
        reason = data.get("reason")
        ending = Ending(state, reason, data.get("exit_code"), bool(data.get("retryable")))
        # A worker's rate-limited ending (core/run.py): requeued like a local one.
        ending.rate_limited = isinstance(reason, str) and reason.startswith("rate-limited: ")
        return ending

    # -- progress ------------------------------------------------------------------

    def set_action(self, text: str) -> None:
        self.summary.last_action = text
        self.dirty = True
        self.flush(force=True)

    def flush(self, force: bool = False) -> None:
        if not (force or self.dirty) or not self.progress.due(force):
            return
        self.dirty = False
        lifecycle.record_progress(self.store, self.store.get_job(self.job.id), self.summary)

    # -- end -----------------------------------------------------------------------

    def finish(self, ending: Ending) -> None:
        self.summary.end_of_stream()
        summary: RunSummary | None = self.summary if self.summary.events else None
        if self.result is not None:
            summary = protocol.summary_from_dict(self.result.get("summary") or {})
            summary.warnings = [w for w in self.summary.warnings if "redelivered" in w] + [
                w for w in summary.warnings if "redelivered" not in w
            ]
            if self.result.get("host"):
                self.host = str(self.result["host"])
        elif summary is None and self.summary.warnings:
            summary = self.summary
        if self.host:
            with self.store.transaction():
                self.store.set_remote(self.job.id, host=self.host)
        lifecycle.finalize(self.store, self.job, ending, summary)
        if self.log_fd >= 0:
            os.close(self.log_fd)
            self.log_fd = -1


def type_name(value: object) -> str:
    return type(value).__name__


def revoke(job: Job) -> None:
    """Stop what a remote job left on a worker (its runner here is gone): best effort."""
    if not job.celery_task_id or not job.spec.broker_url:
        return
    try:
        client = Client(job.spec.broker_url, job.spec.queue or "codex")
        client.kill(job.celery_task_id)
    except Exception:
        pass


def main(argv: list[str]) -> int:
    job_id = int(argv[1])
    job_key = argv[2] if len(argv) > 2 else None
    stop = StopRequest()
    stop.install()
    store = Store.open()
    me = os.getpid()
    with store.transaction():
        adopted = store.adopt(job_id, me, process.create_time(me), job_key)
    if not adopted:
        return 0
    remote = RemoteRun(store, store.get_job(job_id), stop)
    if stop.requested or remote.job.kill_requested:
        ending = Ending(JobState.KILLED, "killed by `codexw kill` before it was sent")
    else:
        ending = remote.run()
    remote.finish(ending)
    scheduler.fill_slots(store)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
