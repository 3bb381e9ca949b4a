"""`codexw doctor`."""

from __future__ import annotations

import sys

import typer

from codexw.cli import render
from codexw.core.errors import EXIT_JOB_FAILED

MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Check that jobs can run here; exit 1 when something is broken.

    Checks the config (and whether the project config is trusted: which of its keys are
    ignored until `codexw trust`), codex (found, version), its login, CODEX_HOME (writable), the
    registry, the report templates and the platform features codexw uses. One line per check (ok, warn or fail) with a hint; exit 1 when any check fails.
    """
    from codexw.services.doctor import run_doctor

    report = run_doctor()
    if as_json:
        render.emit_json("doctor", report.to_dict())
    else:
        width = max(len(c.name) for c in report.checks)
        con = render.console() if render.is_tty() else None
        for check in report.checks:
            line = f"{MARK[check.status]}  {check.name.ljust(width)}  {check.detail}"
            if check.hint and check.status != "ok":
                line += f"  → {check.hint}"
            if con is not None:  # what doctor quotes (codex's output, paths) is shown safely
                con.print(render.rich_text(line, STYLE[check.status], oneline=False))
            else:
                render.write(line + "\n")
        counts = report.to_dict()["counts"]
        sys.stdout.write(
            f"{counts['ok']} ok, {render.plural(counts['warn'], 'warning')},"  # type: ignore[index]
            f" {counts['fail']} failed\n"  # type: ignore[index]
        )
    if not report.ok:
        raise typer.Exit(EXIT_JOB_FAILED)
