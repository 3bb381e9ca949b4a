"""`codexw launch`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from codexw.cli import render
from codexw.cli.hangup import deferred_hangup
from codexw.core.errors import EXIT_INTERRUPTED, EXIT_JOB_FAILED, UsageError
from codexw.core.models import LEVELS, JobState

if TYPE_CHECKING:
    from codexw.services.launch import LaunchResult


# A positional word that names a level or a built-in type is taken as one, never as the
# task: `codexw launch high` is a level without a task, not a job whose task is "high".
TYPE_WORDS = ("workers", "research", "custom")


def split_positional(args: list[str]) -> tuple[str | None, str | None, str | None]:
    """Seed-compatible `[LEVEL] [TYPE] TASK` → (level, type, task); task None when the
    words are only a level and/or a type (the task may then come from stdin)."""
    if len(args) > 3:
        raise UsageError(
            f"too many arguments ({len(args)}): expected [LEVEL] [TYPE] TASK",
            "quote the task as one argument",
        )
    words = list(args)
    level = job_type = None
    if words and words[0].lower() in LEVELS:
        level = words.pop(0)
    if words and len(words) <= 2 and words[0] in TYPE_WORDS:
        job_type = words.pop(0)
    if len(words) > 1:
        if len(args) == 3 and level is None:
            raise UsageError(f"unknown level {args[0]!r}{_closest(args[0])}",
                             "use one of " + ", ".join(LEVELS))
        if level is None:
            raise UsageError(
                f"cannot tell what {args[0]!r} is: expected [LEVEL] [TYPE] TASK{_closest(args[0])}",
                "quote the task as one argument, or name a level first: " + ", ".join(LEVELS),
            )
    if len(words) == 2:  # LEVEL TYPE TASK with a type of the user's own
        job_type = words.pop(0)
    return level, job_type, words[0] if words else None


def _closest(word: str) -> str:
    """'; did you mean high?' for a misspelt level, else ''."""
    import difflib

    found = difflib.get_close_matches(word.lower(), LEVELS, n=1, cutoff=0.6)
    return f"; did you mean {found[0]}?" if found else ""


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
        help="The task, optionally preceded by a level and a type (seed-compatible form)."
             " Without TASK or -f, the task is read from stdin when it is not a terminal.",
    ),
    level: str = typer.Option(None, "--level", "-l", metavar="LEVEL", help="Reasoning effort: minimal, low, medium, high, xhigh. [default: low]"),
    job_type: str = typer.Option(None, "--type", "-t", metavar="TYPE", help="Report folder and template: workers, research, custom or any lower-case name. [default: workers]"),
    file: str = typer.Option(None, "--file", "-f", metavar="FILE", help="Read the task from FILE ('-' for stdin)."),
    model: str = typer.Option(None, "--model", "-m", metavar="MODEL", help="Model codex uses. [default: codex's own]"),
    sandbox: str = typer.Option(None, "--sandbox", "-s", metavar="SANDBOX", help="read-only, workspace-write or danger-full-access. [default: workspace-write]"),
    cd: str = typer.Option(None, "--cd", "-C", metavar="DIR", help="Working directory for codex. [default: the current directory]"),
    timeout: str = typer.Option(None, "--timeout", metavar="DURATION", help="Stop the job after this long: 90s, 20m, 2h (a bare number is seconds). [default: none]"),
    retries: int = typer.Option(None, "--retries", "-r", metavar="N", help="Retry transient failures up to N times. [default: 0, or retries in the config]"),
    retry_timeouts: bool = typer.Option(None, "--retry-timeouts/--no-retry-timeouts", help="Also retry jobs that timed out. [default: no]"),
    sections: bool = typer.Option(None, "--sections/--no-sections", help="Append to the task a request for a final message in the report's sections (Task Summary, Files Modified, Changes Made, Issues Encountered, Next Steps); --no-sections sends the task alone. [default: on, or report_sections in the config]"),
    priority: int = typer.Option(0, "--priority", "-p", metavar="N", help="Higher starts first when slots are limited."),
    after: list[int] = typer.Option(None, "--after", metavar="ID", help="Start only when job ID has succeeded (repeatable).", **render.ID),
    profile: str = typer.Option(None, "--profile", metavar="NAME", help="codex config profile ($CODEX_HOME/NAME.config.toml)."),
    add_dir: list[str] = typer.Option(None, "--add-dir", metavar="DIR", help="Another directory codex may write to (repeatable)."),
    output_schema: str = typer.Option(None, "--output-schema", metavar="FILE", help="JSON Schema file for the agent's final message."),
    skip_git_repo_check: bool = typer.Option(False, "--skip-git-repo-check", help="Let codex run outside a git repository (automatic there; noted in the report)."),
    codex_arg: list[str] = typer.Option(None, "--codex-arg", metavar="ARG", help="Extra argument passed to codex exec (repeatable)."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait for the job to end, like `codexw wait`."),
    backend: str = typer.Option(None, "--backend", metavar="BACKEND", help="local (a runner here), celery (a `codexw worker`) or app-server (experimental: a thread of one warm `codex app-server`). [default: CODEXW_BACKEND, backend, else local]"),
    broker: str = typer.Option(None, "--broker", metavar="URL", help="Broker URL for --backend celery, e.g. redis://HOST:6379/0. [default: CODEXW_BROKER_URL or broker_url]"),
    queue: str = typer.Option(None, "--queue", metavar="QUEUE", help="Celery queue. [default: CODEXW_QUEUE, queue, else codex]"),
    worktree: bool = typer.Option(None, "--worktree/--no-worktree", help="Run in a git worktree of its own, on branch codexw/<job>, from the commit HEAD points at now (docs/isolation.md). [default: isolation in the config, else no]"),
    include_dirty: bool = typer.Option(False, "--include-dirty", help="With --worktree: carry this tree's uncommitted changes over as the worktree's first commit."),
    notify: list[str] = typer.Option(None, "--notify", metavar="TARGET", help="Announce the job's end: desktop, webhook:URL or command:/path (repeatable; replaces notify in the config)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Launch a codex agent as a detached background job and return at once.

    Prints the job id, the runner PID, the report path and what to run next. The
    task is handed to codex on stdin, never on a command line or through a shell.
    Exit 1 when the job could never start (e.g. its --after dependency failed).

    codex reads the task on stdin, followed by a short request to end with a final
    message in the report's sections (see --no-sections); status and reports show the
    task alone.
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
    elif task is None and sys.stdin is not None and not sys.stdin.isatty():
        task = read_task_file("-")  # `echo TASK | codexw launch`, as `continue` does
        if not task.strip():
            task = None  # an empty pipe is no task, not an empty one
    if task is None:
        raise UsageError("no task given", "codexw launch \"TASK\", or -f FILE, or pipe it in")
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
            report_sections=sections,
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
            worktree=worktree,
            include_dirty=include_dirty,
            notify=tuple(notify) if notify else None,
        )
    )
    with deferred_hangup() as hangup:  # a closing terminal must not cut launch in half
        result = launch_job(request)
    if hangup.received:
        raise typer.Exit(EXIT_INTERRUPTED)  # nobody is left to read this; the job runs
    for warning in result.warnings:
        render.warn(warning)
    show_launched(result, as_json=as_json, wait=wait, command="launch")


def show_launched(result: LaunchResult, *, as_json: bool, wait: bool, command: str,
                  extra: str = "", extra_json: dict[str, object] | None = None) -> None:
    """What launch and continue print: the job, why it has not started if it has not,
    what to run next; then wait if asked. Exit 1 when the job ended before it began."""
    job = result.job
    if as_json and not wait:
        render.emit_json(command, {**result.to_dict(), **(extra_json or {})})
    elif not as_json:
        pid = job.runner_pid if job.runner_pid else "-"
        state = "" if job.runner_pid else f" ({job.state.value}: {result.waiting_for})"
        lines = [f"job {job.id}  pid {pid}{state}{extra}",
                 f"report {render.clean(job.report_path, oneline=True)}"]
        if job.spec.branch:
            lines.append(f"branch {render.clean(job.spec.branch, oneline=True)}  worktree"
                         f" {render.clean(job.spec.worktree, oneline=True)}")
        if not wait and not job.state.is_final:
            lines.append(f"next: `codexw wait {job.id}` (returns when it ends),"
                         f" `codexw status {job.id}`, `codexw logs {job.id} -f`")
        render.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    if wait:
        from codexw.cli.waiting import wait_and_show

        wait_and_show([job.id], as_json=as_json)
    elif job.state.is_final and job.state != JobState.SUCCEEDED:
        raise typer.Exit(EXIT_JOB_FAILED)
