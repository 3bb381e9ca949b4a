"""`codexw cleanup`: archive or compress finished reports and logs, delete old archives.

Made to run blindly from cron:

- the registry decides what is finished: a reconcile runs first (a TEMP report of a job
  whose runner is gone is finalized as `lost`, never deleted blind), and files of
  queued or running jobs are never touched;
- one cleanup at a time (a lock in the state dir; a second one waits, then gives up);
- no symbolic link is followed (directory descriptors, O_NOFOLLOW, lstat);
- a report is archived as: write the .gz, fsync, link it into place, point the
  registry at it, then remove the original; an interrupted run leaves the original,
  the archive or both, and the next run finishes the work (equal contents) or leaves
  both alone (different contents);
- nothing that ended less than a minute ago is touched.

Layout: `<project>/.codexw/archive/YYYY-MM/<type>/<report>.md.gz` (month of the job's
end), compressed in place: `<project>/.codexw/<type>/<report>.md.gz`, logs:
`<state>/logs/<job>.jsonl.gz` (+ `.stderr.log.gz`, `.runner.log.gz`).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from codexw.core import archive, paths, process
from codexw.core.archive import Dir
from codexw.core.durations import parse_duration
from codexw.core.errors import UsageError
from codexw.core.models import TYPE_NAME_RE
from codexw.core.reports import SUFFIX, stamp
from codexw.core.scheduler import reconcile
from codexw.core.store import JobFiles, Store
from codexw.services.common import open_store

DEFAULT_AGE = "7d"
SETTLE = 60.0  # seconds: nothing that ended (or changed) more recently is touched
LOCK_NAME = "cleanup.lock"
ARCHIVE = "archive"
LOG_KINDS = ("jsonl", "stderr.log", "runner.log")
LOG_RE = re.compile(r"(\d+)\.(jsonl|stderr\.log|runner\.log)(\.gz)?")
TEMP_RE = re.compile(r".*_TEMP_(\d+)_codex_task\.md(?:\.gz)?")
MONTH_RE = re.compile(r"\d{4}-\d{2}")


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
class _Plan:
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


def _plan(req: CleanupRequest, now: float) -> _Plan:
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
    only_other = (req.delete_archives_older or req.prune_missing) and req.age is None and (
        req.keep is None and not req.compress_only
    )
    age = req.age
    if age is None and req.keep is None and not only_other:
        age = DEFAULT_AGE
    age_s = parse_duration(age, default_unit="d", what="age") if age is not None else None
    delete_s = (
        parse_duration(req.delete_archives_older, default_unit="d", what="archive age")
        if req.delete_archives_older is not None
        else None
    )
    return _Plan(
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
    now = time.time()
    plan = _plan(req, now)
    store = open_store(reconcile_first=False)
    try:
        projects = _scope(store, req)
        result = CleanupResult(dry_run=req.dry_run)
        if req.dry_run:
            _Cleaner(store, plan, result).run(projects)
            return result
        with archive.exclusive_lock(paths.ensure_state_dir() / LOCK_NAME, req.lock_wait):
            reconcile(store)  # dead runners' TEMP reports become `lost` reports first
            plan.now = time.time()
            _Cleaner(store, plan, result).run(projects)
        return result
    finally:
        store.close()


@dataclass
class _Report:
    """A finished report file that may be archived, compressed or deleted."""

    dir: Dir
    name: str
    type: str
    st: os.stat_result
    ts: float  # the job's end, or the file's mtime if the registry does not know it
    row: JobFiles | None
    registry_old: str | None  # what the registry says now, when this file is the job's report

    @property
    def path(self) -> str:
        return self.dir.join(self.name)


class _Cleaner:
    def __init__(self, store: Store, plan: _Plan, result: CleanupResult) -> None:
        self.store = store
        self.plan = plan
        self.result = result
        self.token = f"{os.getpid()}{secrets.token_hex(3)}"
        self.logs: Dir | None = None
        self.log_files: dict[str, os.stat_result] = {}
        self.known_ids: set[int] = set()

    # -- driver ----------------------------------------------------------------------

    def run(self, projects: list[str]) -> None:
        with ExitStack() as stack:
            try:
                self.logs = stack.enter_context(Dir.open(str(paths.logs_dir())))
                self.log_files = self.logs.files()
            except FileNotFoundError:
                self.logs = None
            except OSError as exc:
                self.error(str(paths.logs_dir()), exc)
            if self.logs is not None:
                self.stale_tmps(self.logs, self.log_files)
            for project in projects:
                if not os.path.isdir(project):
                    self.missing(project)
                    continue
                self.result.projects.append(project)
                rows = self.project(project)
                self.known_ids.update(r.id for r in rows)
                self.job_logs(rows)
            if self.plan.all_projects:
                self.orphan_logs()

    # -- helpers ---------------------------------------------------------------------

    def error(self, path: str, exc: OSError | str) -> None:
        if isinstance(exc, OSError):
            exc = exc.strerror or str(exc)
        self.result.errors.append(f"{path}: {exc}")

    def skip(self, path: str, reason: str) -> None:
        self.result.skipped.append(Skipped(path, reason))

    def act(self, action: Action) -> None:
        self.result.actions.append(action)

    def old_enough(self, ts: float | None, cutoff: float | None) -> bool:
        if ts is None or ts > self.plan.now - SETTLE:
            return False
        return cutoff is None or ts <= cutoff

    def stale_tmps(self, directory: Dir, files: dict[str, os.stat_result]) -> None:
        """Temporary files of a cleanup that was interrupted (we hold the lock)."""
        for name in [n for n in files if archive.is_stale_tmp(n, self.token)]:
            size = files.pop(name).st_size
            if not self.plan.dry_run:
                directory.unlink(name)
            self.act(Action("repair", "tmp", directory.join(name), bytes_before=size,
                            note="leftover of an interrupted cleanup"))

    def record_report(self, row: JobFiles, old: str | None, new: str | None) -> bool:
        with self.store.transaction(notify_waiters=False):
            return self.store.move_report(row.id, old, new)

    def record_log(self, row: JobFiles, old: str | None, new: str | None) -> bool:
        with self.store.transaction(notify_waiters=False):
            return self.store.move_log(row.id, old, new)

    # -- missing projects --------------------------------------------------------------

    def missing(self, project: str) -> None:
        self.result.missing_projects.append(project)
        if not self.plan.prune_missing:
            return
        rows = [r for r in self.store.job_files(project) if r.state.is_final]
        if not rows:
            return
        if self.plan.dry_run:
            ids = [r.id for r in rows]
        else:
            with self.store.transaction():
                ids = self.store.prune_finished(project)
        self.result.pruned_jobs += len(ids)
        self.act(Action("prune", "jobs", project, note=f"{len(ids)} finished jobs"))
        for job_id in ids:
            for kind in LOG_KINDS:
                for name in (f"{job_id}.{kind}", f"{job_id}.{kind}.gz"):
                    st = self.log_files.pop(name, None)
                    if st is not None and self.logs is not None:
                        self.delete_file(self.logs, name, None, "log", st)

    # -- reports -----------------------------------------------------------------------

    def project(self, project: str) -> list[JobFiles]:
        """Archive/compress/delete one project's reports; returns its registry rows."""
        with ExitStack() as stack:
            try:
                top = stack.enter_context(Dir.open(project))
                codexw = top.sub(".codexw")
            except OSError as exc:
                self.error(os.path.join(project, ".codexw"), exc)
                return self.store.job_files(project)
            if codexw is None:
                return self.store.job_files(project)
            stack.enter_context(codexw)
            types: dict[str, tuple[Dir, dict[str, os.stat_result]]] = {}
            for name in codexw.subdirs():
                if name == ARCHIVE or not TYPE_NAME_RE.fullmatch(name):
                    continue
                if self.plan.job_type is not None and name != self.plan.job_type:
                    continue
                try:
                    sub = codexw.sub(name)
                except OSError as exc:
                    self.error(codexw.join(name), exc)
                    continue
                if sub is not None:
                    stack.enter_context(sub)
                    types[name] = (sub, sub.files())
            try:
                store_dir = codexw.sub(ARCHIVE)
            except OSError as exc:
                self.error(codexw.join(ARCHIVE), exc)
                store_dir = None
            if store_dir is not None:
                stack.enter_context(store_dir)
            # The registry is read after the listing: a report written since then
            # belongs to a job the snapshot still sees as running, and is left alone.
            rows = self.store.job_files(project)
            reports = _Index(project, rows)
            for job_type, (directory, files) in types.items():
                self.stale_tmps(directory, files)
                candidates = self.classify(reports, job_type, directory, files)
                if self.plan.archive_step:
                    for report in self.select(candidates):
                        self.handle(reports, codexw, report)
            if self.plan.delete_cutoff is not None:
                self.delete_archives(reports, store_dir, types)
            elif store_dir is not None and not self.plan.dry_run:
                for _dir, _files in self.archived(store_dir):
                    pass  # only drops temporary files of an interrupted cleanup
            return reports.rows()

    def classify(
        self, index: _Index, job_type: str, directory: Dir, files: dict[str, os.stat_result]
    ) -> list[_Report]:
        candidates = []
        for name, st in files.items():
            if not (name.endswith(SUFFIX) or name.endswith(SUFFIX + ".gz")):
                continue
            path = directory.join(name)
            temp = TEMP_RE.fullmatch(name)
            if temp:
                row = index.by_id.get(int(temp.group(1)))
                if row is None or row.type != job_type:
                    self.skip(path, "TEMP report of a job this registry does not know: left alone")
                elif not row.state.is_final:
                    if self.plan.dry_run and not _runner_alive(row) and row.runner_pid:
                        self.skip(path, f"job {row.id}'s runner is gone: a real run first"
                                        " finalizes it as lost")
                else:
                    old = row.report_path if row.report_path == path else None
                    candidates.append(_Report(directory, name, job_type, st, row.ended_at or
                                              st.st_mtime, row, old))
                continue
            row = index.by_path.get(path)
            if row is not None:
                if row.state.is_final:
                    candidates.append(_Report(directory, name, job_type, st,
                                              row.ended_at or st.st_mtime, row, path))
                continue
            if index.protected(name):
                continue
            moved = index.moved.get((job_type, name))
            if moved is not None:
                self.leftover(directory, name, st, job_type, moved, candidates)
                continue
            candidates.append(_Report(directory, name, job_type, st, st.st_mtime, None, None))
        return candidates

    def select(self, candidates: list[_Report]) -> list[_Report]:
        plan = self.plan
        ordered = sorted(candidates, key=lambda r: (r.ts, r.name), reverse=True)
        if plan.keep is not None:
            ordered = ordered[plan.keep :]
        chosen = [r for r in ordered if self.old_enough(r.ts, plan.age_cutoff)]
        if plan.compress_only:
            chosen = [r for r in chosen if not r.name.endswith(".gz")]
        return sorted(chosen, key=lambda r: (r.ts, r.name))

    def leftover(
        self, directory: Dir, name: str, st: os.stat_result, job_type: str,
        moved: tuple[JobFiles, str], candidates: list[_Report],
    ) -> None:
        """The original of a report the registry already places elsewhere: an archive
        or compression that was interrupted before the original was removed."""
        row, where = moved
        path = directory.join(name)
        try:
            with ExitStack() as stack:
                target = _open_path(stack, where)
                original = stack.enter_context(directory.open_file(name))
                if target is None:
                    # The registry points at nothing: this file is the report.
                    candidates.append(_Report(directory, name, job_type, st,
                                              row.ended_at or st.st_mtime, row, where))
                    return
                same = archive.same_content(
                    archive.content(original, name.endswith(".gz")),
                    archive.content(target, where.endswith(".gz")),
                )
        except OSError as exc:
            self.error(path, exc)
            return
        if not same:
            self.skip(path, f"differs from job {row.id}'s recorded report {where}: left alone")
            return
        if not self.plan.dry_run:
            directory.unlink(name)
            directory.fsync()
        self.act(Action("repair", "report", path, where, row.id, st.st_size, 0,
                        "finished an interrupted cleanup"))

    def handle(self, index: _Index, codexw: Dir, report: _Report) -> None:
        plan = self.plan
        row = report.row
        is_gz = report.name.endswith(".gz")
        target_name = report.name if is_gz else report.name + ".gz"
        if plan.compress_only:
            kind, parts = "compress", ()
            where = report.dir.join(target_name)
        else:
            month = time.strftime("%Y-%m", time.localtime(report.ts))
            kind, parts = "archive", (ARCHIVE, month, report.type)
            where = os.path.join(codexw.path, *parts, target_name)
        action = Action(kind, "report", report.path, where, row.id if row else None,
                        report.st.st_size)
        try:
            if plan.dry_run:
                action.bytes_after = _estimate(report.dir, report.name, is_gz)
            else:
                with ExitStack() as stack:
                    target = report.dir
                    if parts:
                        target = codexw
                        for part in parts:
                            target = stack.enter_context(_sub(target, part, create=True))
                    final = self.copy(report.dir, report.name, target, target_name, is_gz,
                                      rename_clash=True, action=action)
                    if final is None:
                        return
                    action.dest = target.join(final)
                    if row is not None and report.registry_old is not None and not (
                        self.record_report(row, report.registry_old, action.dest)
                    ):
                        self.skip(report.path, f"job {row.id}'s record changed meanwhile:"
                                               " left in place")
                        return
                    _remove_original(report.dir, report.name)
        except OSError as exc:
            self.error(report.path, exc)
            return
        if row is not None and report.registry_old is not None and action.dest:
            index.moved_to(row, action.dest)
        self.act(action)

    def copy(
        self, src_dir: Dir, name: str, target: Dir, target_name: str, src_gz: bool, *,
        rename_clash: bool, action: Action,
    ) -> str | None:
        """Put a gzipped copy of `name` at `target_name` (or the next free name when a
        different file is there already); returns the name used."""
        with src_dir.open_file(name) as src:
            st = os.fstat(src.fileno())
            candidate = target_name
            for n in range(2, 1000):
                existing = target.lstat(candidate)
                if existing is None:
                    tmp = archive.write_copy(
                        target, src, compress=not src_gz, token=self.token,
                        name=name, mode=st.st_mode, mtime_ns=st.st_mtime_ns,
                    )
                    if _publish(target, tmp, candidate, replace=not rename_clash):
                        action.bytes_after = (target.lstat(candidate) or st).st_size
                        return candidate
                    src.seek(0)
                    continue  # someone else took the name meanwhile: look at it again
                if _same_file(target, candidate, src, src_gz):
                    action.kind = "repair"
                    action.note = "finished an interrupted cleanup"
                    action.bytes_after = 0
                    return candidate
                src.seek(0)
                if not rename_clash:
                    tmp = archive.write_copy(
                        target, src, compress=not src_gz, token=self.token,
                        name=name, mode=st.st_mode, mtime_ns=st.st_mtime_ns,
                    )
                    _publish(target, tmp, candidate, replace=True)
                    action.bytes_after = (target.lstat(candidate) or st).st_size
                    return candidate
                candidate = _numbered(target_name, n)
        self.error(src_dir.join(name), "too many archived files with this name")
        return None

    # -- archives ----------------------------------------------------------------------

    def archived(self, store_dir: Dir) -> Iterator[tuple[Dir, dict[str, os.stat_result]]]:
        """Each archive/YYYY-MM/<type>/ folder in scope with its files; empty ones go."""
        for month in store_dir.subdirs():
            if not MONTH_RE.fullmatch(month):
                continue
            try:
                with _sub(store_dir, month) as month_dir:
                    for job_type in month_dir.subdirs():
                        if self.plan.job_type is not None and job_type != self.plan.job_type:
                            continue
                        with _sub(month_dir, job_type) as type_dir:
                            files = type_dir.files()
                            self.stale_tmps(type_dir, files)
                            yield type_dir, files
                        if not self.plan.dry_run:
                            month_dir.rmdir_if_empty(job_type)
                if not self.plan.dry_run:
                    store_dir.rmdir_if_empty(month)
            except OSError as exc:
                self.error(store_dir.join(month), exc)

    def delete_archives(
        self, index: _Index, store_dir: Dir | None,
        types: dict[str, tuple[Dir, dict[str, os.stat_result]]],
    ) -> None:
        cutoff = self.plan.delete_cutoff
        for directory, _files in types.values():
            for name, st in sorted(directory.files().items()):  # again: some were compressed
                if name.endswith(SUFFIX + ".gz"):
                    self.delete_if_old(index, directory, name, st, cutoff)
        if store_dir is not None:
            for directory, files in self.archived(store_dir):
                for name, st in sorted(files.items()):
                    if name.endswith(".gz"):
                        self.delete_if_old(index, directory, name, st, cutoff)

    def delete_if_old(
        self, index: _Index, directory: Dir, name: str, st: os.stat_result, cutoff: float | None
    ) -> None:
        path = directory.join(name)
        row = index.by_path.get(path)
        temp = TEMP_RE.fullmatch(name)
        if temp and row is None:
            row = index.by_id.get(int(temp.group(1)))
            if row is None:
                return  # a TEMP report of a job this registry does not know: left alone
        if row is not None and not row.state.is_final:
            return
        if row is None and index.protected(name):
            return
        ts = row.ended_at if row is not None and row.ended_at else st.st_mtime
        if not self.old_enough(ts, cutoff):
            return
        self.delete_file(directory, name, row, "report", st)

    def delete_file(
        self, directory: Dir, name: str, row: JobFiles | None, what: str,
        st: os.stat_result | None = None,
    ) -> None:
        path = directory.join(name)
        size = st.st_size if st is not None else (directory.lstat(name) or _ZERO).st_size
        if not self.plan.dry_run:
            try:
                if row is not None:
                    if what == "report" and row.report_path == path:
                        self.record_report(row, path, None)
                    elif what == "log" and row.log_path == path:
                        self.record_log(row, path, None)
                directory.unlink(name)
            except OSError as exc:
                self.error(path, exc)
                return
        self.act(Action("delete", what, path, None, row.id if row else None, size, 0))

    # -- logs --------------------------------------------------------------------------

    def job_logs(self, rows: list[JobFiles]) -> None:
        """Compress (and, past --delete-archives-older, delete) the logs of finished jobs."""
        if self.logs is None:
            return
        plan = self.plan
        for row in rows:
            if not row.state.is_final or (plan.job_type is not None and row.type != plan.job_type):
                continue
            if plan.archive_step and self.log_due(row):
                for kind in LOG_KINDS:
                    if kind == "runner.log" and _runner_alive(row):
                        continue  # a runner lingers for retries: it still holds this file
                    self.compress_log(row, f"{row.id}.{kind}")
            if plan.delete_cutoff is not None and self.old_enough(row.ended_at, plan.delete_cutoff):
                for kind in LOG_KINDS:
                    name = f"{row.id}.{kind}.gz"
                    if name in self.log_files:
                        self.delete_file(self.logs, name, row, "log", self.log_files.pop(name))

    def log_due(self, row: JobFiles) -> bool:
        """A job's logs follow its report: compressed once the report is archived or
        compressed; a job without a report file goes by its end time."""
        report = row.report_path
        if report is not None and (report.endswith(".gz") or f"/.codexw/{ARCHIVE}/" in report):
            return self.old_enough(row.ended_at, None)
        if report is not None and os.path.lexists(report):
            return False
        if self.plan.age_cutoff is None:
            return False
        return self.old_enough(row.ended_at, self.plan.age_cutoff)

    def compress_log(self, row: JobFiles | None, name: str) -> None:
        assert self.logs is not None
        st = self.log_files.get(name)
        path = self.logs.join(name)
        if st is None:
            gz = path + ".gz"
            if row is not None and row.log_path == path and name + ".gz" in self.log_files:
                if not self.plan.dry_run:
                    self.record_log(row, path, gz)
                self.act(Action("repair", "log", path, gz, row.id, note="registry pointed at"
                                " the uncompressed log"))
            return
        action = Action("compress", "log", path, path + ".gz", row.id if row else None,
                        st.st_size)
        try:
            if self.plan.dry_run:
                action.bytes_after = _estimate(self.logs, name, False)
                self.act(action)
                return
            final = self.copy(self.logs, name, self.logs, name + ".gz", False,
                              rename_clash=False, action=action)
            if final is None:
                return
            if row is not None and row.log_path == path:
                self.record_log(row, path, action.dest)
            _remove_original(self.logs, name)
        except OSError as exc:
            self.error(path, exc)
            return
        self.log_files.pop(name, None)
        self.log_files[name + ".gz"] = self.logs.lstat(name + ".gz") or st
        self.act(action)

    def orphan_logs(self) -> None:
        """Logs of jobs the registry does not know (any more): by their mtime."""
        if self.logs is None:
            return
        known = set(self.store.job_ids()) | self.known_ids
        for name, st in sorted(self.log_files.items()):
            match = LOG_RE.fullmatch(name)
            if match is None or int(match.group(1)) in known:
                continue
            if match.group(3):
                if self.plan.delete_cutoff is not None and self.old_enough(
                    st.st_mtime, self.plan.delete_cutoff
                ):
                    self.delete_file(self.logs, name, None, "log", st)
            elif self.plan.archive_step and self.plan.age_cutoff is not None and (
                self.old_enough(st.st_mtime, self.plan.age_cutoff)
            ):
                self.compress_log(None, name)


class _Index:
    """One project's registry rows, by id, by report path, and where reports went."""

    def __init__(self, project: str, rows: list[JobFiles]) -> None:
        self.project = project
        self._rows = {r.id: r for r in rows}
        self.by_id = self._rows
        self.by_path: dict[str, JobFiles] = {}
        self.moved: dict[tuple[str, str], tuple[JobFiles, str]] = {}
        self.prefixes: tuple[str, ...] = ()
        prefixes = []
        for row in rows:
            if row.report_path:
                self._place(row, row.report_path)
            if not row.state.is_final:
                when = stamp(row.queued_at)
                prefixes.append(f"{when}_J{row.id}_")
                prefixes.append(f"{when}_J{row.id}{SUFFIX}")
                if row.runner_pid:
                    prefixes.append(f"{when}_{row.runner_pid}_")
        self.prefixes = tuple(prefixes)

    def _place(self, row: JobFiles, path: str) -> None:
        self.by_path[path] = row
        if not row.state.is_final:
            return
        base = os.path.join(self.project, ".codexw")
        rel = os.path.relpath(path, base).split(os.sep)
        if len(rel) == 4 and rel[0] == ARCHIVE and rel[3].endswith(".gz"):
            self.moved[(rel[2], rel[3])] = (row, path)
            self.moved[(rel[2], rel[3][:-3])] = (row, path)
        elif len(rel) == 2 and rel[1].endswith(".gz"):
            self.moved[(rel[0], rel[1][:-3])] = (row, path)

    def moved_to(self, row: JobFiles, path: str) -> None:
        updated = replace(row, report_path=path)
        self._rows[row.id] = updated
        self._place(updated, path)

    def protected(self, name: str) -> bool:
        """A final report a still-running job may have just written (not yet recorded)."""
        return name.startswith(self.prefixes) if self.prefixes else False

    def rows(self) -> list[JobFiles]:
        return list(self._rows.values())


_ZERO = os.stat_result((0,) * 10)


def _sub(directory: Dir, name: str, create: bool = False) -> Dir:
    sub = directory.sub(name, create=create)
    if sub is None:
        raise FileNotFoundError(2, "No such file or directory", directory.join(name))
    return sub


def _open_path(stack: ExitStack, path: str):  # type: ignore[no-untyped-def]
    """Open a recorded path without following links in its last component."""
    parent, name = os.path.split(path)
    try:
        directory = stack.enter_context(Dir.open(parent))
    except FileNotFoundError:
        return None
    if directory.lstat(name) is None:
        return None
    return stack.enter_context(directory.open_file(name))


def _same_file(directory: Dir, name: str, src, src_gz: bool) -> bool:  # type: ignore[no-untyped-def]
    try:
        with directory.open_file(name) as existing:
            return archive.same_content(
                archive.content(src, src_gz), archive.content(existing, name.endswith(".gz"))
            )
    except OSError:
        return False


def _estimate(directory: Dir, name: str, is_gz: bool) -> int:
    with directory.open_file(name) as fh:
        return os.fstat(fh.fileno()).st_size if is_gz else archive.gzip_size(fh)


def _numbered(name: str, n: int) -> str:
    gz = name.endswith(".gz")
    base = name[:-3] if gz else name
    numbered = base[: -len(SUFFIX)] + f"_{n}{SUFFIX}" if base.endswith(SUFFIX) else f"{base}.{n}"
    return numbered + (".gz" if gz else "")


def _runner_alive(row: JobFiles) -> bool:
    return process.is_alive(row.runner_pid, row.runner_start)


# The steps of one move, as functions so that tests can interrupt between them.


def _publish(directory: Dir, tmp: str, name: str, replace: bool) -> bool:
    return archive.publish(directory, tmp, name, replace=replace)


def _remove_original(directory: Dir, name: str) -> None:
    directory.unlink(name)
    directory.fsync()
