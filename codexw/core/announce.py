"""Job-end notifications: a word when a job (or a batch) ends, so nobody has to watch.

Not to be confused with core.notify, which wakes codexw's own waiters on every
registry change. Targets (config `notify`, flag `--notify`), copied onto each job at
launch: `desktop` (notify-send where present, else nothing), `webhook:URL` (POST of
JSON with a Slack-compatible `text`), `command:PATH` (run with the job's fields in
CODEXW_JOB_* variables; argv only, never a shell).

Once per job end, and never twice:
- the announcement is a registry row inserted in the very transaction that records
  the end (`record_ending`), so no crash can lose it, also when a later command
  finalizes a job whose runner died; an automatic retry's failure queues none (the
  chain's last attempt is announced);
- a detached sender (`python -m codexw.core.announce`, started after the commit) claims
  it (`due` → `sending`, with its PID) before sending and settles it (`sent`/`failed`)
  after, so neither a slow hook nor a failing one delays or changes the job. A sender
  that dies in the middle of sending leaves a claim that is settled `failed`, never
  sent again: sent twice is worse than a missing word about a crash at that instant;
- each hook is bounded in time (HOOK_TIMEOUT); a due announcement nobody sends (its
  sender could not start) is picked up by the next command's reconcile (`pick_up`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from codexw.core import paths, process
from codexw.core.durations import format_duration
from codexw.core.models import Job, JobState

if TYPE_CHECKING:
    from codexw.core.store import Announcement, Store

HOOK_TIMEOUT = 10.0  # seconds one target may take (a webhook's request, a command's run)
STALE_AFTER = 5.0  # a due announcement this old has no sender: the next command starts one
LOG_NAME = "announce.log"
FAILED_STATES = frozenset({JobState.FAILED, JobState.TIMED_OUT, JobState.LOST})
DIED_WHILE_SENDING = "the sender died while sending; not sent again (never sent twice)"


def record_ending(store: Store, job: Job, *, retrying: bool, now: float) -> bool:
    """Inside the transaction that records `job`'s end: queue the announcements it
    makes due. True if one was queued.

    Nothing for an attempt an automatic retry follows. A batch job announces its own
    end only if asked (`--notify-each` puts targets on its spec); the batch's end is
    announced once its last job (retries included) has ended."""
    if retrying:
        return False
    queued = False
    if job.spec.notify:
        queued = store.queue_announcement(job.spec.notify, now, job_id=job.id)
    batch_id = job.spec.batch_id
    if batch_id is not None:
        targets = store.batch_notify(batch_id)
        if targets and not store.batch_is_open(batch_id):
            queued = store.queue_announcement(targets, now, batch_id=batch_id) or queued
    return queued


def spawn_sender() -> None:
    """Start a detached sender for the due announcements (after the commit that queued
    them): the caller, often a runner about to leave, never waits for a hook."""
    env = dict(os.environ)
    env["CODEXW_STATE_DIR"] = str(paths.state_dir().resolve())
    argv = [sys.executable, "-P", "-m", "codexw.core.announce"]
    try:
        process.spawn_detached(argv, paths.logs_dir() / LOG_NAME, env)
    except OSError:
        pass  # the next command's reconcile starts one (pick_up)


def pick_up(store: Store, now: float, stale_after: float = STALE_AFTER) -> bool:
    """From reconcile: start a sender if an announcement waits with nobody sending it
    (due for `stale_after` seconds, or claimed by a sender that is gone). One read of a
    partial index that holds only unsent announcements."""
    with store.snapshot():
        pending = store.open_announcements()
    for item in pending:
        if (item.state == "due" and now - item.created_at >= stale_after) or (
            item.state == "sending" and not process.is_alive(item.sender_pid, item.sender_start)
        ):
            spawn_sender()
            return True
    return False


@dataclass
class Message:
    """What one announcement says: the JSON body of a webhook (with `text`), the
    CODEXW_* variables of a command, a title and body for the desktop."""

    body: dict[str, object]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return str(self.body["text"])


def task_head(task: str, width: int = 100) -> str:
    line = next((ln.strip() for ln in task.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def job_message(job: Job) -> Message:
    head = task_head(job.spec.task)
    duration = job.duration if job.started_at is not None else None
    took = f" after {format_duration(duration)}" if duration is not None else ""
    text = f"codexw: job {job.id} {job.state.value}{took}: {head}"
    if job.state != JobState.SUCCEEDED and job.reason:
        text += f" ({task_head(job.reason, 160)})"
    body: dict[str, object] = {
        "event": "job_end", "job_id": job.id, "state": job.state.value, "task": head,
        "duration": duration, "report_path": job.report_path, "exit_code": job.exit_code,
        "reason": job.reason, "attempt": job.attempt, "max_attempts": job.spec.retries + 1,
        "project": job.spec.project, "batch_id": job.spec.batch_id, "text": text,
    }
    env = {
        "CODEXW_EVENT": "job_end", "CODEXW_JOB_ID": str(job.id),
        "CODEXW_JOB_STATE": job.state.value, "CODEXW_JOB_TASK": head,
        "CODEXW_JOB_DURATION": f"{duration:.1f}" if duration is not None else "",
        "CODEXW_JOB_REPORT": job.report_path or "",
        "CODEXW_JOB_EXIT_CODE": "" if job.exit_code is None else str(job.exit_code),
        "CODEXW_JOB_REASON": job.reason or "", "CODEXW_JOB_ATTEMPT": str(job.attempt),
        "CODEXW_JOB_PROJECT": job.spec.project, "CODEXW_TEXT": text,
    }
    return Message(body, env)


def batch_message(batch_id: int, jobs: list[Job]) -> Message:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
    failed = [j.id for j in jobs if j.state in FAILED_STATES]
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    text = f"codexw: batch {batch_id} ended: {summary or 'no jobs'}"
    if failed:
        text += " (failed: " + ", ".join(f"job {i}" for i in failed[:20]) + ")"
    body: dict[str, object] = {
        "event": "batch_end", "batch_id": batch_id, "counts": counts, "failed": failed,
        "jobs": [j.id for j in jobs], "text": text,
    }
    env = {
        "CODEXW_EVENT": "batch_end", "CODEXW_BATCH_ID": str(batch_id),
        "CODEXW_BATCH_COUNTS": json.dumps(counts, sort_keys=True),
        "CODEXW_BATCH_FAILED": " ".join(str(i) for i in failed), "CODEXW_TEXT": text,
    }
    return Message(body, env)


def message_for(store: Store, item: Announcement) -> Message | None:
    if item.job_id is not None:
        job = store.find_job(item.job_id)
        return job_message(job) if job is not None else None
    if item.batch_id is not None:
        return batch_message(item.batch_id, list(store.batch_latest(item.batch_id).values()))
    return None


def _clean_env_value(value: str) -> str:
    return value.replace("\x00", "\\0")


def send(message: Message, target: str, announcement_id: int) -> None:
    """Deliver to one target within HOOK_TIMEOUT; raises OSError (or ValueError) saying
    why it failed."""
    kind, _, rest = target.partition(":")
    if kind == "desktop":
        import shutil  # here, not at the top: the runner, which imports this module, stays small

        notifier = shutil.which("notify-send")
        if notifier is None:
            return  # no desktop notifier here: silently nothing, as documented
        _run([notifier, "--app-name=codexw", "codexw", message.text], {}, None)
    elif kind == "webhook":
        _post(rest, message, announcement_id)
    elif kind == "command":
        env = {k: _clean_env_value(v) for k, v in message.env.items()}
        env["CODEXW_ANNOUNCEMENT_ID"] = str(announcement_id)
        cwd = str(message.body.get("project") or "") or None
        _run([rest], env, cwd if cwd and os.path.isdir(cwd) else None)
    else:
        raise ValueError(f"unknown notify target {target!r}")


def _post(url: str, message: Message, announcement_id: int) -> None:
    import http.client
    import urllib.error
    import urllib.request

    data = json.dumps({**message.body, "announcement_id": announcement_id}).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "codexw",
        # The same key if a receiver ever sees this announcement again.
        "Idempotency-Key": f"codexw-announcement-{announcement_id}",
    })
    try:
        with urllib.request.urlopen(request, timeout=HOOK_TIMEOUT) as response:
            response.read(65536)
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code} from the webhook") from None
    except urllib.error.URLError as exc:
        raise OSError(f"webhook not reached: {exc.reason}") from None
    except (http.client.HTTPException, ValueError) as exc:  # a bad port, a non-HTTP answer
        raise OSError(f"webhook failed: {type(exc).__name__}: {exc}") from None


def _run(argv: list[str], extra_env: dict[str, str], cwd: str | None) -> None:
    """Run a hook in its own group, output to the announce log; past HOOK_TIMEOUT the
    group is stopped (TERM, then KILL)."""
    log = os.open(paths.logs_dir() / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            close_fds=True, cwd=cwd or "/", env={**os.environ, **extra_env},
        )
    finally:
        os.close(log)
    try:
        code = child.wait(timeout=HOOK_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate_group(child.pid, grace=2.0, reap=[child])
        child.wait()
        raise OSError(f"{argv[0]} took longer than {HOOK_TIMEOUT:g} s and was stopped") from None
    process.terminate_group(child.pid, grace=1.0)  # what it left running in its group
    if code != 0:
        raise OSError(f"{argv[0]} exited with {code}")


def _log(line: str) -> None:
    try:
        sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        sys.stderr.flush()
    except OSError:
        pass


def send_due(store: Store) -> int:
    """Send every due announcement, one at a time; returns how many were sent."""
    me = os.getpid()
    my_start = process.create_time(me)
    sent = 0
    while True:
        with store.transaction(notify_waiters=False):
            pending = store.open_announcements()
            for item in pending:
                if item.state == "sending" and not process.is_alive(
                    item.sender_pid, item.sender_start
                ):
                    store.settle_announcement(item.id, "failed", time.time(), DIED_WHILE_SENDING,
                                              item.sender_pid)
            due = next((item for item in pending if item.state == "due"), None)
            if due is None:
                return sent
            store.claim_announcement(due.id, me, my_start)  # ours: this transaction read it
        message = message_for(store, due)
        errors = []
        for target in due.targets if message is not None else ():
            try:
                send(message, target, due.id)  # type: ignore[arg-type]
            except (OSError, ValueError) as exc:
                errors.append(f"{target.partition(':')[0]}: {exc}")
                _log(f"announcement {due.id}: {target.partition(':')[0]} failed: {exc}")
        if message is None:
            errors.append("its job or batch is no longer in the registry")
        with store.transaction(notify_waiters=False):
            store.settle_announcement(due.id, "failed" if errors else "sent", time.time(),
                                      "; ".join(errors) or None, me)
        sent += not errors


def main() -> int:
    from codexw.core.store import Store

    with Store.open() as store:
        send_due(store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
