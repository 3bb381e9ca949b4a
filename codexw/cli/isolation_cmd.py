"""`codexw diff`, `codexw merge`, `codexw conflicts`: isolated jobs' branches."""

from __future__ import annotations

import os

import typer

from codexw.cli import render
from codexw.core.errors import EXIT_FAILED, UsageError


def diff(
    job_id: int = typer.Argument(..., metavar="ID", help="A job that ran with --worktree.", **render.ID),
    stat: bool = typer.Option(False, "--stat", help="Files and changed lines only (git diff --stat)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show a job's change against the commit it started from (its branch; while it
    runs, its worktree)."""
    from codexw.services.isolation import job_diff

    result = job_diff(job_id, stat=stat)
    if as_json:
        render.emit_json("diff", result.to_dict())
        return
    if result.live:
        render.warn(f"job {result.job.id} is {result.job.state.value}: its worktree as it is now")
    render.write(result.text if result.text else f"job {result.job.id}: no changes\n")


def merge(
    job_ids: list[int] = typer.Argument(None, metavar="[ID]...", help="Jobs whose branches to merge, in this order.", **render.ID),
    batch: int = typer.Option(None, "--batch", "-b", metavar="ID", help="The batch's succeeded jobs not merged yet, one by one; stop at the first conflict.", **render.ID),
    squash: bool = typer.Option(False, "--squash", help="One new commit with the branch's changes (git merge --squash)."),
    rebase: bool = typer.Option(False, "--rebase", help="Rebase the branch onto the current branch, then fast-forward."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Bring jobs' branches into the current branch of the main working tree.

    Refuses a tree with uncommitted changes and a job that has not ended. On a
    conflict nothing of that job is merged, the tree is left as it was, the
    conflicting files are named, and the exit status is 1.
    """
    from codexw.services.isolation import merge as merge_jobs

    if squash and rebase:
        raise UsageError("--squash and --rebase exclude each other")
    if not job_ids and batch is None:
        raise UsageError("nothing to merge", "give job ids, or --batch N")
    mode = "squash" if squash else "rebase" if rebase else "merge"
    result = merge_jobs(list(job_ids or []), batch, mode)
    if as_json:
        render.emit_json("merge", result.to_dict())
    else:
        lines = []
        for done in result.merged:
            what = "was already merged" if done.already else f"merged ({done.mode})"
            lines.append(f"job {done.job_id}: {done.branch} {what},"
                         f" {render.plural(len(done.files), 'file')}")
        if not result.merged and result.conflict is None:
            lines.append(f"batch {batch}: no succeeded job left to merge")
        if lines:
            render.write("\n".join(render.clean(line, oneline=True) for line in lines) + "\n")
        if result.conflict is not None:
            render.error(str(result.conflict))
            if result.not_merged:
                render.error("not merged yet: " + ", ".join(f"job {i}" for i in result.not_merged))
    if result.conflict is not None:
        raise typer.Exit(EXIT_FAILED)


def conflicts(
    batch: int = typer.Option(None, "--batch", "-b", metavar="ID", help="Only the jobs of this batch.", **render.ID),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Which running or finished isolated jobs, not merged yet, touched the same files,
    and whether their changed lines overlap (they would conflict on merge).

    Exit 1 when the changes of two jobs overlap, else 0."""
    from codexw.core import paths
    from codexw.services.isolation import conflicts as find

    project = None if batch is not None else str(paths.project_root(os.getcwd()))
    report = find(project, batch)
    if as_json:
        render.emit_json("conflicts", report.to_dict())
        if any(pair.hunks for pair in report.pairs):
            raise typer.Exit(EXIT_FAILED)
        return
    if not report.pairs:
        render.write(f"no two of {render.plural(len(report.jobs), 'isolated job')} touched"
                     " the same file\n")
        return
    lines = []
    for pair in report.pairs:
        verdict = (f"overlapping changes in {', '.join(pair.hunks)}" if pair.hunks
                   else "different lines")
        lines.append(f"jobs {pair.a} and {pair.b}: {', '.join(pair.files)} ({verdict})")
    render.write("\n".join(render.clean(line, oneline=True) for line in lines) + "\n")
    if any(pair.hunks for pair in report.pairs):
        raise typer.Exit(EXIT_FAILED)  # they would conflict on merge
