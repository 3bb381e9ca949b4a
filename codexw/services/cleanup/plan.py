"""A cleanup request, checked, with its ages turned into cutoff times; and its scope."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from codexw.core import naming, paths
from codexw.core.durations import parse_duration
from codexw.core.errors import UsageError
from codexw.core.models import TYPE_NAME_RE
from codexw.core.store import Store

DEFAULT_AGE = "7d"
SETTLE = 60.0  # seconds: nothing that ended (or changed) more recently is touched
_ZERO = re.compile(r"0+(?:\.0*)?[smhd]?")


@dataclass
class CleanupRequest:
    cwd: str | None = None
    age: str | None = None
    keep: int | None = None
    job_type: str | None = None
    compress_only: bool = False
    delete_archives_older: str | None = None
    all_projects: bool = False
    root: str | None = None
    prune_missing: bool = False
    dry_run: bool = False
    lock_wait: float = 600.0
    prune_branches: bool = False  # also delete isolated jobs' branches not merged


@dataclass
class Plan:
    """A request, validated, with its ages turned into cutoff times."""

    age_cutoff: float | None
    delete_cutoff: float | None
    keep: int | None
    job_type: str | None
    compress_only: bool
    archive_step: bool
    prune_missing: bool
    all_projects: bool
    dry_run: bool
    now: float
    age: str | None = None  # the age in force, as the user would write it ("7d (default)")

    def old_enough(self, ts: float | None, cutoff: float | None) -> bool:
        """Ended before `cutoff` (None: any time), and not within the settle time."""
        if ts is None or ts > self.now - SETTLE:
            return False
        return cutoff is None or ts <= cutoff

    def in_scope(self, job_type: str) -> bool:
        return self.job_type is None or job_type == self.job_type


def _age(text: str, what: str) -> float:
    """Seconds; `0` (any unit) is allowed: everything that has ended."""
    if _ZERO.fullmatch(str(text).strip()):
        return 0.0
    return parse_duration(text, default_unit="d", what=what)


def make_plan(req: CleanupRequest, now: float) -> Plan:
    if req.all_projects and req.root:
        raise UsageError("--all-projects and --root exclude each other", "choose one scope")
    if req.keep is not None and req.keep < 0:
        raise UsageError("--keep must be 0 or more")
    if req.job_type is not None and (
        not TYPE_NAME_RE.fullmatch(req.job_type) or req.job_type == naming.ARCHIVE_DIR
    ):
        raise UsageError(f"invalid type {req.job_type!r}", "use a report type such as workers")
    if req.lock_wait < 0:
        raise UsageError("--lock-wait must be 0 or more")
    # --delete-archives-older or --prune-missing alone do only that.
    only_other = bool(req.delete_archives_older or req.prune_missing) and (
        req.age is None and req.keep is None and not req.compress_only
    )
    age = req.age
    age_said = age
    if age is None and req.keep is None and not only_other:
        age = DEFAULT_AGE
        age_said = f"{DEFAULT_AGE} (the default)"
    age_s = _age(age, "age") if age is not None else None
    delete_s = (
        _age(req.delete_archives_older, "archive age")
        if req.delete_archives_older is not None
        else None
    )
    return Plan(
        age_cutoff=now - age_s if age_s is not None else None,
        delete_cutoff=now - delete_s if delete_s is not None else None,
        keep=req.keep,
        job_type=req.job_type,
        compress_only=req.compress_only,
        archive_step=not only_other,
        prune_missing=req.prune_missing,
        all_projects=req.all_projects,
        dry_run=req.dry_run,
        now=now,
        age=age_said,
    )


def scope(store: Store, req: CleanupRequest) -> list[str]:
    """The projects a request names: every known one, --root, or the one we are in."""
    if req.all_projects:
        return store.projects()
    if req.root:
        root = Path(req.root).expanduser()
        if root.is_dir():
            return [str(paths.project_root(root))]
        named = os.path.abspath(root)
        if store.has_jobs(named):
            return [named]  # a project that is gone: reported, prunable
        raise UsageError(f"--root {req.root}: no such directory", "name a project directory")
    here = Path(req.cwd or os.getcwd())
    project = paths.project_root(here)
    if project == Path(project.anchor):
        raise UsageError(
            f"cleanup from {project} needs a scope",
            "use --all-projects (every project codexw knows) or --root PATH (one project)",
        )
    if not os.path.lexists(paths.codexw_dir(project)) and not store.has_jobs(str(project)):
        raise UsageError(
            f"{project} is not a codexw project (no .codexw folder, no recorded jobs)",
            "run it inside a project, or use --all-projects or --root PATH",
        )
    return [str(project)]
