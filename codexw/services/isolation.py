"""`diff`, `merge` and `conflicts`: the branches of jobs that ran in worktrees of their own.

Each isolated job's work is a branch (`codexw/<job>`) started from its base commit (HEAD
when it was launched). `diff` shows it against that base, `merge` brings it into the
main tree's current branch (refusing a dirty tree, aborting a conflict so the tree is as
it was), and `conflicts` compares the files and hunks of a project's open and finished
jobs before anything is merged. The git plumbing is core.worktree's.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from itertools import combinations

from codexw.core import gitdelta, worktree
from codexw.core.errors import GitError, MergeConflict, UsageError
from codexw.core.models import Job, JobState
from codexw.core.store import Store
from codexw.services.common import open_store

MERGE_MODES = ("merge", "squash", "rebase")


def _isolated(store: Store, job_id: int) -> Job:
    job = store.get_job(job_id)
    if not job.spec.branch or not job.spec.base_commit:
        raise UsageError(f"job {job.id} did not run in a worktree of its own",
                         "diff, merge and conflicts work on jobs launched with --worktree")
    return job


# -- diff ----------------------------------------------------------------------------------


@dataclass
class JobDiff:
    job: Job
    base: str
    tip: str | None  # the branch's commit; None while the job runs (the live worktree)
    text: str
    live: bool

    def to_dict(self) -> dict[str, object]:
        return {"job_id": self.job.id, "branch": self.job.spec.branch, "base_commit": self.base,
                "tip": self.tip, "live": self.live, "diff": self.text}


def job_diff(job_id: int, stat: bool = False) -> JobDiff:
    """The job's change against the commit it started from: its branch once it ended,
    its worktree (committed or not) while it runs."""
    with open_store() as store:
        job = _isolated(store, job_id)
    spec = job.spec
    assert spec.branch and spec.base_commit
    opts = ["--stat=100"] if stat else []
    tree = spec.worktree
    if job.state.is_open:
        if not tree or not worktree.is_worktree(tree):
            return JobDiff(job, spec.base_commit, None, "", True)
        text = worktree.git(tree, "diff", "--no-color", *opts, spec.base_commit, "--", ".")
        untracked = [n for n in worktree.git(tree, "ls-files", "-z", "--others",
                                              "--exclude-standard").split("\0") if n]
        if untracked:
            text += "".join(f"new file (not committed yet): {name}\n" for name in untracked)
        return JobDiff(job, spec.base_commit, None, text, True)
    tip = _tip(job)
    text = worktree.git(spec.project, "diff", "--no-color", *opts, spec.base_commit, tip)
    return JobDiff(job, spec.base_commit, tip, text, False)


def _tip(job: Job) -> str:
    tip = worktree.rev(job.spec.project, f"refs/heads/{job.spec.branch}")
    if tip is None:
        raise GitError(f"job {job.id}'s branch {job.spec.branch} no longer exists in"
                       f" {job.spec.project}")
    return tip


# -- merge ---------------------------------------------------------------------------------


@dataclass
class Merged:
    job_id: int
    branch: str
    mode: str
    commit: str | None  # HEAD after the merge
    files: list[str]
    already: bool = False  # the branch was in the current branch before

    def to_dict(self) -> dict[str, object]:
        return {"job_id": self.job_id, "branch": self.branch, "mode": self.mode,
                "commit": self.commit, "files": self.files, "already_merged": self.already}


@dataclass
class MergeResult:
    merged: list[Merged] = field(default_factory=list)
    conflict: MergeConflict | None = None
    conflict_job: int | None = None
    not_merged: list[int] = field(default_factory=list)  # left after the conflict

    def to_dict(self) -> dict[str, object]:
        return {
            "merged": [m.to_dict() for m in self.merged],
            "conflict": None if self.conflict is None else {
                "job_id": self.conflict_job, "files": list(self.conflict.files),
                "message": self.conflict.message},
            "not_merged": self.not_merged,
        }


def merge(job_ids: list[int], batch_id: int | None = None, mode: str = "merge") -> MergeResult:
    """Merge each job's branch into the main tree's current branch, in order; stop at
    the first conflict (the tree is left as it was before that merge). `batch_id`:
    the batch's succeeded jobs not merged yet, in id order."""
    if mode not in MERGE_MODES:
        raise UsageError(f"unknown merge mode {mode!r}", "use --squash or --rebase, or neither")
    with open_store() as store:
        jobs = _batch_jobs(store, batch_id) if batch_id is not None else []
        jobs += [_mergeable(store, job_id) for job_id in job_ids]
        result = MergeResult()
        for i, job in enumerate(jobs):
            try:
                done = _merge_one(job, mode)
            except MergeConflict as exc:
                result.conflict, result.conflict_job = exc, job.id
                result.not_merged = [j.id for j in jobs[i + 1:]]
                break
            result.merged.append(done)
            with store.transaction():
                store.set_merged(_same_branch(store, job), time.time())
        return result


def _mergeable(store: Store, job_id: int) -> Job:
    job = _isolated(store, job_id)
    if job.state.is_open:
        raise UsageError(f"job {job.id} is still {job.state.value}: merge it once it has ended",
                         f"codexw wait {job.id}")
    return job


def _batch_jobs(store: Store, batch_id: int) -> list[Job]:
    store.get_batch(batch_id)
    latest = store.batch_latest(batch_id)
    return [job for _, job in sorted(latest.items())
            if job.state == JobState.SUCCEEDED and job.spec.branch and job.merged_at is None]


def _same_branch(store: Store, job: Job) -> list[int]:
    """The jobs whose work is this branch (a job and its follow-ups)."""
    return [j.id for j in store.isolated_jobs(job.spec.project) if j.spec.branch == job.spec.branch]


def _merge_one(job: Job, mode: str) -> Merged:
    spec = job.spec
    project = spec.project
    assert spec.branch and spec.base_commit
    with worktree.repo_lock(project):
        tip = _tip(job)
        files = worktree.changed_names(project, spec.base_commit, tip)
        if worktree.try_git(project, "merge-base", "--is-ancestor", tip, "HEAD") is not None:
            return Merged(job.id, spec.branch, mode, worktree.head(project), files, already=True)
        dirty = worktree.dirty_files(project, untracked=False)
        if dirty:
            shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
            raise GitError(f"the working tree of {project} has uncommitted changes ({shown}):"
                           " nothing was merged", "commit or stash them, then merge again")
        for marker in ("MERGE_HEAD", "rebase-merge", "rebase-apply", "CHERRY_PICK_HEAD"):
            if os.path.lexists(os.path.join(_git_dir(project), marker)):
                raise GitError(f"{project} is in the middle of a merge, rebase or cherry-pick",
                               "finish or abort it first")
        message = f"codexw: merge job {job.id} ({spec.branch}): {_first_line(spec.task)}"
        if mode == "rebase":
            _rebase(job, tip)
            worktree.git(project, "merge", "--ff-only", "--quiet", spec.branch)
        elif mode == "squash":
            _attempt(job, project, ["merge", "--squash", "--quiet", tip], ["reset", "--merge"])
            if worktree.try_git(project, "diff", "--cached", "--quiet") is None:
                worktree.git(project, "commit", "--quiet", "--no-verify", "-m",
                             _first_line(spec.task) or f"codexw job {job.id}",
                             "-m", f"Squashed from {spec.branch} (codexw job {job.id}).",
                             env=worktree.identity_env(project))
        else:
            _attempt(job, project, ["merge", "--no-ff", "--quiet", "-m", message, tip],
                     ["merge", "--abort"])
        return Merged(job.id, spec.branch, mode, worktree.head(project), files)


def _attempt(job: Job, tree: str, command: list[str], undo: list[str]) -> None:
    """Run a merge-like git command; on failure name the conflicting files, undo it
    (the tree is as it was) and raise MergeConflict."""
    done = gitdelta.git_run(tree, *command, env=worktree.identity_env(tree))
    if done is not None and done.returncode == 0:
        return
    conflicted = [n for n in (worktree.try_git(tree, "diff", "--name-only", "-z",
                                               "--diff-filter=U") or "").split("\0") if n]
    worktree.try_git(tree, *undo)
    if not conflicted:
        why = "git could not be run" if done is None else (
            done.stderr.decode("utf-8", "replace").strip().splitlines() or ["failed"])[-1]
        raise GitError(f"job {job.id}'s branch {job.spec.branch} was not merged: {why}",
                       "nothing changed in the working tree")
    raise MergeConflict(
        f"job {job.id}'s branch {job.spec.branch} conflicts with the current branch in"
        f" {', '.join(conflicted)}: nothing was merged, the working tree is as it was",
        f"see `codexw diff {job.id}`; resolve by hand with `git merge {job.spec.branch}`",
        tuple(conflicted),
    )


def _rebase(job: Job, tip: str) -> None:
    """Rebase the job's branch onto the main tree's HEAD, in its worktree (made again
    for the purpose when it was removed)."""
    spec = job.spec
    assert spec.branch
    onto = worktree.head(spec.project)
    if onto is None:
        raise GitError(f"{spec.project} has no commit to rebase onto")
    tree = spec.worktree if spec.worktree and worktree.is_worktree(spec.worktree) else None
    temporary = None
    if tree is None:
        temporary = str(worktree.project_worktrees(spec.project) / f".rebase-{job.id}-{os.getpid()}")
        worktree.git(spec.project, "worktree", "prune")  # its worktree may be deleted by hand
        worktree.git(spec.project, "worktree", "add", "--quiet", temporary, spec.branch)
        tree = temporary
    try:
        if worktree.dirty_files(tree, untracked=False):
            raise GitError(f"job {job.id}'s worktree {tree} has uncommitted changes",
                           "commit or discard them there, then merge again")
        _attempt(job, tree, ["rebase", "--quiet", onto], ["rebase", "--abort"])
    finally:
        if temporary is not None:
            worktree.try_git(spec.project, "worktree", "remove", "--force", temporary)
            worktree.try_git(spec.project, "worktree", "prune")


def _git_dir(project: str) -> str:
    return worktree.git(project, "rev-parse", "--absolute-git-dir").strip()


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:72]


# -- conflicts -----------------------------------------------------------------------------

HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@")
WHOLE = None  # a file touched as a whole (added, deleted, binary, not yet tracked)


@dataclass
class Touched:
    """What one job changed: path -> line ranges of its base it touched (WHOLE: all)."""

    job: Job
    files: dict[str, list[tuple[int, int]] | None]
    live: bool


@dataclass
class Overlap:
    a: int
    b: int
    files: list[str]
    hunks: list[str]  # of those, the files where their changed lines meet

    def to_dict(self) -> dict[str, object]:
        return {"jobs": [self.a, self.b], "files": self.files, "overlapping_hunks": self.hunks}


@dataclass
class ConflictReport:
    project: str | None
    jobs: list[Touched]
    pairs: list[Overlap]

    def to_dict(self) -> dict[str, object]:
        return {
            "project": self.project,
            "jobs": [{"job_id": t.job.id, "state": t.job.state.value, "branch": t.job.spec.branch,
                      "live": t.live, "files": sorted(t.files)} for t in self.jobs],
            "pairs": [p.to_dict() for p in self.pairs],
        }


def conflicts(project: str | None = None, batch_id: int | None = None) -> ConflictReport:
    """Which isolated jobs touched the same files, and whether their hunks overlap.

    The jobs: those of `batch_id`, else those of `project`, that are running or ended
    and whose branch is not merged into the main tree's HEAD yet (one job per branch,
    the newest). A running job is read from its worktree's live diff."""
    with open_store() as store:
        if batch_id is not None:
            store.get_batch(batch_id)
            candidates = [j for _, j in sorted(store.batch_latest(batch_id).items())]
            project = candidates[0].spec.project if candidates else project
        else:
            assert project is not None
            candidates = store.isolated_jobs(project)
    touched, pairs = compare(candidates)
    return ConflictReport(project, touched, pairs)


def compare(jobs: list[Job]) -> tuple[list[Touched], list[Overlap]]:
    """What each of `jobs` touched (running, or ended and not merged; the newest job per
    branch) and the pairs of them that touched the same files."""
    newest: dict[tuple[str, str], Job] = {}
    for job in jobs:
        if job.spec.branch and job.merged_at is None and job.state not in (
                JobState.QUEUED, JobState.CANCELLED):
            newest[(job.spec.project, job.spec.branch)] = job
    touched = [t for t in (_touched(job) for job in newest.values()) if t is not None]
    pairs = []
    for one, two in combinations(touched, 2):
        if one.job.spec.project != two.job.spec.project:
            continue
        common = sorted(one.files.keys() & two.files.keys())
        if common:
            hunks = [f for f in common if _meet(one.files[f], two.files[f])]
            pairs.append(Overlap(one.job.id, two.job.id, common, hunks))
    return touched, pairs


def _touched(job: Job) -> Touched | None:
    spec = job.spec
    assert spec.branch and spec.base_commit
    live = job.state.is_open
    try:
        if live:
            tree = spec.worktree
            if not tree or not worktree.is_worktree(tree):
                return None
            text = worktree.git(tree, "diff", "-U0", "--no-color", "--no-renames",
                                spec.base_commit, "--", ".")
            files = _ranges(text)
            for name in worktree.git(tree, "ls-files", "-z", "--others",
                                     "--exclude-standard").split("\0"):
                if name:
                    files[name] = WHOLE
            return Touched(job, files, True)
        tip = worktree.rev(spec.project, f"refs/heads/{spec.branch}")
        if tip is None or worktree.try_git(spec.project, "merge-base", "--is-ancestor", tip,
                                           "HEAD") is not None:
            return None  # gone, or already in the current branch
        text = worktree.git(spec.project, "diff", "-U0", "--no-color", "--no-renames",
                            spec.base_commit, tip)
    except GitError:
        return None
    return Touched(job, _ranges(text), False)


def _ranges(diff: str) -> dict[str, list[tuple[int, int]] | None]:
    """path -> [(first, last) line of the base each hunk touches]; WHOLE for a file
    added, deleted or binary."""
    files: dict[str, list[tuple[int, int]] | None] = {}
    path: str | None = None
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            path = None
        elif line.startswith("--- "):
            old = line[4:]
            path = old[2:] if old.startswith("a/") else None
        elif line.startswith("+++ "):
            new = line[4:]
            if path is None and new.startswith("b/"):
                path = new[2:]
                files[path] = WHOLE  # added: nothing of the base to compare
            elif new == "/dev/null" and path is not None:
                files[path] = WHOLE  # deleted
            elif path is not None:
                files.setdefault(path, [])
        elif line.startswith("Binary files "):
            match = re.match(r"Binary files (?:a/(.*)|/dev/null) and (?:b/(.*)|/dev/null) differ", line)
            if match:
                files[match.group(1) or match.group(2)] = WHOLE
        elif path is not None and (match := HUNK_RE.match(line)):
            ranges = files.get(path)
            if ranges is not None:
                start, count = int(match.group(1)), int(match.group(2) or "1")
                ranges.append((start, start + max(count, 1) - 1))
    return files


def _meet(one: list[tuple[int, int]] | None, two: list[tuple[int, int]] | None) -> bool:
    """Whether two jobs' changes to a file touch the same or adjacent lines of its base
    (git's merge conflicts on adjacent changes too)."""
    if one is None or two is None:
        return True
    return any(a <= d + 1 and c <= b + 1 for a, b in one for c, d in two)
