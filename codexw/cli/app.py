"""The Typer app: commands are registered here; each lives in its own module."""

from __future__ import annotations

import sys

import typer

from codexw import __version__
from codexw.cli import (
    batch_cmd,
    cleanup_cmd,
    continue_cmd,
    doctor_cmd,
    jobs_cmd,
    launch_cmd,
    worker_cmd,
)
from codexw.cli.render import error
from codexw.core.errors import EXIT_INTERRUPTED, CodexwError

HELP = """Run Codex agents as detached background jobs.

Every job is recorded in a registry and gets a Markdown report
(<project>/.codexw/<type>/…_TEMP_… while it runs, …_<PID>_… when it ends).

Exit codes: 0 success, 1 a job failed, 2 usage or config error,
124 wait timed out, 130 interrupted.
"""

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: '[default: low]' must not be read as markup
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"codexw {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", "-V", help="Print the version and exit.", callback=_version,
        is_eager=True,
    ),
) -> None:
    """Run Codex agents as detached background jobs."""


app.command("launch")(launch_cmd.launch)
app.command("status")(jobs_cmd.status)
app.command("wait")(jobs_cmd.wait)
app.command("logs")(jobs_cmd.logs)
app.command("kill")(jobs_cmd.kill)
app.command("batch")(batch_cmd.batch)
app.command("retry")(batch_cmd.retry)
app.command("continue")(continue_cmd.continue_)
app.command("doctor")(doctor_cmd.doctor)
app.command("cleanup")(cleanup_cmd.cleanup)
app.command("worker")(worker_cmd.worker)


def main() -> None:
    # typer >= 0.26 vendors click; we handle its errors to keep them to one line.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    try:
        code = app(standalone_mode=False)
    except CodexwError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:
        exc.show()  # `codexw` alone: the help
        sys.exit(exc.exit_code)
    except ClickException as exc:
        error(_usage_line(exc))
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_line(exc: Exception) -> str:
    """A parser error as one line with where to look."""
    message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    hint = f"see `{ctx.command_path} -h`" if ctx is not None else "see `codexw -h`"
    option = getattr(exc, "option_name", None)
    if option and option.startswith("-") and "No such option" in message:
        hint += "; a task that starts with '-' goes after `--`"
    return f"{message[:1].lower()}{message[1:]} ({hint})"
