"""The Typer app: commands are registered here; each lives in its own module."""

from __future__ import annotations

import sys
from importlib import import_module

import typer

from codexw import __version__
from codexw.cli.render import error, warn
from codexw.core.errors import EXIT_INTERRUPTED, CodexwError
from codexw.core.notices import set_sink

HELP = """Run Codex agents as detached background jobs.

Every job is recorded in a registry and gets a Markdown report
(<project>/.codexw/<type>/…_TEMP_… while it runs, …_<PID>_… when it ends).

Exit codes: 0 success, 1 a job failed or the command could not do its
work (registry or disk), 2 usage or config error, 124 wait timed out,
130 interrupted.
"""

# name: (module in codexw.cli, function). The order is the order of `codexw --help`.
COMMANDS = {
    "launch": ("launch_cmd", "launch"),
    "status": ("jobs_cmd", "status"),
    "wait": ("jobs_cmd", "wait"),
    "logs": ("jobs_cmd", "logs"),
    "kill": ("jobs_cmd", "kill"),
    "batch": ("batch_cmd", "batch"),
    "retry": ("batch_cmd", "retry"),
    "continue": ("continue_cmd", "continue_"),
    "doctor": ("doctor_cmd", "doctor"),
    "trust": ("trust_cmd", "trust"),
    "untrust": ("trust_cmd", "untrust"),
    "cleanup": ("cleanup_cmd", "cleanup"),
    "worker": ("worker_cmd", "worker"),
}


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"codexw {__version__}\n")
        raise typer.Exit()


def root(
    version: bool = typer.Option(
        False, "--version", "-V", help="Print the version and exit.", callback=_version,
        is_eager=True,
    ),
) -> None:
    """Run Codex agents as detached background jobs."""


def build_app(only: str | None = None) -> typer.Typer:
    """The app with every command, or with just `only` (the one being run: building
    and importing the other ten costs a launch about 15 ms)."""
    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # help text is plain: '[default: low]' must not be read as markup
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)
    for name, (module, function) in COMMANDS.items():
        if only is None or name == only:
            app.command(name)(getattr(import_module(f"codexw.cli.{module}"), function))
    return app


def main() -> None:
    # typer >= 0.26 vendors click; we handle its errors to keep them to one line.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    wanted = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else None
    set_sink(warn)  # e.g. keys of an untrusted project config being ignored, on stderr
    try:
        code = build_app(wanted)(prog_name="codexw", standalone_mode=False)
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
