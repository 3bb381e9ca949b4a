"""The file work of `codexw cleanup`, in batches.

For each batch of files: every copy is gzipped into a new unnamed file and linked into
place (never over another file); one durability barrier (syncfs) covers the batch;
one registry transaction points the jobs at the copies; only then are the originals
removed. Copies and removals of a batch run in a few threads: on journalling
filesystems each one mostly waits for the journal, and waits overlap. A run that stops anywhere leaves each report in place, copied, or both, and
the next run recognises equal copies and finishes (a damaged copy, which only a crash
of the machine can leave, is rewritten; a different file is never overwritten).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO

from codexw.core import archive, paths, process
from codexw.core.archive import Dir
from codexw.core.models import TYPE_NAME_RE
from codexw.core.naming import REPORT_SUFFIX as SUFFIX
from codexw.core.naming import stamp
from codexw.core.store import JobFiles, Store
from codexw.services.cleanup import (
    ARCHIVE,
    SETTLE,
    Action,
    CleanupResult,
    Plan,
    Skipped,
)

BATCH = 500
THREADS = 8
LOG_KINDS = ("jsonl", "stderr.log", "runner.log")
LOG_RE = re.compile(r"(\d+)\.(jsonl|stderr\.log|runner\.log)(\.gz)?")
TEMP_RE = re.compile(r".*_TEMP_(\d+)_codex_task\.md(?:\.gz)?")
MONTH_RE = re.compile(r"\d{4}-\d{2}")

Entry = os.DirEntry[str] | os.stat_result


def _stat(entry: Entry) -> os.stat_result:
    return entry.stat(follow_symlinks=False) if isinstance(entry, os.DirEntry) else entry


@dataclass
class _Report:
    """A finished report file that may be archived, compressed or deleted."""

    dir: Dir
    name: str
    type: str
    entry: Entry
    ts: float  # the job's end, or the file's mtime if the registry does not know it
    row: JobFiles | None
    registry_old: str | None  # what the registry says, when this file is the job's report

    @property
    def path(self) -> str:
        return self.dir.join(self.name)


@dataclass
class _Move:
    """One file to copy; the registry and the removal of the original follow at the
    flush, for the whole batch."""

    action: Action
    src: Dir
    name: str
    target: Dir
    target_name: str
    src_gz: bool
    rename_clash: bool  # reports: a different file at the name → the next free name
    row: JobFiles | None
    registry_old: str | None
    log: bool
    index: _Index | None = None
    final: str | None = None
    problem: str | None = None


class Worker:
    def __init__(self, store: Store, plan: Plan, result: CleanupResult) -> None:
        self.store = store
        self.plan = plan
        self.result = result
        self.token = f"{os.getpid()}{secrets.token_hex(3)}"
        self.logs: Dir | None = None
        self.log_files: dict[str, Entry] = {}
        self.known_ids: set[int] = set()
        self.pending: list[_Move] = []
        self.deletes: list[tuple[Action, Dir, str, JobFiles | None]] = []
        self.targets: dict[str, Dir] = {}

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
                index = self.project(project)
                self.known_ids.update(index.by_id)
                self.job_logs(index)
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

    def stale_tmps(self, directory: Dir, files: dict[str, Entry]) -> None:
        """Temporary files of a cleanup that was interrupted (we hold the lock)."""
        for name in [n for n in files if archive.is_stale_tmp(n, self.token)]:
            size = _stat(files.pop(name)).st_size
            if not self.plan.dry_run:
                directory.unlink(name)
            self.act(Action("repair", "tmp", directory.join(name), bytes_before=size,
                            note="leftover of an interrupted cleanup"))

    def target(self, top: Dir, parts: tuple[str, ...], stack: ExitStack, create: bool) -> Dir:
        """A folder below `top` (created if asked), kept open for this project's batch."""
        key = os.path.join(top.path, *parts)
        if key not in self.targets:
            directory = top
            for part in parts:
                sub = directory.sub(part, create=create)
                if sub is None:
                    raise FileNotFoundError(2, "No such file or directory", directory.join(part))
                directory = stack.enter_context(sub)
            self.targets[key] = directory
        return self.targets[key]

    def record(self, row: JobFiles, log: bool, old: str | None, new: str | None) -> bool:
        with self.store.transaction(notify_waiters=False):
            return _move_path(self.store, row, log, old, new)

    # -- batches -----------------------------------------------------------------------

    def queue(self, move: _Move) -> None:
        self.pending.append(move)
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        moves, self.pending = self.pending, []
        if not moves:
            return
        with ThreadPoolExecutor(min(THREADS, len(moves))) as pool:
            list(pool.map(self.copy, moves))
            done = []
            for move in moves:
                if move.problem is not None:
                    self.error(move.action.path, move.problem)
                elif move.final is not None:
                    move.action.dest = move.target.join(move.final)
                    done.append(move)
            if not done:
                return
            try:
                _barrier(list({id(m.target): m.target for m in done}.values()))
            except OSError as exc:
                for move in done:
                    self.error(move.action.path, f"copy not made durable: {exc.strerror or exc}")
                return
            kept = _commit(self.store, done)
            for move in done:
                if id(move) in kept:
                    self.skip(move.action.path, "its job's record changed meanwhile: left in place")
            done = [m for m in done if id(m) not in kept]
            removed = list(pool.map(_remove_quietly, done))
        for move, problem in zip(done, removed, strict=True):
            if problem is not None:
                self.error(move.action.path, problem)
                continue
            if move.log:
                self.log_files.pop(move.name, None)
                packed = move.target.lstat(move.final or "")
                if packed is not None and move.final:
                    self.log_files[move.final] = packed
            elif move.row is not None and move.index is not None and move.action.dest:
                move.index.moved_to(move.row, move.action.dest)
            self.act(move.action)
        for directory in {id(m.src): m.src for m in done}.values():
            directory.fsync()

    def copy(self, move: _Move) -> None:
        """(In a pool thread.) Put a gzipped copy of the file at its target name, or at
        the next free name when a different file holds it; an equal copy already there
        (an interrupted run) is reused, a damaged one rewritten. Sets move.final."""
        action = move.action
        try:
            with move.src.open_file(move.name) as src:
                st = os.fstat(src.fileno())
                action.bytes_before = st.st_size
                candidate = move.target_name
                for n in range(2, 1000):
                    staged = archive.write_copy(
                        move.target, src, compress=not move.src_gz, token=self.token,
                        mode=st.st_mode, mtime_ns=st.st_mtime_ns, durable=False,
                    )
                    if _publish(move.target, staged, candidate, replace=False):
                        action.bytes_after = staged.size
                        move.final = candidate
                        return
                    src.seek(0)
                    found = _compare(move.target, candidate, src, move.src_gz)
                    src.seek(0)
                    if found == "same":
                        action.kind, action.note = "repair", "finished an interrupted cleanup"
                        action.bytes_after = 0
                        move.final = candidate
                        return
                    if found == "different" and move.rename_clash:
                        candidate = _numbered(move.target_name, n)
                        continue
                    staged = archive.write_copy(
                        move.target, src, compress=not move.src_gz, token=self.token,
                        mode=st.st_mode, mtime_ns=st.st_mtime_ns, durable=False,
                    )
                    _publish(move.target, staged, candidate, replace=True)
                    action.bytes_after = staged.size
                    move.final = candidate
                    return
            move.problem = "too many archived files with this name"
        except OSError as exc:
            move.problem = exc.strerror or str(exc)

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
                    entry = self.log_files.pop(name, None)
                    if entry is not None and self.logs is not None:
                        self.delete_file(self.logs, name, None, "log", entry)
        self.flush_deletes()

    # -- reports -----------------------------------------------------------------------

    def project(self, project: str) -> _Index:
        """Archive/compress/delete one project's reports; returns its registry rows."""
        self.targets = {}
        with ExitStack() as stack:
            try:
                top = stack.enter_context(Dir.open(project))
                codexw = top.sub(".codexw")
            except OSError as exc:
                self.error(os.path.join(project, ".codexw"), exc)
                return _Index(project, self.store.job_files(project))
            if codexw is None:
                return _Index(project, self.store.job_files(project))
            stack.enter_context(codexw)
            types: dict[str, tuple[Dir, dict[str, Entry]]] = {}
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
                    types[name] = (stack.enter_context(sub), sub.files())
            try:
                store_dir = codexw.sub(ARCHIVE)
            except OSError as exc:
                self.error(codexw.join(ARCHIVE), exc)
                store_dir = None
            if store_dir is not None:
                stack.enter_context(store_dir)
                self.targets[store_dir.path] = store_dir
            # The registry is read after the listing: a report written since then
            # belongs to a job the snapshot still sees as running, and is left alone.
            index = _Index(project, self.store.job_files(project))
            for job_type, (directory, files) in types.items():
                self.stale_tmps(directory, files)
                candidates = self.classify(index, job_type, directory, files)
                self.relink(index, codexw, job_type, files, stack)
                if self.plan.archive_step:
                    for report in self.select(candidates):
                        self.handle(index, codexw, report, stack)
            self.flush()
            if self.plan.delete_cutoff is not None:
                self.delete_archives(index, store_dir, types)
            elif store_dir is not None and not self.plan.dry_run:
                for _dir, _files in self.archived(store_dir):
                    pass  # only drops temporary files of an interrupted cleanup
            self.targets = {}
            return index

    def classify(
        self, index: _Index, job_type: str, directory: Dir, files: dict[str, Entry]
    ) -> list[_Report]:
        candidates: list[_Report] = []
        for name, entry in files.items():
            if not (name.endswith(SUFFIX) or name.endswith(SUFFIX + ".gz")):
                continue
            try:
                self.classify_one(index, job_type, directory, name, entry, candidates)
            except FileNotFoundError:
                continue  # gone since the listing (a runner replaced its TEMP report)
            except OSError as exc:
                self.error(directory.join(name), exc)
        return candidates

    def classify_one(
        self, index: _Index, job_type: str, directory: Dir, name: str, entry: Entry,
        candidates: list[_Report],
    ) -> None:
        path = directory.join(name)
        temp = TEMP_RE.fullmatch(name)
        if temp:
            row = index.by_id.get(int(temp.group(1)))
            if row is None or row.type != job_type:
                self.skip(path, "TEMP report of a job this registry does not know: left alone")
            elif not row.state.is_final:
                if self.plan.dry_run and row.runner_pid and not _runner_alive(row):
                    self.skip(path, f"job {row.id}'s runner is gone: a real run first"
                                    " finalizes it as lost")
            else:
                old = row.report_path if row.report_path == path else None
                ts = row.ended_at or _stat(entry).st_mtime
                candidates.append(_Report(directory, name, job_type, entry, ts, row, old))
            return
        row = index.by_path.get(path)
        if row is not None:
            if row.state.is_final:
                ts = row.ended_at or _stat(entry).st_mtime
                candidates.append(_Report(directory, name, job_type, entry, ts, row, path))
            return
        if index.protected(name):
            return
        moved = index.moved.get((job_type, name))
        if moved is not None:
            self.leftover(directory, name, entry, job_type, moved, candidates)
            return
        ts = _stat(entry).st_mtime
        candidates.append(_Report(directory, name, job_type, entry, ts, None, None))

    def relink(
        self, index: _Index, codexw: Dir, job_type: str, files: dict[str, Entry],
        stack: ExitStack,
    ) -> None:
        """A finished job whose recorded report is gone while its copy exists (the
        machine stopped before the registry's last write was durable): point at it."""
        prefix = codexw.join(job_type) + os.sep
        for row in index.rows():
            path = index.report_path(row)
            if not path or not path.startswith(prefix) or not row.state.is_final:
                continue
            name = path[len(prefix):]
            if name in files or os.sep in name or name.endswith(".gz"):
                continue
            month = time.strftime("%Y-%m", time.localtime(row.ended_at or 0))
            for parts in ((job_type,), (ARCHIVE, month, job_type)):
                try:
                    directory = self.target(codexw, parts, stack, create=False)
                    with directory.open_file(name + ".gz") as fh:
                        if not archive.intact_gzip(fh):
                            continue
                except OSError:
                    continue
                where = directory.join(name + ".gz")
                if self.plan.dry_run or self.record(row, False, path, where):
                    index.moved_to(row, where)
                    self.act(Action("repair", "report", path, where, row.id,
                                    note="registry pointed at the removed original"))
                break

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
        self, directory: Dir, name: str, entry: Entry, job_type: str,
        moved: tuple[JobFiles, str], candidates: list[_Report],
    ) -> None:
        """The original of a report the registry already places elsewhere: a run that
        stopped after recording the copy and before removing the original."""
        row, where = moved
        path = directory.join(name)
        try:
            with ExitStack() as stack:
                target = _open_path(stack, where)
                original = stack.enter_context(directory.open_file(name))
                if target is None:  # the registry points at nothing: this is the report
                    ts = row.ended_at or _stat(entry).st_mtime
                    candidates.append(_Report(directory, name, job_type, entry, ts, row, where))
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
        size = _stat(entry).st_size
        if not self.plan.dry_run:
            _remove_original(directory, name)
        self.act(Action("repair", "report", path, where, row.id, size, 0,
                        "finished an interrupted cleanup"))

    def handle(self, index: _Index, codexw: Dir, report: _Report, stack: ExitStack) -> None:
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
        action = Action(kind, "report", report.path, where, row.id if row else None)
        try:
            if plan.dry_run:
                action.bytes_before, action.bytes_after = _estimate(report.dir, report.name, is_gz)
                self.act(action)
                if row is not None and report.registry_old is not None:
                    index.moved_to(row, where)
                return
            target = self.target(codexw, parts, stack, create=True) if parts else report.dir
        except OSError as exc:
            self.error(report.path, exc)
            return
        self.queue(_Move(action, report.dir, report.name, target, target_name, is_gz, True,
                         row, report.registry_old, False, index))

    # -- archives ----------------------------------------------------------------------

    def archived(self, store_dir: Dir):  # type: ignore[no-untyped-def]
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
        self, index: _Index, store_dir: Dir | None, types: dict[str, tuple[Dir, dict[str, Entry]]]
    ) -> None:
        cutoff = self.plan.delete_cutoff
        for directory, _files in types.values():
            for name, entry in sorted(directory.files().items()):  # again: some were compressed
                if name.endswith(SUFFIX + ".gz"):
                    self.delete_if_old(index, directory, name, entry, cutoff)
        self.flush_deletes()
        if store_dir is not None:
            for directory, files in self.archived(store_dir):
                for name, entry in sorted(files.items()):
                    if name.endswith(".gz"):
                        self.delete_if_old(index, directory, name, entry, cutoff)
                self.flush_deletes()  # before the folder closes (and goes, if empty)

    def delete_if_old(
        self, index: _Index, directory: Dir, name: str, entry: Entry, cutoff: float | None
    ) -> None:
        row = index.by_path.get(directory.join(name))
        temp = TEMP_RE.fullmatch(name)
        if temp and row is None:
            row = index.by_id.get(int(temp.group(1)))
            if row is None:
                return  # a TEMP report of a job this registry does not know: left alone
        if row is not None and not row.state.is_final:
            return
        if row is None and index.protected(name):
            return
        ts = row.ended_at if row is not None and row.ended_at else _stat(entry).st_mtime
        if self.old_enough(ts, cutoff):
            self.delete_file(directory, name, row, "report", entry)

    def delete_file(
        self, directory: Dir, name: str, row: JobFiles | None, what: str, entry: Entry
    ) -> None:
        """Delete now (dry run: say so) or at the next flush_deletes, in a batch."""
        path = directory.join(name)
        try:
            size = _stat(entry).st_size
        except OSError as exc:
            self.error(path, exc)
            return
        action = Action("delete", what, path, None, row.id if row else None, size, 0)
        if self.plan.dry_run:
            self.act(action)
        else:
            self.deletes.append((action, directory, name, row))

    def flush_deletes(self) -> None:
        """The registry forgets the files (one transaction), then they go (in threads):
        a run that stops between leaves files nobody points at, deleted next time."""
        deletes, self.deletes = self.deletes, []
        if not deletes:
            return
        with self.store.transaction(notify_waiters=False):
            for action, _directory, _name, row in deletes:
                if row is not None:
                    _move_path(self.store, row, action.what == "log", action.path, None)
        with ThreadPoolExecutor(min(THREADS, len(deletes))) as pool:
            problems = list(pool.map(lambda d: _unlink_quietly(d[1], d[2]), deletes))
        for (action, *_rest), problem in zip(deletes, problems, strict=True):
            if problem is None:
                self.act(action)
            else:
                self.error(action.path, problem)

    # -- logs --------------------------------------------------------------------------

    def job_logs(self, index: _Index) -> None:
        """Compress the logs of finished jobs (they follow their reports), then delete
        compressed logs past --delete-archives-older."""
        if self.logs is None:
            return
        plan = self.plan
        mine = [r for r in index.rows() if r.state.is_final
                and (plan.job_type is None or r.type == plan.job_type)]
        if plan.archive_step:
            for row in mine:
                if self.log_due(index.report_path(row), row):
                    for kind in LOG_KINDS:
                        if kind == "runner.log" and _runner_alive(row):
                            continue  # a runner lingers for retries: it still holds this file
                        self.compress_log(row, f"{row.id}.{kind}")
            self.flush()
        if plan.delete_cutoff is not None:
            for row in mine:
                if self.old_enough(row.ended_at, plan.delete_cutoff):
                    for kind in LOG_KINDS:
                        name = f"{row.id}.{kind}.gz"
                        entry = self.log_files.pop(name, None)
                        if entry is not None:
                            self.delete_file(self.logs, name, row, "log", entry)
            self.flush_deletes()

    def log_due(self, report: str | None, row: JobFiles) -> bool:
        """Logs follow the report: compressed once it is archived or compressed; a job
        without a report file goes by its end time."""
        if report is not None and (report.endswith(".gz") or f"/.codexw/{ARCHIVE}/" in report):
            return self.old_enough(row.ended_at, None)
        if report is not None and os.path.lexists(report):
            return False
        if self.plan.age_cutoff is None:
            return False
        return self.old_enough(row.ended_at, self.plan.age_cutoff)

    def compress_log(self, row: JobFiles | None, name: str) -> None:
        assert self.logs is not None
        path = self.logs.join(name)
        if name not in self.log_files:
            gz = path + ".gz"
            if row is not None and row.log_path == path and name + ".gz" in self.log_files:
                if not self.plan.dry_run:
                    self.record(row, True, path, gz)
                self.act(Action("repair", "log", path, gz, row.id,
                                note="registry pointed at the removed original"))
            return
        action = Action("compress", "log", path, path + ".gz", row.id if row else None)
        if self.plan.dry_run:
            try:
                action.bytes_before, action.bytes_after = _estimate(self.logs, name, False)
            except OSError as exc:
                self.error(path, exc)
                return
            self.act(action)
            return
        old = path if row is not None and row.log_path == path else None
        self.queue(_Move(action, self.logs, name, self.logs, name + ".gz", False, False,
                         row, old, True))

    def orphan_logs(self) -> None:
        """Logs of jobs the registry does not know (any more): by their mtime."""
        if self.logs is None:
            return
        known = set(self.store.job_ids()) | self.known_ids
        for name, entry in sorted(self.log_files.items()):
            match = LOG_RE.fullmatch(name)
            if match is None or int(match.group(1)) in known:
                continue
            mtime = _stat(entry).st_mtime
            if match.group(3):
                if self.plan.delete_cutoff is not None and self.old_enough(
                    mtime, self.plan.delete_cutoff
                ):
                    self.delete_file(self.logs, name, None, "log", entry)
            elif self.plan.archive_step and self.plan.age_cutoff is not None and (
                self.old_enough(mtime, self.plan.age_cutoff)
            ):
                self.compress_log(None, name)
        self.flush()
        self.flush_deletes()


class _Index:
    """One project's registry rows, by id, by report path, and where reports went."""

    def __init__(self, project: str, rows: list[JobFiles]) -> None:
        self.project = project
        self.by_id = {r.id: r for r in rows}
        self.by_path: dict[str, JobFiles] = {}
        self.moved: dict[tuple[str, str], tuple[JobFiles, str]] = {}
        self.base = os.path.join(project, ".codexw")
        self.reports: dict[int, str] = {}  # where this run moved reports
        prefixes = []
        for row in rows:
            if row.report_path:
                self._place(row, row.report_path)
            if not row.state.is_final:
                when = stamp(row.queued_at)
                prefixes += [f"{when}_J{row.id}_", f"{when}_J{row.id}{SUFFIX}"]
                if row.runner_pid:
                    prefixes.append(f"{when}_{row.runner_pid}_")
        self.prefixes = tuple(prefixes)

    def _place(self, row: JobFiles, path: str) -> None:
        self.by_path[path] = row
        if not row.state.is_final or not path.startswith(self.base + os.sep):
            return
        rel = path[len(self.base) + 1 :].split(os.sep)
        if len(rel) == 4 and rel[0] == ARCHIVE and rel[3].endswith(".gz"):
            self.moved[(rel[2], rel[3])] = (row, path)
            self.moved[(rel[2], rel[3][:-3])] = (row, path)
        elif len(rel) == 2 and rel[1].endswith(".gz"):
            self.moved[(rel[0], rel[1][:-3])] = (row, path)

    def moved_to(self, row: JobFiles, path: str) -> None:
        self.reports[row.id] = path
        self._place(row, path)

    def report_path(self, row: JobFiles) -> str | None:
        return self.reports.get(row.id, row.report_path)

    def protected(self, name: str) -> bool:
        """A final report a still-running job may have just written (not yet recorded)."""
        return bool(self.prefixes) and name.startswith(self.prefixes)

    def rows(self) -> list[JobFiles]:
        return list(self.by_id.values())


def _sub(directory: Dir, name: str) -> Dir:
    sub = directory.sub(name)
    if sub is None:
        raise FileNotFoundError(2, "No such file or directory", directory.join(name))
    return sub


def _open_path(stack: ExitStack, path: str) -> IO[bytes] | None:
    """Open a recorded path for reading, without following a link in its last part."""
    parent, name = os.path.split(path)
    try:
        directory = stack.enter_context(Dir.open(parent))
    except FileNotFoundError:
        return None
    if directory.lstat(name) is None:
        return None
    return stack.enter_context(directory.open_file(name))


def _compare(directory: Dir, name: str, src: IO[bytes], src_gz: bool) -> str:
    """same | different | damaged (a gzip file cut short: what a machine crash leaves)."""
    try:
        with directory.open_file(name) as existing:
            if archive.same_content(archive.content(src, src_gz), archive.content(existing, True)):
                return "same"
            existing.seek(0)
            return "different" if archive.intact_gzip(existing) else "damaged"
    except OSError:
        return "different"  # not a regular file (a link, a folder): never replaced


def _estimate(directory: Dir, name: str, is_gz: bool) -> tuple[int, int]:
    with directory.open_file(name) as fh:
        size = os.fstat(fh.fileno()).st_size
        return size, size if is_gz else archive.gzip_size(fh)


def _numbered(name: str, n: int) -> str:
    gz = name.endswith(".gz")
    base = name[:-3] if gz else name
    numbered = base[: -len(SUFFIX)] + f"_{n}{SUFFIX}" if base.endswith(SUFFIX) else f"{base}.{n}"
    return numbered + (".gz" if gz else "")


def _runner_alive(row: JobFiles) -> bool:
    return process.is_alive(row.runner_pid, row.runner_start)


def _move_path(store: Store, row: JobFiles, log: bool, old: str | None, new: str | None) -> bool:
    if log:
        return store.move_log(row.id, old, new)
    return store.move_report(row.id, old, new)


# The steps of a batch, as functions so that tests can stop a run between them.


def _publish(directory: Dir, staged: archive.Staged, name: str, replace: bool) -> bool:
    return archive.publish(directory, staged, name, replace=replace, durable=False)


def _barrier(targets: list[Dir]) -> None:
    archive.sync_filesystems(targets)


def _commit(store: Store, moves: list[_Move]) -> set[int]:
    """Point the registry at the copies, in one transaction; returns the moves whose
    job record changed meanwhile (their originals stay)."""
    kept: set[int] = set()
    with store.transaction(notify_waiters=False):
        for move in moves:
            if move.row is not None and move.registry_old is not None and not _move_path(
                store, move.row, move.log, move.registry_old, move.action.dest
            ):
                kept.add(id(move))
    return kept


def _remove_original(directory: Dir, name: str) -> None:
    directory.unlink(name)


def _unlink_quietly(directory: Dir, name: str) -> str | None:
    try:
        directory.unlink(name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _remove_quietly(move: _Move) -> str | None:
    """(In a pool thread.) Remove a move's original; the problem, if any."""
    try:
        _remove_original(move.src, move.name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
