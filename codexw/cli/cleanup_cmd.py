"""`codexw cleanup`: archive old reports, compress logs, delete old archives (cron-safe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from codexw.cli import render
from codexw.core.durations import parse_duration
from codexw.core.errors import EXIT_JOB_FAILED

if TYPE_CHECKING:
    from codexw.services.cleanup import CleanupResult

VERB = {"archive": "archive", "compress": "compress", "delete": "delete", "repair": "finish",
        "prune": "prune"}


def cleanup(
    age: str = typer.Option(
        None, "--age", metavar="AGE",
        help="Only jobs that ended longer ago than this: 36h, 7d, or a number of days."
             " [default: 7, or none with --keep]",
    ),
    keep: int = typer.Option(
        None, "--keep", metavar="N", help="Keep the newest N reports of each type; archive the rest.",
    ),
    job_type: str = typer.Option(None, "--type", "-t", metavar="TYPE", help="Only reports and logs of this type."),
    compress_only: bool = typer.Option(
        False, "--compress-only", help="gzip old reports and logs where they are; move nothing.",
    ),
    delete_archives_older: str = typer.Option(
        None, "--delete-archives-older", metavar="AGE",
        help="Delete archived reports and compressed logs older than this: 36h, 180d, or days.",
    ),
    all_projects: bool = typer.Option(
        False, "--all-projects", help="Every project the registry knows (for cron)."
    ),
    root: str = typer.Option(None, "--root", metavar="PATH", help="This one project."),
    prune_missing: bool = typer.Option(
        False, "--prune-missing",
        help="Forget finished jobs (and their logs) of project directories that are gone.",
    ),
    # No -n: across commands -n is --latest (status).
    prune_branches: bool = typer.Option(False, "--prune-branches", help="Also delete the branches (and uncommitted work) of isolated jobs that were never merged."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would happen; change nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing unless something went wrong."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    lock_wait: str = typer.Option(
        "10m", "--lock-wait", metavar="DURATION", show_default=False,
        help="How long to wait for a cleanup that is already running (then exit 1). [default: 10m]",
    ),
) -> None:
    """Archive finished reports, compress their logs, delete old archives.

    Safe to run from cron: files of queued and running jobs are never touched, a
    second cleanup waits for the first, and an interrupted run is finished by the
    next. Exit 0 when all went well, 1 when something could not be done, 2 on bad
    usage.
    """
    from codexw.services.cleanup import CleanupRequest
    from codexw.services.cleanup import cleanup as run

    wait = 0.0 if lock_wait.strip() in ("0", "0s") else parse_duration(lock_wait, what="lock wait")
    result = run(
        CleanupRequest(
            age=age, keep=keep, job_type=job_type, compress_only=compress_only,
            delete_archives_older=delete_archives_older, all_projects=all_projects, root=root,
            prune_missing=prune_missing, dry_run=dry_run, lock_wait=wait,
            prune_branches=prune_branches,
        )
    )
    if as_json:
        render.emit_json("cleanup", result.to_dict())
    elif quiet:
        for problem in result.errors:
            render.error(problem)
    else:
        _print(result)
    if not result.ok:
        raise typer.Exit(EXIT_JOB_FAILED)


def _print(result: CleanupResult) -> None:
    out = []
    would = "would " if result.dry_run else ""
    if result.dry_run:
        for a in result.actions:
            target = f" → {a.dest}" if a.dest else ""
            note = f" ({a.note})" if a.note else ""
            out.append(f"{would}{VERB.get(a.kind, a.kind)} {a.what} {a.path}{target}{note}")
    for s in result.skipped:
        out.append(f"left alone: {s.path}: {s.reason}")
    for project in result.missing_projects:
        hint = "" if result.pruned_jobs else " (forget its jobs with --prune-missing)"
        out.append(f"project directory is gone: {project}{hint}")
    n = result.count
    archived, logs = n("archive", "report"), n("compress", "log")
    trees, branches = n("delete", "worktree"), n("delete", "branch")
    compressed, deleted = n("compress", "report"), n("delete") - trees - branches
    parts = [
        f"{would}archive {_plural(archived, 'report')}" if would else
        f"archived {_plural(archived, 'report')}",
        ("compress" if would else "compressed")
        + f" {_plural(compressed, 'report')} and {_plural(logs, 'log')}",
        ("delete" if would else "deleted") + f" {_plural(deleted, 'file')}",
    ]
    if n("repair"):
        parts.append(f"{'finish' if would else 'finished'} {n('repair')} left by an"
                     " interrupted cleanup")
    if trees or branches:
        parts.append(f"{'remove' if would else 'removed'} {_plural(trees, 'worktree')} and"
                     f" {branches} branch{'es' * (branches != 1)}")
    if result.pruned_jobs:
        parts.append(f"{'forget' if would else 'forgot'} {_plural(result.pruned_jobs, 'job')}"
                     " of missing projects")
    scope = ", ".join(result.projects) or "no project"
    age = f"; age {result.age}" if result.age else ""
    out.append(f"{'dry run: ' if would else ''}{'; '.join(parts)} ({scope}{age})")
    if result.kept:
        out.append("left: " + ", ".join(f"{_plural(n, 'report')} {why}"
                                        for why, n in result.kept.items()))
    out.append(
        f"{_size(result.bytes_before)} → {_size(result.bytes_after)},"
        f" {would}free {_size(result.freed)}"
    )
    render.write("\n".join(out) + "\n")  # paths are names the project chose
    for problem in result.errors:
        render.error(problem)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover
