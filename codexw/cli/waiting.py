"""Waiting for jobs and showing each as it ends: `wait`, and `launch`/`continue --wait`.

A helper, not a command: commands never call each other."""

from __future__ import annotations

import sys

import typer

from codexw.cli import render
from codexw.core.durations import format_duration
from codexw.core.errors import EXIT_INTERRUPTED, EXIT_JOB_FAILED, EXIT_WAIT_TIMEOUT
from codexw.core.models import Job, JobState


def ended_line(asked: int, job: Job) -> str:
    """'job 4 failed after 3s: reason' and the report on the next line."""
    via = f" (attempt {job.attempt}, job {job.id})" if job.id != asked else ""
    reason = f": {render.clean(job.reason, oneline=True)}" if (
        job.reason and job.state != JobState.SUCCEEDED) else ""
    # A job that never ran has no duration: "cancelled after -" read as a typo.
    took = (f" after {format_duration(job.duration)}" if job.duration is not None
            else " before it started")
    return (f"job {asked}{via} {job.state.value}{took}{reason}\n"
            f"  report {render.clean(job.report_path or '-', oneline=True)}\n")


def wait_and_show(
    job_ids: list[int], *, batch: int | None = None, timeout: float | None = None,
    as_json: bool = False, quiet: bool = False,
) -> None:
    """Wait (service), print each ending, exit 0 all succeeded / 1 / 124 / 130."""
    from codexw.services.wait import wait_for

    def on_end(asked: int, job: Job) -> None:
        if not (quiet or as_json):
            render.write(ended_line(asked, job))
            sys.stdout.flush()

    try:
        result = wait_for(job_ids, timeout=timeout, on_end=on_end, poll_batch=batch)
    except KeyboardInterrupt:
        render.error("interrupted; the jobs go on (see `codexw status`)")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        render.emit_json("wait", result.to_dict())
    if result.timed_out:
        if not quiet and not as_json:
            pending = [str(a) for a, j in result.jobs.items() if not j.state.is_final]
            render.error(f"timed out; still running: {', '.join(pending)}")
        raise typer.Exit(EXIT_WAIT_TIMEOUT)
    if not result.all_succeeded:
        raise typer.Exit(EXIT_JOB_FAILED)
