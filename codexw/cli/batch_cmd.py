"""`codexw batch` and `codexw retry`."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from codexw.cli import render
from codexw.cli.hangup import deferred_hangup
from codexw.cli.launch_cmd import read_task_file
from codexw.core.durations import format_duration
from codexw.core.errors import EXIT_INTERRUPTED, EXIT_JOB_FAILED, UsageError
from codexw.core.models import Job, JobState

if TYPE_CHECKING:
    from rich.table import Table

    from codexw.services.batch import BatchSnapshot


class _HangUp(Exception):
    """The terminal went away: stop watching, the jobs go on."""


def _on_hangup(_signum: int, _frame: object) -> None:
    raise _HangUp


def batch(
    source: str = typer.Argument(..., metavar="FILE", help="Tasks: text (one per line), .jsonl or .toml; '-' reads stdin."),
    max_parallel: int = typer.Option(None, "--max-parallel", "-j", metavar="N", help="At most N jobs of this batch run at once. [default: config max_parallel, else 4]"),
    level: str = typer.Option(None, "--level", "-l", metavar="LEVEL", help="Level for tasks that set none. [default: low]"),
    job_type: str = typer.Option(None, "--type", "-t", metavar="TYPE", help="Type for tasks that set none. [default: workers]"),
    model: str = typer.Option(None, "--model", "-m", metavar="MODEL", help="Model for tasks that set none. [default: codex's own]"),
    sandbox: str = typer.Option(None, "--sandbox", "-s", metavar="SANDBOX", help="Sandbox for every task. [default: workspace-write]"),
    cd: str = typer.Option(None, "--cd", "-C", metavar="DIR", help="Working directory for every task. [default: the current directory]"),
    timeout: str = typer.Option(None, "--timeout", metavar="DURATION", help="Timeout for tasks that set none: 90s, 20m, 2h (a bare number is seconds). [default: none]"),
    retries: int = typer.Option(None, "--retries", "-r", metavar="N", help="Retry transient failures up to N times. [default: 0, or retries in the config]"),
    retry_timeouts: bool = typer.Option(None, "--retry-timeouts/--no-retry-timeouts", help="Also retry timeouts. [default: no]"),
    sections: bool = typer.Option(None, "--sections/--no-sections", help="Append to the task a request for a final message in the report's sections (Task Summary, Files Modified, Changes Made, Issues Encountered, Next Steps); --no-sections sends the task alone. [default: on, or report_sections in the config]"),
    fmt: str = typer.Option(None, "--format", metavar="FORMAT", help="text, jsonl or toml. [default: from the file name]"),
    halt_on_failure: bool = typer.Option(False, "--halt-on-failure", help="Start no new job after the first failure."),
    budget_tokens: int = typer.Option(None, "--budget-tokens", metavar="N", help="Start no more of its jobs once the batch used N tokens (input + output); the rest end cancelled, listed as not started."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Queue the batch and return at once."),
    backend: str = typer.Option(None, "--backend", metavar="BACKEND", help="local or celery: where the jobs run. [default: CODEXW_BACKEND, backend, else local]"),
    broker: str = typer.Option(None, "--broker", metavar="URL", help="Broker URL for --backend celery. [default: CODEXW_BROKER_URL or broker_url]"),
    queue: str = typer.Option(None, "--queue", metavar="QUEUE", help="Celery queue. [default: CODEXW_QUEUE, queue, else codex]"),
    worktree: bool = typer.Option(None, "--worktree/--no-worktree", help="Each job in a git worktree of its own, on branch codexw/<job> (a task's own \"worktree\" wins). [default: isolation in the config, else no]"),
    include_dirty: bool = typer.Option(False, "--include-dirty", help="With --worktree: carry this tree's uncommitted changes over as each worktree's first commit."),
    notify: list[str] = typer.Option(None, "--notify", metavar="TARGET", help="Announce the batch's end (counts, failures): desktop, webhook:URL or command:/path (repeatable; replaces notify in the config)."),
    notify_each: bool = typer.Option(False, "--notify-each", help="Also announce each job's end."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (at the end, or at once with --detach)."),
) -> None:
    """Run many tasks with at most N at once; validated whole before anything is queued.

    In the foreground it shows progress; Ctrl-C or a closed terminal stops only the
    display: the jobs go on (follow them with `codexw wait --batch N`).
    """
    from codexw.services.batch import BatchRequest, submit
    from codexw.services.launch import LaunchRequest

    if fmt is not None and fmt not in ("text", "jsonl", "toml"):
        raise UsageError(f"unknown format {fmt!r}", "use text, jsonl or toml")
    if source != "-" and not Path(source).is_file():
        raise UsageError(f"batch file {source} does not exist")
    text = read_task_file(source)
    request = (
        BatchRequest(
            source=source if source != "-" else "<stdin>", text=text, fmt=fmt,
            max_parallel=max_parallel, halt_on_failure=halt_on_failure, notify_each=notify_each,
            budget_tokens=budget_tokens,
            defaults=LaunchRequest(
                task="", level=level, type=job_type, model=model, sandbox=sandbox, cwd=cd,
                timeout=timeout, retries=retries, retry_timeouts=retry_timeouts,
                report_sections=sections, backend=backend, broker_url=broker, queue=queue,
                worktree=worktree, include_dirty=include_dirty,
                notify=tuple(notify) if notify else None,
            ),
        )
    )
    with deferred_hangup() as hangup:  # a closing terminal must not cut submit in half
        submitted = submit(request)
    if hangup.received:
        raise typer.Exit(EXIT_INTERRUPTED)  # nobody is left to watch; the batch runs
    for warning in submitted.warnings:
        render.warn(warning)
    bid = submitted.batch_id
    if detach:
        if as_json:
            render.emit_json("batch", submitted.to_dict())
        else:
            render.write(
                f"batch {bid}: {render.plural(len(submitted.job_ids), 'job')} queued, at most "
                f"{submitted.max_parallel} at once\n{_follow_hint(bid)}\n"
            )
        return
    if not as_json:
        render.write(
            f"batch {bid}: {render.plural(len(submitted.job_ids), 'job')}, at most {submitted.max_parallel} at once\n"
        )
        sys.stdout.flush()
    previous = signal.signal(signal.SIGHUP, _on_hangup)
    try:
        final = _watch(bid, quiet=as_json)
    except KeyboardInterrupt:
        render.error(f"stopped watching; batch {bid} goes on. {_follow_hint(bid)}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except _HangUp:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGHUP, previous)
    if as_json:
        render.emit_json("batch", final.to_dict())
    else:
        _summary(final)
    if final.failed:
        raise typer.Exit(EXIT_JOB_FAILED)


def _follow_hint(bid: int) -> str:
    # Commands in backquotes, separated by commas: a bare '|' reads as a shell pipe.
    return (f"follow: `codexw wait --batch {bid}`, `codexw status --batch {bid}`;"
            f" stop: `codexw kill --batch {bid}`")


def _finished_line(job: Job) -> str:
    """One line, cleaned: the reason may quote codex, the task is the user's text."""
    reason = f": {job.reason}" if job.reason and job.state != JobState.SUCCEEDED else ""
    attempt = f" (attempt {job.attempt})" if job.attempt > 1 else ""
    return render.clean(
        f"job {job.id}{attempt} {job.state.value} after {format_duration(job.duration)}"
        f"{reason} — {render.task_head(job.spec.task, 60)}", oneline=True)


def _watch(bid: int, quiet: bool) -> BatchSnapshot:
    from codexw.services.batch import watch

    if quiet or not render.is_tty():
        final = _watch_plain(watch(bid), quiet)
    else:
        final = _watch_rich(watch(bid))
    assert final is not None  # watch yields the batch at least once
    return final


def _new_overlaps(snap: BatchSnapshot, seen: set[tuple[int, int, bool]]) -> list[str]:
    """A line for each pair of isolated jobs found touching the same files (once, and
    once more when their changed lines come to overlap)."""
    lines = []
    for pair in snap.overlaps:
        key = (pair.a, pair.b, bool(pair.hunks))
        if key in seen:
            continue
        seen.add(key)
        what = (f"the same lines of {', '.join(pair.hunks)}: they will conflict on merge"
                if pair.hunks else f"{', '.join(pair.files)}, different lines")
        lines.append(render.clean(f"overlap: jobs {pair.a} and {pair.b} change {what}"
                                  f" (codexw conflicts --batch {snap.batch_id})", oneline=True))
    return lines


def _watch_plain(snapshots: Iterator[BatchSnapshot], quiet: bool) -> BatchSnapshot | None:
    seen_running: set[int] = set()
    seen_final: set[int] = set()
    seen_overlaps: set[tuple[int, int, bool]] = set()
    said: set[str] = set()
    snap = None
    for snap in snapshots:
        if not quiet:
            for line in _new_overlaps(snap, seen_overlaps):
                render.write(line + "\n")
            lines = set(_account_lines(snap))
            for line in sorted(lines - said):
                render.write(line + "\n")
            said = lines
        for job in snap.jobs:
            if quiet:
                continue
            if job.state.is_active and job.id not in seen_running:
                seen_running.add(job.id)
                render.write(f"job {job.id} started — {render.task_head(job.spec.task, 60)}\n")
            if job.state.is_final and job.id not in seen_final:
                seen_final.add(job.id)
                render.write(_finished_line(job) + "\n")
        sys.stdout.flush()
    return snap


def _watch_rich(snapshots: Iterator[BatchSnapshot]) -> BatchSnapshot | None:
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    progress = Progress(
        TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(),
    )
    bar = progress.add_task("", total=None)
    seen_final: set[int] = set()
    seen_overlaps: set[tuple[int, int, bool]] = set()
    snap = None
    started = time.time()

    def running_table(snap: BatchSnapshot) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False)
        for job in snap.jobs:
            if job.state.is_active:
                table.add_row(  # Text cells: codex's last action is never markup
                    render.rich_text(f"job {job.id}", "blue"),
                    render.rich_text(format_duration(job.duration)),
                    render.rich_text(render.task_head(job.spec.task, 40)),
                    render.rich_text(job.last_action or job.state.value),
                )
        return table

    with Live(auto_refresh=True, refresh_per_second=4) as live:
        for snap in snapshots:
            for line in _new_overlaps(snap, seen_overlaps):
                live.console.print(render.rich_text(line, "yellow"), highlight=False)
            for job in snap.jobs:
                if job.state.is_final and job.id not in seen_final:
                    seen_final.add(job.id)
                    style = render.STATE_STYLE[job.state]
                    live.console.print(render.rich_text(_finished_line(job), style),
                                       highlight=False)
            done = snap.succeeded + snap.failed
            eta = ""
            if 0 < done < len(snap.jobs):
                per_job = (time.time() - started) / done
                eta = f" eta {format_duration(per_job * (len(snap.jobs) - done))}"
            progress.update(
                bar, total=len(snap.jobs), completed=done,
                description=(f"[green]{snap.succeeded} ok[/] [red]{snap.failed} failed[/]"
                             f" [blue]{snap.running} running[/] [cyan]{snap.queued} queued[/]{eta}"),
            )
            accounts = [render.rich_text(line, "yellow") for line in _account_lines(snap)]
            live.update(Group(progress, *accounts, running_table(snap)))
    return snap


def _account_lines(snap: BatchSnapshot) -> list[str]:
    """What holds the batch's starts back now, one line per account."""
    from codexw.core import limiter

    return [render.clean(f"account {a.label}: {limiter.describe(a)}", oneline=True)
            for a in snap.accounts]


def _summary(snap: BatchSnapshot) -> None:
    durations = [j.duration for j in snap.jobs if j.duration is not None]
    tokens = snap.tokens
    lines = [
        f"batch {snap.batch_id} done: {snap.succeeded} succeeded, {snap.failed} failed"
        f" of {len(snap.jobs)}; wall {format_duration(time.time() - snap.started_at)},"
        f" job time {format_duration(sum(durations))}"
        + (f" (longest {format_duration(max(durations))})" if durations else ""),
        f"tokens: in {tokens.get('input_tokens', 0)}, out {tokens.get('output_tokens', 0)},"
        f" reasoning {tokens.get('reasoning_output_tokens', 0)}",
    ]
    failed = [j for j in snap.jobs if j.state.is_final and j.state != JobState.SUCCEEDED]
    for job in failed:
        lines.append(f"  {job.state.value} job {job.id}: {render.clean(job.reason or '-', oneline=True)}"
                     f"\n    {render.clean(job.report_path or '-', oneline=True)}")
    if snap.unstarted:
        lines.append(f"token budget used: not started: jobs {', '.join(map(str, snap.unstarted))}")
    if failed:
        lines.append(f"re-run them: codexw retry --batch {snap.batch_id}")
    render.write("\n".join(lines) + "\n")


def retry(
    job_ids: list[int] = typer.Argument(None, metavar="[ID]...", help="Ended jobs to run again (each from its latest attempt).", **render.ID),
    batch: int = typer.Option(None, "--batch", "-b", metavar="ID", help="Jobs of this batch.", **render.ID),
    failed: bool = typer.Option(False, "--failed", help="Only failed, timed-out, lost or cancelled jobs (with --batch)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Re-run ended jobs as new attempts linked to the old ones (reports and logs are kept)."""
    from codexw.services.retry import retry_jobs

    if not job_ids and batch is None:
        raise UsageError("nothing to retry", "give job ids, or --failed --batch ID")
    if failed and batch is None:
        raise UsageError("--failed needs --batch ID")
    done = retry_jobs(list(job_ids or []), batch, failed_only=failed)
    if as_json:
        render.emit_json("retry", {"jobs": [d.to_dict() for d in done]})
        return
    if not done:
        render.write("nothing to retry\n")
    for d in done:
        render.write(f"job {d.old_id} → new attempt job {d.new_id}\n")
