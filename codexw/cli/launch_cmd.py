"""`codexw launch`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from codexw.cli import render
from codexw.cli.hangup import deferred_hangup
from codexw.core.errors import EXIT_INTERRUPTED, UsageError
from codexw.core.models import LEVELS


def split_positional(args: list[str]) -> tuple[str | None, str | None, str | None]:
    """Seed-compatible `[LEVEL] [TYPE] TASK` → (level, type, task)."""
    if len(args) == 0:
        return None, None, None
    if len(args) == 1:
        return None, None, args[0]
    if len(args) == 2:
        if args[0].lower() in LEVELS:
            return args[0], None, args[1]
        raise UsageError(
            f"cannot tell what {args[0]!r} is: expected [LEVEL] [TYPE] TASK",
            "quote the task as one argument, or name a level first",
        )
    if len(args) == 3:
        return args[0], args[1], args[2]
    raise UsageError(
        f"too many arguments ({len(args)}): expected [LEVEL] [TYPE] TASK",
        "quote the task as one argument",
    )


def read_task_file(source: str) -> str:
    """A task from a file, or from stdin with `-`; must be UTF-8."""
    if source == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("-f - reads the task from stdin, but stdin is a terminal")
        data = sys.stdin.buffer.read()
        where = "stdin"
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read task file {source}: {exc.strerror}") from None
        where = source
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{where} is not valid UTF-8 (byte {exc.start})", "save the task as UTF-8"
        ) from None


def launch(
    args: list[str] = typer.Argument(
        None, metavar="[LEVEL] [TYPE] TASK",
        help="The task, optionally preceded by a level and a type (seed-compatible form).",
    ),
    level: str = typer.Option(None, "--level", "-l", help="Reasoning effort: minimal, low, medium, high, xhigh. [default: low]"),
    job_type: str = typer.Option(None, "--type", "-t", help="Report folder and template: workers, research, custom or any lower-case name. [default: workers]"),
    file: str = typer.Option(None, "--file", "-f", help="Read the task from FILE ('-' for stdin)."),
    model: str = typer.Option(None, "--model", "-m", help="Model codex uses (codex's default if unset)."),
    sandbox: str = typer.Option(None, "--sandbox", "-s", help="read-only, workspace-write or danger-full-access. [default: workspace-write]"),
    cd: str = typer.Option(None, "--cd", "-C", help="Working directory for codex. [default: current directory]"),
    timeout: str = typer.Option(None, "--timeout", help="Stop the job after this long: 90s, 20m, 2h."),
    retries: int = typer.Option(None, "--retries", "-r", help="Retry transient failures up to N times."),
    retry_timeouts: bool = typer.Option(None, "--retry-timeouts/--no-retry-timeouts", help="Also retry jobs that timed out."),
    priority: int = typer.Option(0, "--priority", "-p", help="Higher starts first when slots are limited."),
    after: list[int] = typer.Option(None, "--after", help="Start only when job ID has succeeded (repeatable)."),
    profile: str = typer.Option(None, "--profile", help="codex config profile ($CODEX_HOME/NAME.config.toml)."),
    add_dir: list[str] = typer.Option(None, "--add-dir", help="Another directory codex may write to (repeatable)."),
    output_schema: str = typer.Option(None, "--output-schema", help="JSON Schema file for the agent's final message."),
    skip_git_repo_check: bool = typer.Option(False, "--skip-git-repo-check", help="Let codex run outside a git repository (automatic there; noted in the report)."),
    codex_arg: list[str] = typer.Option(None, "--codex-arg", help="Extra argument passed to codex exec (repeatable)."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait for the job to end, like `codexw wait`."),
    backend: str = typer.Option(None, "--backend", help="local (a runner here) or celery (a `codexw worker`). (default: CODEXW_BACKEND, backend, else local)"),
    broker: str = typer.Option(None, "--broker", help="Broker URL for --backend celery, e.g. redis://HOST:6379/0. (default: CODEXW_BROKER_URL or broker_url)"),
    queue: str = typer.Option(None, "--queue", help="Celery queue. (default: CODEXW_QUEUE, queue, else codex)"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Launch a codex agent as a detached background job and return at once.

    Prints the job id, the runner PID and the report path. The task is handed to
    codex on stdin, never on a command line or through a shell.
    """
    from codexw.services.launch import LaunchRequest
    from codexw.services.launch import launch as launch_job

    pos_level, pos_type, task = split_positional(list(args or []))
    if pos_level and level:
        raise UsageError("the level is given twice (positional and --level)")
    if pos_type and job_type:
        raise UsageError("the type is given twice (positional and --type)")
    if file is not None:
        if task is not None:
            raise UsageError("give the task either as an argument or with -f, not both")
        task = read_task_file(file)
    if task is None:
        raise UsageError("no task given", "codexw launch \"TASK\", or -f FILE, or -f - for stdin")
    request = (
        LaunchRequest(
            task=task,
            level=pos_level if pos_level is not None else level,  # "" is refused, not ignored
            type=pos_type if pos_type is not None else job_type,
            model=model,
            sandbox=sandbox,
            cwd=cd,
            timeout=timeout,
            retries=retries,
            retry_timeouts=retry_timeouts,
            priority=priority,
            after=tuple(after or ()),
            codex_args=tuple(codex_arg or ()),
            profile=profile,
            add_dirs=tuple(add_dir or ()),
            output_schema=output_schema,
            skip_git_repo_check=skip_git_repo_check,
            backend=backend,
            broker_url=broker,
            queue=queue,
        )
    )
    with deferred_hangup() as hangup:  # a closing terminal must not cut launch in half
        result = launch_job(request)
    if hangup.received:
        raise typer.Exit(EXIT_INTERRUPTED)  # nobody is left to read this; the job runs
    for warning in result.warnings:
        render.warn(warning)
    job = result.job
    if as_json and not wait:
        render.emit_json("launch", result.to_dict())
        return
    if not as_json:
        pid = job.runner_pid if job.runner_pid else "-"
        state = "" if job.runner_pid else f" ({job.state.value}: waiting for a free slot)"
        render.write(f"job {job.id}  pid {pid}{state}\n"
                     f"report {render.clean(job.report_path, oneline=True)}\n")
        sys.stdout.flush()
    if wait:
        from codexw.cli.jobs_cmd import wait as wait_cmd

        wait_cmd(job_ids=[job.id], batch=None, timeout=None, as_json=as_json, quiet=False)
