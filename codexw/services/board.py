"""What `codexw board` shows: cards by column, one job opened, stats, the live feed.

The web app (codexw/board) renders these and nothing else reads the registry for it;
every action it offers calls the same services as the CLI (launch, batch, kill, retry,
continue). Plain data (dicts ready for JSON) out, typed errors (core.errors) raised.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from codexw.core import paths
from codexw.core.errors import CodexwError
from codexw.core.models import LEVELS, TOKEN_KEYS, Job, JobState
from codexw.core.notify import Listener
from codexw.core.process import reap_children
from codexw.core.store import Store
from codexw.services.common import open_store, using_store
from codexw.services.launch import not_started_because
from codexw.services.status import job_detail, with_waiting
from codexw.services.wait import track_runners

# Column -> the states it shows. Each attempt is a job; a retry chain is one card.
COLUMNS: dict[str, tuple[JobState, ...]] = {
    "queued": (JobState.QUEUED, JobState.STARTING),
    "running": (JobState.RUNNING,),
    "succeeded": (JobState.SUCCEEDED,),
    "failed": (JobState.FAILED, JobState.TIMED_OUT, JobState.LOST),
    "stopped": (JobState.KILLED, JobState.CANCELLED),
}
COLUMN_OF = {state: column for column, states in COLUMNS.items() for state in states}
BOARD_LIMIT = 300  # newest attempts on the board
REPORT_LIMIT = 2 << 20  # bytes of a report rendered in the browser
LOG_TAIL = 300  # log entries shown when a job is opened
LOG_TAIL_BYTES = 1 << 20  # of a log's end read for them
SAFETY_INTERVAL = 5.0  # the feed reconciles at least this often, as `wait` does
MIN_INTERVAL = 0.2  # and at most this often, however busy the registry is


@dataclass(frozen=True)
class BoardQuery:
    cwd: str
    all_projects: bool = False
    limit: int = BOARD_LIMIT

    @property
    def project(self) -> str | None:
        return None if self.all_projects else str(paths.project_root(self.cwd))


def task_head(task: str, width: int = 160) -> str:
    line = next((ln.strip() for ln in task.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def card(job: Job, store: Store) -> dict[str, Any]:
    """One card: the latest attempt of a retry chain, with its branch when it has one
    and, queued, why it waits (for people)."""
    data = job.to_dict()
    waiting = None
    if job.state.is_open and job.state != JobState.RUNNING:
        # job.waiting (throttled, budget, slot, after) was set once for the whole board.
        waiting = not_started_because(store, job) or data.get("waiting")
    return {
        "id": job.id,
        "column": COLUMN_OF.get(job.state, "failed"),
        "state": job.state.value,
        "task": task_head(job.spec.task),
        "level": job.spec.level,
        "type": job.spec.type,
        "project": job.spec.project,
        "project_name": os.path.basename(job.spec.project.rstrip("/")) or job.spec.project,
        "queued_at": job.queued_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "duration": job.duration if job.ended_at is not None else None,
        "last_action": job.last_action,
        "tokens": sum(job.tokens.get(k, 0) for k in TOKEN_KEYS if k != "cached_input_tokens"),
        "attempt": job.attempt,
        "max_attempts": job.spec.retries + 1,
        "branch": data.get("branch"),
        "waiting": waiting,
        "reason": job.reason,
        "batch_id": job.spec.batch_id,
        "name": job.spec.name,
    }


def snapshot(query: BoardQuery, store: Store | None = None) -> dict[str, Any]:
    """Every card of the board, newest first."""
    with using_store(store) as store:
        jobs, _ = _jobs(store, query)
        return _snapshot(store, query, jobs)


def _jobs(store: Store, query: BoardQuery) -> tuple[list[Job], list[Job]]:
    """(latest attempt of each chain, the active ones among them)."""
    jobs = store.list_jobs(project=query.project, limit=query.limit)
    superseded = {j.retry_of for j in jobs if j.retry_of is not None}
    latest = [j for j in jobs if j.id not in superseded]
    with_waiting(store, latest)  # why each queued job waits: one plan for the board
    return latest, [j for j in latest if j.state.is_active]


def _snapshot(store: Store, query: BoardQuery, jobs: list[Job]) -> dict[str, Any]:
    return {
        "now": time.time(),
        "project": query.project,
        "all_projects": query.all_projects,
        "columns": list(COLUMNS),
        "cards": [card(j, store) for j in jobs],
    }


def _refresh(query: BoardQuery) -> tuple[dict[str, Any], list[Job]]:
    """A reconciled snapshot (a vanished runner's job moves to Failed) and the jobs
    whose runners the feed watches."""
    reap_children()  # runners this process started (a launch from the board)
    with open_store() as store:
        jobs, active = _jobs(store, query)
        return _snapshot(store, query, jobs), active


async def changes(query: BoardQuery) -> AsyncIterator[dict[str, Any]]:
    """The board now, then after every registry change (core.notify) and the moment a
    watched runner dies (its pidfd), without polling: at least every SAFETY_INTERVAL
    (a missed wake-up), at most every MIN_INTERVAL. For the board's Server-Sent
    Events; the registry is read in a worker thread."""
    import anyio

    pidfds: dict[int, int] = {}
    with Listener() as listener:
        try:
            while True:
                board, active = await anyio.to_thread.run_sync(_refresh, query)
                track_runners(active, pidfds)
                yield board
                await anyio.sleep(MIN_INTERVAL)
                await _any_readable([listener.fileno(), *pidfds.values()], SAFETY_INTERVAL)
                listener.drain()
        finally:
            for fd in pidfds.values():
                os.close(fd)


async def _any_readable(fds: list[int], timeout: float) -> None:
    import anyio

    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as group:

            async def one(fd: int) -> None:
                await anyio.wait_readable(fd)
                group.cancel_scope.cancel()

            for fd in fds:
                group.start_soon(one, fd)


def render_markdown(text: str) -> str:
    """Markdown to HTML with what the agent wrote made safe: raw HTML is escaped, not
    passed (`html: False`), and markdown-it refuses javascript:, vbscript:, file: and
    data: links. The page's Content-Security-Policy allows no inline script either."""
    from markdown_it import MarkdownIt

    # breaks: a report's "**Task:** …" / "**Started:** …" lines stay lines, as written.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable("table")
    return str(md.render(text))


def read_report(path: str | None) -> str | None:
    """A report's text (its first REPORT_LIMIT bytes), compressed by cleanup or not."""
    if not path:
        return None
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                data = fh.read(REPORT_LIMIT)
        else:
            with open(path, "rb") as fh:
                data = fh.read(REPORT_LIMIT)
    except (OSError, EOFError):
        return None
    return data.decode("utf-8", "replace")


def job_view(job_id: int) -> dict[str, Any]:
    """A job opened: its fields, the report rendered, the log's tail, its attempts and
    follow-up chain, and its process tree (CPU, RSS) while it runs."""
    from codexw.services.logs import read_log

    with open_store() as store:
        detail = job_detail(job_id, store)
        job = detail.job
        attempts = detail.attempts  # empty for a job that is its only attempt
        chain = detail.chain
        view = {
            **card(job, store),
            "job": job.to_dict(),
            "processes": [p.to_dict() for p in detail.processes],
            "attempts": [{"id": j.id, "state": j.state.value, "attempt": j.attempt}
                         for j in attempts],
            "chain": [{"id": j.id, "state": j.state.value, "task": task_head(j.spec.task, 80)}
                      for j in chain],
        }
    text = read_report(job.report_path)
    view["report_html"] = render_markdown(text) if text is not None else None
    try:
        _, entries = read_log(job_id, tail_bytes=LOG_TAIL_BYTES)
        tail: list[dict[str, Any]] = []
        for entry in entries:
            tail.append(entry.to_dict())
            if len(tail) > LOG_TAIL:
                del tail[0]
        view["log"] = tail
    except CodexwError:
        view["log"] = []
    return view


def stats(query: BoardQuery, days: int = 30) -> dict[str, Any]:
    """Per level: success rate and p50/p90 duration; tokens per day (UTC) lately."""
    from codexw.services.stats import RATED, job_stats

    with open_store() as store:
        overall = job_stats(cwd=query.cwd, all_projects=query.all_projects, store=store,
                            disk=False)
        rated: dict[str, list[int]] = {}
        for row in store.stats_groups(query.project, None):
            level = row["level"]
            counts = rated.setdefault(level, [0, 0])
            try:
                state = JobState(row["state"])
            except ValueError:
                continue
            if state in RATED:
                counts[1] += row["n"]
                if state == JobState.SUCCEEDED:
                    counts[0] += row["n"]
        since = time.time() - days * 86400
        per_day = store.tokens_by_day(query.project, since)
    order = sorted(set(rated) | set(overall.durations),
                   key=lambda lv: (LEVELS.index(lv) if lv in LEVELS else len(LEVELS), lv))
    levels = []
    for level in order:
        ok, total = rated.get(level, [0, 0])
        durations = overall.durations.get(level)
        levels.append({
            "level": level, "succeeded": ok, "rated": total,
            "success_rate": ok / total if total else None,
            "p50": durations.median if durations else None,
            "p90": durations.p90 if durations else None,
        })
    return {
        "jobs": overall.total,
        "success_rate": overall.success_rate,
        "levels": levels,
        "tokens_by_day": [
            {"day": time.strftime("%Y-%m-%d", time.gmtime(day * 86400)), "input": tin,
             "output": tout}
            for day, tin, tout in per_day
        ],
    }

