"""`codexw cleanup`: archive or compress finished reports and logs, delete old archives.

Made to run blindly from cron:

- the registry decides what is finished: a reconcile runs first (a TEMP report of a job
  whose runner is gone is finalized as `lost`, never deleted blind), and files of
  queued or running jobs are never touched;
- one cleanup at a time (a lock in the state dir; a second one waits, then gives up);
- no symbolic link is followed (directory descriptors, O_NOFOLLOW, lstat);
- copies are written and made durable before the registry points at them, and the
  originals go only after that, so an interrupted run leaves every report in place,
  archived, or both, and the next run finishes the work (see cleanup_work);
- nothing that ended less than a minute ago is touched.

Layout: `<project>/.codexw/archive/YYYY-MM/<type>/<report>.md.gz` (month of the job's
end); compressed in place: `<project>/.codexw/<type>/<report>.md.gz`; logs:
`<state>/logs/<job>.jsonl.gz` (+ `.stderr.log.gz`, `.runner.log.gz`).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codexw.core import archive, paths
from codexw.core.durations import parse_duration
from codexw.core.errors import UsageError
from codexw.core.models import TYPE_NAME_RE
from codexw.core.scheduler import reconcile
from codexw.core.store import Store
from codexw.services.common import open_store

DEFAULT_AGE = "7d"
SETTLE = 60.0  # seconds: nothing that ended (or changed) more recently is touched
LOCK_NAME = "cleanup.lock"
ARCHIVE = "archive"
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


@dataclass
class Action:
    kind: str  # archive | compress | delete | repair | prune
    what: str  # report | log | tmp | jobs
    path: str
    dest: str | None = None
    job_id: int | None = None
    bytes_before: int = 0
    bytes_after: int = 0
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Skipped:
    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class CleanupResult:
    dry_run: bool
    projects: list[str] = field(default_factory=list)
    missing_projects: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pruned_jobs: int = 0

    def count(self, kind: str, what: str | None = None) -> int:
        return sum(1 for a in self.actions if a.kind == kind and what in (None, a.what))

    @property
    def bytes_before(self) -> int:
        return sum(a.bytes_before for a in self.actions)

    @property
    def bytes_after(self) -> int:
        return sum(a.bytes_after for a in self.actions)

    @property
    def freed(self) -> int:
        return self.bytes_before - self.bytes_after

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "ok": self.ok,
            "projects": self.projects,
            "missing_projects": self.missing_projects,
            "archived": self.count("archive"),
            "compressed": self.count("compress"),
            "deleted": self.count("delete"),
            "repaired": self.count("repair"),
            "pruned_jobs": self.pruned_jobs,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "freed": self.freed,
            "actions": [a.to_dict() for a in self.actions],
            "skipped": [s.to_dict() for s in self.skipped],
            "errors": self.errors,
        }


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


def _age(text: str, what: str) -> float:
    """Seconds; `0` (any unit) is allowed: everything that has ended."""
    if _ZERO.fullmatch(str(text).strip()):
        return 0.0
    return parse_duration(text, default_unit="d", what=what)


def _plan(req: CleanupRequest, now: float) -> Plan:
    if req.all_projects and req.root:
        raise UsageError("--all-projects and --root exclude each other", "choose one scope")
    if req.keep is not None and req.keep < 0:
        raise UsageError("--keep must be 0 or more")
    if req.job_type is not None and (
        not TYPE_NAME_RE.fullmatch(req.job_type) or req.job_type == ARCHIVE
    ):
        raise UsageError(f"invalid type {req.job_type!r}", "use a report type such as workers")
    if req.lock_wait < 0:
        raise UsageError("--lock-wait must be 0 or more")
    # --delete-archives-older or --prune-missing alone do only that.
    only_other = bool(req.delete_archives_older or req.prune_missing) and (
        req.age is None and req.keep is None and not req.compress_only
    )
    age = req.age
    if age is None and req.keep is None and not only_other:
        age = DEFAULT_AGE
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
    )


def _scope(store: Store, req: CleanupRequest) -> list[str]:
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


def cleanup(req: CleanupRequest) -> CleanupResult:
    from codexw.services.cleanup_work import Worker

    plan = _plan(req, time.time())
    store = open_store(reconcile_first=False)
    try:
        projects = _scope(store, req)
        result = CleanupResult(dry_run=req.dry_run)
        if req.dry_run:
            Worker(store, plan, result).run(projects)
            return result
        with archive.exclusive_lock(paths.ensure_state_dir() / LOCK_NAME, req.lock_wait):
            reconcile(store)  # dead runners' TEMP reports become `lost` reports first
            plan = _plan(req, time.time())  # ages count from now, after any wait
            Worker(store, plan, result).run(projects)
        return result
    finally:
        store.close()
