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

# name: (module in codexw.cli, function, one-line summary for `codexw -h`). The order is
# the order of `codexw --help`. The summary is given, not cut from the docstring: click
# cuts at 45 characters, mid-sentence.
COMMANDS = {
    "launch": ("launch_cmd", "launch", "Start a codex agent as a background job."),
    "status": ("jobs_cmd", "status", "List jobs, or show one in detail."),
    "wait": ("follow_cmd", "wait", "Block until jobs end; exit 0 if all succeeded."),
    "logs": ("follow_cmd", "logs", "Show what a job's agent did (-f to follow)."),
    "kill": ("follow_cmd", "kill", "Stop jobs and their whole process tree."),
    "batch": ("batch_cmd", "batch", "Run many tasks, at most N at once."),
    "retry": ("batch_cmd", "retry", "Re-run ended jobs as new attempts."),
    "continue": ("continue_cmd", "continue_", "Follow up in a job's codex conversation."),
    "doctor": ("doctor_cmd", "doctor", "Check that jobs can run here."),
    "trust": ("trust_cmd", "trust", "Let this project's config set trusted keys."),
    "untrust": ("trust_cmd", "untrust", "Stop trusting this project's config."),
    "diff": ("isolation_cmd", "diff", "Show an isolated job's change (--worktree)."),
    "merge": ("isolation_cmd", "merge", "Merge isolated jobs' branches into this branch."),
    "conflicts": ("isolation_cmd", "conflicts", "Which isolated jobs touched the same lines."),
    "cleanup": ("cleanup_cmd", "cleanup", "Archive old reports, compress logs (cron-safe)."),
    "worker": ("worker_cmd", "worker", "Run Celery jobs from a queue (codexw[celery])."),
    "mcp": ("mcp_cmd", "mcp", "Serve codexw's tools to agents over MCP (codexw[mcp])."),
    "board": ("board_cmd", "board", "Serve a live board of jobs in the browser."),
}

# Shown at the end of each command's help. "\b" keeps click from rewrapping the lines.
EXAMPLES = {
    "launch": """codexw launch "fix the flaky test in tests/test_io.py"
codexw launch high research "survey retry libraries for asyncio"
codexw launch --sandbox read-only -f task.md --timeout 30m
echo "summarise README.md" | codexw launch --wait""",
    "status": """codexw status                 # the latest 10 jobs of this project
codexw status 42              # job 42 in detail
codexw status --all --state failed
codexw status --all-projects --latest 20
codexw status --stats""",
    "wait": """codexw wait                   # every open job of this project
codexw wait 42 43 --timeout 30m
codexw wait --batch 7 --quiet && echo all succeeded""",
    "logs": """codexw logs 42
codexw logs 42 -f             # follow until the job (and its retries) end
codexw logs 42 --raw | jq .   # codex's own JSON events""",
    "kill": """codexw kill 42 43
codexw kill --batch 7""",
    "batch": """codexw batch tasks.txt --max-parallel 4 --level high
codexw batch tasks.jsonl -j 2 --retries 2 --detach
cat tasks.txt | codexw batch - -j 3""",
    "retry": """codexw retry 42
codexw retry --failed --batch 7""",
    "continue": """codexw continue 42 "now add tests"
codexw continue 42 -f follow-up.md --wait""",
    "doctor": """codexw doctor
codexw doctor --json | jq '.checks[] | select(.status != "ok")'""",
    "trust": """codexw trust                  # after reviewing .codexw/config.toml
codexw trust --list""",
    "untrust": """codexw untrust
codexw untrust ~/src/other-project""",
    "diff": """codexw diff 12
codexw diff 12 --stat""",
    "merge": """codexw merge 12
codexw merge 12 --squash
codexw merge --batch 7        # its succeeded jobs, one by one; stops at a conflict""",
    "conflicts": """codexw conflicts
codexw conflicts --batch 7 --json""",
    "cleanup": """codexw cleanup --dry-run      # what would happen (default age: 7 days)
codexw cleanup --age 14d --keep 50
17 3 * * *  codexw cleanup --all-projects --age 14 --quiet   # crontab""",
    "worker": """codexw worker --broker redis://HOST:6379/0 --concurrency 2
codexw worker --broker redis://HOST:6379/0 --workspace /srv/checkout""",
    "mcp": """codexw mcp                    # stdio: an MCP client starts it
claude mcp add codexw -- codexw mcp
codexw mcp --http 8765        # streamable HTTP on 127.0.0.1, bearer token""",
    "board": """codexw board                  # prints http://127.0.0.1:PORT/?token=…
codexw board --open --all-projects --port 8765""",
}


def _epilog(name: str) -> str:
    lines = "\n".join(f"  {line}" for line in EXAMPLES[name].splitlines())
    return f"\b\nExamples:\n{lines}\n"


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
        # --install-completion / --show-completion (bash, zsh, fish): the shell asks with
        # no command in argv, so main() builds the whole app for it.
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # help text is plain: '[default: low]' must not be read as markup
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)
    for name, (module, function, summary) in COMMANDS.items():
        if only is None or name == only:
            app.command(name, short_help=summary, epilog=_epilog(name))(
                getattr(import_module(f"codexw.cli.{module}"), function)
            )
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


# Commands where free text is an argument: only there can an unknown option be a task.
TAKES_TEXT = {"launch", "continue"}


def _usage_line(exc: Exception) -> str:
    """A parser error as one line with where to look."""
    message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    hint = f"see `{ctx.command_path} -h`" if ctx is not None else "see `codexw -h`"
    option = getattr(exc, "option_name", None)
    command = ctx.info_name if ctx is not None else None
    if option and option.startswith("-") and "No such option" in message:
        import difflib

        # click's own "(Possible options: …)" would nest brackets; name the closest one.
        message = f"no such option: {option}"
        close = difflib.get_close_matches(option, getattr(exc, "possibilities", None) or [], n=1)
        if close:
            message += f"; did you mean {close[0]}?"
        if command in TAKES_TEXT:
            hint += "; a task that starts with '-' goes after `--`"
    return f"{message[:1].lower()}{message[1:]} ({hint})"
