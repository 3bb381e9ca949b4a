"""`codexw continue`."""

from __future__ import annotations

import sys

import typer

from codexw.cli import render
from codexw.cli.launch_cmd import read_task_file, show_launched
from codexw.core.errors import UsageError


def continue_(
    job_id: int = typer.Argument(..., metavar="ID", help="The job whose conversation goes on.", **render.ID),
    task: str = typer.Argument(None, metavar="[FOLLOW-UP]", help="What to tell the agent next."
                               " Without it or -f, read from stdin when it is not a terminal."),
    file: str = typer.Option(None, "--file", "-f", metavar="FILE", help="Read the follow-up from FILE ('-' for stdin)."),
    level: str = typer.Option(None, "--level", "-l", metavar="LEVEL", help="Reasoning effort. [default: the job's]"),
    model: str = typer.Option(None, "--model", "-m", metavar="MODEL", help="Model. [default: the job's]"),
    timeout: str = typer.Option(None, "--timeout", metavar="DURATION", help="Stop the follow-up after this long. [default: the job's]"),
    retries: int = typer.Option(None, "--retries", "-r", metavar="N", help="Retry transient failures up to N times. [default: the job's]"),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait for the follow-up to end."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Run a follow-up in job ID's codex conversation, as a new background job.

    The new job resumes the same codex thread (`codex exec resume`), in the same
    directory, gets its own report, and is linked to job ID: `codexw status NEW`
    shows the conversation as a chain. The follow-up comes from the argument,
    from -f FILE, or from stdin when neither is given and stdin is not a terminal.
    """
    from codexw.services.followup import ContinueRequest, continue_job

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
    show_launched(  # the thread id came from codex
        result, as_json=as_json, wait=wait, command="continue",
        extra=f"  continues job {job.spec.resume_of}"
              f" (thread {render.clean(job.spec.resume_thread, oneline=True)})",
        extra_json={"resume_of": job.spec.resume_of, "thread_id": job.spec.resume_thread},
    )
