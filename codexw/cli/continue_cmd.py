"""`codexw continue`."""

from __future__ import annotations

import sys

import typer

from codexw.cli import render
from codexw.cli.launch_cmd import read_task_file
from codexw.core.errors import UsageError


def continue_(
    job_id: int = typer.Argument(..., metavar="ID", help="The job whose conversation goes on.", **render.ID),
    task: str = typer.Argument(None, metavar="[FOLLOW-UP]", help="What to tell the agent next."),
    file: str = typer.Option(None, "--file", "-f", help="Read the follow-up from FILE ('-' for stdin)."),
    level: str = typer.Option(None, "--level", "-l", help="Reasoning effort. [default: the job's]"),
    model: str = typer.Option(None, "--model", "-m", help="Model. [default: the job's]"),
    timeout: str = typer.Option(None, "--timeout", help="Stop the follow-up after this long."),
    retries: int = typer.Option(None, "--retries", "-r", help="Retry transient failures up to N times."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait for the follow-up to end."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Run a follow-up in job ID's codex conversation, as a new background job.

    The new job resumes the same codex thread (`codex exec resume`), in the same
    directory, gets its own report, and is linked to job ID: `codexw status NEW`
    shows the conversation as a chain. The follow-up comes from the argument,
    from -f FILE, or from stdin when neither is given and stdin is not a terminal.
    """
    from codexw.services.launch import ContinueRequest, continue_job

    if file is not None:
        if task is not None:
            raise UsageError("give the follow-up either as an argument or with -f, not both")
        task = read_task_file(file)
    elif task is None and sys.stdin is not None and not sys.stdin.isatty():
        task = read_task_file("-")
    if task is None or not task.strip():
        raise UsageError(
            "no follow-up given", f"codexw continue {job_id} \"TEXT\", or -f FILE, or pipe it in"
        )
    result = continue_job(
        ContinueRequest(job_id=job_id, task=task, level=level, model=model, timeout=timeout,
                        retries=retries)
    )
    for warning in result.warnings:
        render.warn(warning)
    job = result.job
    if as_json and not wait:
        render.emit_json("continue", {**result.to_dict(), "resume_of": job.spec.resume_of,
                                      "thread_id": job.spec.resume_thread})
        return
    if not as_json:
        pid = job.runner_pid if job.runner_pid else "-"
        state = "" if job.runner_pid else f" ({job.state.value}: waiting for a free slot)"
        render.write(  # the thread id came from codex
            f"job {job.id}  pid {pid}{state}  continues job {job.spec.resume_of}"
            f" (thread {render.clean(job.spec.resume_thread, oneline=True)})\n"
            f"report {render.clean(job.report_path, oneline=True)}\n"
        )
        sys.stdout.flush()
    if wait:
        from codexw.cli.jobs_cmd import wait as wait_cmd

        wait_cmd(job_ids=[job.id], batch=None, timeout=None, as_json=as_json, quiet=False)
