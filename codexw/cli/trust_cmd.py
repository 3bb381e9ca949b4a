"""`codexw trust` and `codexw untrust`."""

from __future__ import annotations

import time

import typer

from codexw.cli import render
from codexw.core.errors import UsageError


def trust(
    path: str = typer.Argument(None, metavar="[PATH]",
                               help="The project (any directory in it). [default: here]"),
    list_: bool = typer.Option(False, "--list", help="List the trusted project configs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Let this project's .codexw/config.toml set the keys that need trust.

    A project config comes with the repository, so the keys in it that run a program,
    choose its arguments, weaken the sandbox, name a path outside the project or send data
    away (codex_bin, codex_args, a weaker sandbox, templates_dir, broker_url, a backend
    other than local) are ignored until you trust it. Review the file first: trust holds for its exact content, and an
    edited config is ignored again until you trust it again.
    """
    from codexw.services import trust as service

    if list_:
        if path is not None:
            raise UsageError("--list takes no PATH")
        entries = service.list_trusted()
        if as_json:
            render.emit_json("trust", {"trusted": [e.to_dict() for e in entries]})
            return
        if not entries:
            render.write("no project config is trusted\n")
        for e in entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.trusted_at)) if e.trusted_at else "?"
            note = {"trusted": "", "changed": "  (edited since: ignored)",
                    "missing": "  (file gone)"}.get(e.state, "")
            render.write(f"{e.config}  {when}  {', '.join(e.keys) or '-'}{note}\n")
        return
    result = service.trust_project(path)
    if as_json:
        render.emit_json("trust", result.to_dict())
        return
    again = " again" if result.was == "changed" else ""
    render.write(f"trusted{again} {result.config}\n")
    if not result.active:
        render.write("it sets no key that needs trust\n")
    for key, value in result.active.items():
        # repr(): a value from a repository is shown escaped, never sent raw to the terminal
        render.write(f"  active: {key} = {value!r}\n")


def untrust(
    path: str = typer.Argument(None, metavar="[PATH]",
                               help="The project (any directory in it). [default: here]"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Stop trusting this project's .codexw/config.toml: its keys that need trust are
    ignored again."""
    from codexw.services.trust import untrust_project

    result = untrust_project(path)
    if as_json:
        render.emit_json("untrust", result.to_dict())
        return
    if not result.removed:
        render.write(f"{result.config} was not trusted\n")
        return
    render.write(f"untrusted {result.config}\n")
    if result.ignored:
        render.write(f"  ignored from now on: {', '.join(result.ignored)}\n")
