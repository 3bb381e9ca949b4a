"""`codexw wait`, `logs` and `kill`: follow jobs to their end, read them, stop them."""

from __future__ import annotations

import sys

import typer

from codexw.cli import render
from codexw.core.durations import parse_duration
from codexw.core.errors import EXIT_INTERRUPTED, UsageError

# -- wait ---------------------------------------------------------------------------------


def wait(
    job_ids: list[int] = typer.Argument(None, metavar="[ID]...", help="Jobs to wait for (each with its retries). [default: every open job of this project]", **render.ID),
    batch: int = typer.Option(None, "--batch", "-b", metavar="ID", help="Wait for every job of this batch.", **render.ID),
    timeout: str = typer.Option(None, "--timeout", metavar="DURATION", help="Give up after this long (exit 124): 90s, 20m. [default: none]"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing; use the exit status."),
) -> None:
    """Block until jobs end (following their retries); exit 0 only if all succeeded.

    With no ID and no --batch, waits for every job of this project that has not
    ended, like the shell's `wait` (exit 0 at once when there is none). Wakes the
    moment a job ends: no polling loop.
    """
    from codexw.cli.waiting import wait_and_show
    from codexw.services.wait import open_jobs

    seconds = parse_duration(timeout, what="timeout") if timeout else None
    ids = list(job_ids or [])
    if not ids and batch is None:
        ids = open_jobs()
        if not ids:
            if as_json:
                render.emit_json("wait", {"timed_out": False, "all_succeeded": True, "jobs": []})
            elif not quiet:
                render.write("no open jobs in this project: nothing to wait for\n")
            return
        if not quiet and not as_json:
            shown = ", ".join(map(str, ids[:20])) + (", …" if len(ids) > 20 else "")
            render.write(f"waiting for {render.plural(len(ids), 'open job')} of this project:"
                         f" {shown}\n")
            sys.stdout.flush()
    wait_and_show(ids, batch=batch, timeout=seconds, as_json=as_json, quiet=quiet)


# -- logs ---------------------------------------------------------------------------------

ICON = {
    "message": "💬", "command": "$", "command_start": "…", "file": "✎", "error": "✖",
    "warning": "!", "usage": "Σ", "info": "·", "reasoning": "~", "raw": "",
}


def logs(
    job_id: int = typer.Argument(..., metavar="ID", help="The job whose log to show.", **render.ID),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
    raw: bool = typer.Option(False, "--raw", help="Print codex's JSONL events as they are."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per entry (JSON lines)."),
) -> None:
    """Show what a job's agent did: messages, commands and exit codes, errors.

    Exit 1 when the job has no log (it never ran: cancelled in the queue).
    """
    import json

    from codexw.services.logs import read_log

    _job, entries = read_log(job_id, raw=raw, follow=follow)
    tty = render.is_tty() and not raw and not as_json
    con = render.console() if tty else None
    try:
        for entry in entries:
            if as_json:
                sys.stdout.write(json.dumps({"version": render.JSON_VERSION, **entry.to_dict()}) + "\n")
            elif raw:  # byte for byte, as codex wrote it (it may not even be UTF-8)
                sys.stdout.flush()
                sys.stdout.buffer.write(entry.data if entry.data is not None
                                        else entry.text.encode("utf-8", "surrogateescape"))
                sys.stdout.buffer.write(b"\n")
            else:
                text = entry.text
                if entry.kind == "command":
                    text = f"{text}  → exit {entry.exit_code}"
                # Messages keep their lines; every control character is made visible.
                line = render.clean(f"{ICON.get(entry.kind, '')} {text}".strip())
                if con is not None:
                    style = {"error": "red", "warning": "yellow", "command": "cyan",
                             "message": "bold", "usage": "dim", "info": "dim"}.get(entry.kind, "")
                    con.print(render.rich_text(line, style, oneline=False))
                else:
                    sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        raise typer.Exit(0) from None


# -- kill ---------------------------------------------------------------------------------


def kill(
    job_ids: list[int] = typer.Argument(None, metavar="[ID]...", help="Jobs to stop (each with its queued or running retry).", **render.ID),
    batch: int = typer.Option(None, "--batch", "-b", metavar="ID", help="Every job of this batch.", **render.ID),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Stop jobs: the whole process tree of a running job, or cancel a queued one."""
    from codexw.services.kill import kill_jobs

    if not job_ids and batch is None:
        raise UsageError("nothing to kill", "give job ids or --batch ID")
    results = kill_jobs(list(job_ids or []), batch)
    if as_json:
        render.emit_json("kill", {"jobs": [r.to_dict() for r in results]})
        return
    for r in results:
        note = render.clean(r.note, oneline=True)
        if r.before == r.after:  # nothing changed: "killed → killed" read as an action
            render.write(f"job {r.job_id}: already ended ({r.after}), nothing to stop\n")
        else:
            render.write(f"job {r.job_id}: {r.before} → {r.after} ({note})\n")
