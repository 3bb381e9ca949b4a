"""Worktrees of isolated jobs (docs/isolation.md): removed once merged, or ended and older
than the age; `git worktree prune`; branches kept unless merged (or `--prune-branches`).

A worktree is an ordinary git checkout under `<state dir>/worktrees/`; git itself removes
it (`git worktree remove`), so nothing outside that folder and the repository's own
`.git/worktrees/` record is touched. A worktree deleted by hand is only pruned.
"""

from __future__ import annotations

import os

from codexw.core import worktree
from codexw.core.errors import GitError
from codexw.core.models import Job
from codexw.services.cleanup.context import Context
from codexw.services.cleanup.result import Action


def clean_worktrees(ctx: Context, project: str, prune_branches: bool) -> None:
    plan = ctx.plan
    if plan.compress_only or not plan.archive_step:
        return
    jobs = ctx.store.isolated_jobs(project)
    if not jobs or not worktree.is_git_top(project):
        return
    by_tree: dict[str, list[Job]] = {}
    for job in jobs:
        if job.spec.worktree:
            by_tree.setdefault(job.spec.worktree, []).append(job)
    for path, users in by_tree.items():
        newest = users[-1]
        if any(not j.state.is_final for j in users):
            continue  # a job runs there, or a follow-up waits to
        merged = newest.merged_at is not None
        if not merged and not plan.old_enough(newest.ended_at, plan.age_cutoff):
            continue
        why = "merged" if merged else "ended before the age"
        if os.path.lexists(path):
            if not prune_branches and _uncommitted(path):
                ctx.result.skip(path, f"job {newest.id}'s worktree has uncommitted changes:"
                                      " kept (--prune-branches removes it)")
                continue
            _remove(ctx, project, path, newest, why)
        branch = newest.spec.branch
        if branch and (prune_branches or merged) and worktree.branch_exists(project, branch):
            _drop_branch(ctx, project, branch, newest, prune_branches)
    if not plan.dry_run:
        try:
            with worktree.repo_lock(project):
                worktree.git(project, "worktree", "prune")
        except GitError as exc:
            ctx.result.error(project, exc.message)


def _uncommitted(path: str) -> bool:
    """Work a job left uncommitted (its runner was lost): never removed unasked."""
    try:
        return worktree.is_worktree(path) and bool(worktree.dirty_files(path))
    except GitError:
        return False


def _remove(ctx: Context, project: str, path: str, job: Job, why: str) -> None:
    action = Action("delete", "worktree", path, job_id=job.id, note=why)
    if not ctx.plan.dry_run:
        try:
            worktree.remove(project, path)
        except (GitError, OSError) as exc:
            ctx.result.error(path, exc.message if isinstance(exc, GitError) else exc)
            return
    ctx.result.act(action)


def _drop_branch(ctx: Context, project: str, branch: str, job: Job, force: bool) -> None:
    """Delete a job's branch: once merged into HEAD, or with --prune-branches anyway."""
    tip = worktree.rev(project, f"refs/heads/{branch}")
    contained = tip is not None and worktree.try_git(
        project, "merge-base", "--is-ancestor", tip, "HEAD") is not None
    if not contained and not force:
        ctx.result.skip(branch, f"job {job.id}'s branch has commits not merged:"
                                " kept (--prune-branches deletes it)")
        return
    action = Action("delete", "branch", branch, job_id=job.id,
                    note="merged" if contained else "not merged (--prune-branches)")
    if not ctx.plan.dry_run:
        try:
            with worktree.repo_lock(project):
                worktree.git(project, "branch", "-D", branch)
        except GitError as exc:
            ctx.result.error(branch, exc.message)
            return
    ctx.result.act(action)
