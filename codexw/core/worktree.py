"""A git worktree per job (docs/isolation.md): the git plumbing.

An isolated job runs in `<state dir>/worktrees/<project key>/<job>` on branch
`<branch_prefix><job>`, made by its runner from the commit HEAD pointed at when the job
was launched; when codex has ended, the runner commits what the agent left there on that
branch. Everything here runs git with argv lists (core.gitdelta.git_run), never a shell.
Standard library only: the runner imports this.

Git commands that change the repository's shared state (adding, removing and pruning
worktrees, merging into the main tree) hold a per-repository flock, so two runners
starting at once never race on `.git/worktrees/` and never leave an `index.lock`
behind for each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from codexw.core import gitdelta, paths, process
from codexw.core.errors import GitError
from codexw.core.models import Job, JobSpec

SETUP_OUTPUT_LIMIT = 64 << 10  # bytes of a setup command's output kept in the event log
# Who commits when git config names nobody (a fresh CI box, a container).
FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "codexw", "GIT_AUTHOR_EMAIL": "codexw@localhost",
    "GIT_COMMITTER_NAME": "codexw", "GIT_COMMITTER_EMAIL": "codexw@localhost",
}
# Commits codexw makes are its own: no signing prompt, no hooks that could refuse them.
COMMIT_OPTS = ("-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def git(cwd: str | os.PathLike[str], *args: str, env: dict[str, str] | None = None,
        timeout: float = 120.0) -> str:
    """`git ARGS` in `cwd`: its stdout, or GitError naming what failed and why."""
    done = gitdelta.git_run(str(cwd), *args, env=env, timeout=timeout)
    if done is None:
        raise GitError(f"git {args[0]} could not be run in {cwd}",
                       "is git installed, and the repository reachable?")
    if done.returncode != 0:
        lines = _text(done.stderr).strip().splitlines() or _text(done.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {why}")
    return _text(done.stdout)


def try_git(cwd: str | os.PathLike[str], *args: str) -> str | None:
    """stdout of `git ARGS`, or None when it fails."""
    done = gitdelta.git_run(str(cwd), *args)
    return _text(done.stdout) if done is not None and done.returncode == 0 else None


# -- the repository --------------------------------------------------------------------


def head(project: str) -> str | None:
    """The commit HEAD points at, or None (no repository, or no commit yet)."""
    out = try_git(project, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    return out.strip() if out else None


def is_git_top(project: str) -> bool:
    out = try_git(project, "rev-parse", "--show-toplevel")
    return out is not None and os.path.realpath(out.strip()) == os.path.realpath(project)


def dirty_files(tree: str, untracked: bool = True) -> list[str]:
    """Paths `git status` lists in `tree` (codexw's own .codexw/ left out)."""
    out = git(tree, "status", "--porcelain=v1", "-z",
              "--untracked-files=" + ("all" if untracked else "no"), "--ignore-submodules=all")
    return [path for _, path in gitdelta.status_entries(out.encode("utf-8", "surrogateescape"))]


def identity_env(cwd: str) -> dict[str, str]:
    """Who commits: whom git names (its config, GIT_AUTHOR_* in the environment, what it
    can tell from the system); codexw's own name when git can name nobody."""
    known = all(try_git(cwd, "var", var) for var in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"))
    return {} if known else dict(FALLBACK_IDENTITY)


def snapshot_commit(project: str, base: str, message: str) -> str:
    """A commit on top of `base` holding the main tree's uncommitted changes (tracked
    and untracked, not ignored), made through a private index: the main tree, its
    index and its branches are not touched."""
    directory = paths.ensure_state_dir()
    index = directory / f".index-{os.getpid()}-{os.urandom(4).hex()}"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        git(project, "read-tree", base, env=env)
        git(project, "add", "-A", "--", ".", ":(exclude).codexw", env=env)
        tree = git(project, "write-tree", env=env).strip()
        return git(project, *COMMIT_OPTS, "commit-tree", tree, "-p", base, "-m", message,
                   env={**env, **identity_env(project)}).strip()
    finally:
        for leftover in (index, Path(f"{index}.lock")):
            with contextlib.suppress(OSError):
                os.unlink(leftover)


def branch_exists(project: str, branch: str) -> bool:
    return try_git(project, "rev-parse", "--verify", "-q", f"refs/heads/{branch}") is not None


def rev(project: str, ref: str) -> str | None:
    out = try_git(project, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
    return out.strip() if out else None


def changed_names(project: str, base: str, tip: str) -> list[str]:
    out = git(project, "diff", "--name-only", "-z", "--no-renames", base, tip)
    return [name for name in out.split("\0") if name]


def diffstat(project: str, base: str | None, tip: str | None) -> str:
    """`git diff --stat base tip`, '' when there is nothing (or nothing to compare)."""
    if not base or not tip:
        return ""
    out = try_git(project, "diff", "--stat=100", "--no-color", base, tip)
    return out.rstrip() if out else ""


# -- where worktrees live ----------------------------------------------------------------


def worktrees_root() -> Path:
    return paths.state_dir() / "worktrees"


def project_key(project: str) -> str:
    import hashlib

    digest = hashlib.sha256(os.path.realpath(project).encode("utf-8", "surrogateescape"))
    return f"{Path(project).name[:40]}-{digest.hexdigest()[:12]}"


def project_worktrees(project: str) -> Path:
    return worktrees_root() / project_key(project)


def assign(spec: JobSpec, job_id: int, job_key: str | None) -> tuple[str, str] | None:
    """(branch, worktree folder) of a new isolated job, or None for one that is not.

    A follow-up in a conversation (and a retry of one) keeps the branch and worktree of
    the job it continues; any other new attempt gets its own, named after its id. A
    folder already there (a registry made anew reuses ids) gets the job's key added:
    two jobs never share a worktree."""
    if spec.isolation != "worktree":
        return None
    if spec.resume_of is not None and spec.branch and spec.worktree:
        return spec.branch, spec.worktree
    folder = project_worktrees(spec.project) / str(job_id)
    if os.path.lexists(folder) and job_key:
        folder = folder.with_name(f"{job_id}-{job_key[:8]}")
    return f"{spec.branch_prefix}{job_id}", str(folder)


@contextlib.contextmanager
def repo_lock(project: str) -> Iterator[None]:
    """Serialise changes to `project`'s worktrees and its main tree among codexw processes."""
    import fcntl

    root = worktrees_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(root / f"{project_key(project)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_worktree(path: str) -> bool:
    """A worktree folder that git still knows (its `.git` file points somewhere real)."""
    return (os.path.isfile(os.path.join(path, ".git"))
            and try_git(path, "rev-parse", "--git-dir") is not None)


def _clear_stale_index_lock(path: str) -> None:
    """A runner killed inside `git add` leaves `index.lock` in the worktree's git dir.
    Only codexw writes a job's index (the agent's `.git` is read-only) and the job that
    wrote it has ended, so the lock is stale."""
    gitdir = try_git(path, "rev-parse", "--absolute-git-dir")
    if gitdir:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(gitdir.strip(), "index.lock"))


# -- a job's run -------------------------------------------------------------------------


@dataclass
class Prepared:
    """An isolated job's worktree, ready for codex (or the reason it is not)."""

    branch: str
    path: str
    cwd: str = ""
    copied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events: list[bytes] = field(default_factory=list)  # written to the job's event log
    problem: str | None = None
    stopped: bool = False
    fresh: bool = False  # made now from the base commit (no agent has written in it yet)


def _event(command: str, exit_code: int | None, output: str = "") -> bytes:
    """A step of codexw's own, in codex's event format, so `logs` and the report show it."""
    item = {"id": f"codexw-{os.urandom(4).hex()}", "type": "command_execution",
            "command": command, "aggregated_output": output, "exit_code": exit_code,
            "status": "completed" if exit_code == 0 else "failed"}
    return (json.dumps({"type": "item.completed", "item": item}) + "\n").encode()


def prepare(job: Job, env: dict[str, str], stop: Callable[[], bool]) -> Prepared:
    """Make (or find again) `job`'s worktree, copy the files it lacks, run its setup.

    A follow-up whose worktree is there continues in it; one whose worktree was
    removed gets it back from its branch. A new branch that already exists (a
    registry made anew reuses ids) gets the job's key added."""
    spec = job.spec
    prep = Prepared(spec.branch or "", spec.worktree or "")
    if not spec.branch or not spec.worktree or not spec.base_commit:
        # Never run an isolated job in the main tree instead.
        prep.problem = "the job was recorded without a branch, worktree or base commit"
        return prep
    project = spec.project
    try:
        with repo_lock(project):
            _make(job, prep)
    except GitError as exc:
        prep.problem = f"the worktree could not be made: {exc.message}"
        return prep
    rel = os.path.relpath(spec.cwd, project)
    prep.cwd = os.path.normpath(os.path.join(prep.path, rel)) if not rel.startswith("..") else prep.path
    if not os.path.isdir(prep.cwd):
        prep.notes.append(f"{rel} is not in the base commit: codex ran in the worktree's top")
        prep.cwd = prep.path
    for name in spec.worktree_copy:
        _copy(project, prep, name)
    if spec.worktree_setup and prep.fresh:
        _setup(spec.worktree_setup, prep, env, stop, spec.kill_grace)
    elif spec.worktree_setup:
        # It would run outside codex's sandbox on what the earlier agent wrote there
        # (package scripts, a lockfile): never on an agent's files.
        prep.notes.append("worktree_setup not run again: the worktree holds the earlier"
                          " agent's files (run it there by hand if needed)")
    return prep


def _make(job: Job, prep: Prepared) -> None:
    spec = job.spec
    project = spec.project
    continuing = spec.resume_of is not None and branch_exists(project, prep.branch)
    if continuing and is_worktree(prep.path):
        _clear_stale_index_lock(prep.path)
        prep.events.append(_event(f"codexw: continue in worktree {prep.path}", 0))
        return
    git(project, "worktree", "prune")
    if continuing:
        if os.path.lexists(prep.path):
            raise GitError(f"{prep.path} is in the way of job {job.id}'s worktree")
        git(project, "worktree", "add", "--quiet", prep.path, prep.branch)
        prep.notes.append(f"its worktree was gone: made again from branch {prep.branch}")
        prep.events.append(_event(f"git worktree add {prep.path} {prep.branch}", 0))
        return
    if branch_exists(project, prep.branch):
        prep.branch = f"{prep.branch}-{(job.job_key or os.urandom(4).hex())[:8]}"
    if os.path.lexists(prep.path):
        raise GitError(f"{prep.path} already exists: two jobs never share a worktree")
    Path(prep.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    git(project, "worktree", "add", "--quiet", "-b", prep.branch, prep.path, spec.base_commit or "HEAD")
    prep.fresh = True
    prep.events.append(_event(
        f"git worktree add -b {prep.branch} {prep.path} {(spec.base_commit or '')[:12]}", 0))


def _copy(project: str, prep: Prepared, name: str) -> None:
    source = Path(name) if os.path.isabs(name) else Path(project) / name
    target = Path(prep.path) / (source.name if os.path.isabs(name) else name)
    # codexw copies as the user, outside codex's sandbox, into a folder an agent may have
    # written: never through a link it planted, never over what is there.
    if os.path.lexists(target):
        prep.notes.append(f"worktree_copy: {name} is already in the worktree; not copied again")
        prep.copied.append(os.path.relpath(target, prep.path))  # still never committed
        return
    if _through_link(Path(prep.path), target):
        prep.notes.append(f"worktree_copy: {name} not copied: a symlink in the worktree is on its way")
        return
    try:
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        elif source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            prep.notes.append(f"worktree_copy: {name} does not exist in the project; not copied")
            return
    except OSError as exc:
        prep.notes.append(f"worktree_copy: {name} not copied ({exc.strerror or exc})")
        return
    prep.copied.append(os.path.relpath(target, prep.path))
    prep.events.append(_event(f"codexw: copy {name} into the worktree", 0))


def _through_link(top: Path, target: Path) -> bool:
    """Whether a folder between `top` and `target` is a symlink (or leaves `top`)."""
    norm = Path(os.path.normpath(target))
    if top not in norm.parents:
        return True
    here = norm.parent
    while here != top:
        if here.is_symlink():
            return True
        here = here.parent
    return False


def _setup(argv: tuple[str, ...], prep: Prepared, env: dict[str, str],
           stop: Callable[[], bool], grace: float) -> None:
    """Run the setup command in the worktree (its own process group, the job's marker in
    its environment); its output goes to the event log, its failure fails the job."""
    shown = " ".join(argv)
    try:
        out = process.anonymous_file(paths.logs_dir())
    except OSError as exc:
        prep.problem = f"worktree setup: no room for its output ({exc.strerror or exc})"
        return
    with out:
        try:
            child = subprocess.Popen(
                list(argv), cwd=prep.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            prep.problem = f"worktree setup `{shown}` could not be started: {exc.strerror or exc}"
            prep.events.append(_event(shown, 127, prep.problem))
            return
        while child.poll() is None:
            if stop():
                process.terminate_group(child.pid, grace, reap=[child])
                child.wait()
                prep.stopped = True
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.2)
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - SETUP_OUTPUT_LIMIT))
        output = out.read(SETUP_OUTPUT_LIMIT).decode("utf-8", "replace")
    code = child.returncode
    prep.events.append(_event(shown, code, output))
    if prep.stopped:
        return
    if code != 0:
        last = output.strip().splitlines()[-1:] or [""]
        status = (f"was killed by {signal.Signals(-code).name}" if code < 0
                  else f"exited with status {code}")
        prep.problem = f"worktree setup `{shown}` {status}" + (f": {last[0][:200]}" if last[0] else "")


@dataclass
class Committed:
    commit: str | None  # the new commit on the branch, None when nothing changed
    files_changed: int | None  # against the base commit
    diffstat: str


def commit(job: Job, prep: Prepared, state: str) -> Committed:
    """Commit whatever the agent left in the worktree on its branch, files it created
    included, the copied-in files (secrets, mostly) left out."""
    spec = job.spec
    tree = prep.path
    _clear_stale_index_lock(tree)
    # An ignored file needs no exclude (and git refuses to name one in `add`).
    excludes = [f":(exclude,literal){name}" for name in prep.copied
                if try_git(tree, "check-ignore", "-q", "--", name) is None]
    git(tree, "add", "-A", "--", ".", *excludes)
    new = None
    if try_git(tree, "diff", "--cached", "--quiet") is None:  # exit 1: staged changes
        first = spec.task.strip().splitlines()[0][:72] if spec.task.strip() else "codexw job"
        git(tree, *COMMIT_OPTS, "commit", "--quiet", "--no-verify", "-m", first,
            "-m", f"codexw job {job.id} ({state})", env=identity_env(tree))
        new = rev(tree, "HEAD")
    tip = rev(spec.project, f"refs/heads/{prep.branch}")
    base = spec.base_commit
    files = len(changed_names(spec.project, base, tip)) if base and tip else None
    return Committed(new, files, diffstat(spec.project, base, tip))


def remove(project: str, path: str) -> None:
    """Remove a worktree folder and git's record of it (its branch stays)."""
    with repo_lock(project):
        if is_worktree(path):
            git(project, "worktree", "remove", "--force", "--force", path)
        elif os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
        git(project, "worktree", "prune")


def age(path: str) -> float | None:
    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return None
