"""One project's reports: which are finished, which to archive or compress, and the
repairs an interrupted run needs."""

from __future__ import annotations

import os
from contextlib import ExitStack

from codexw.core import naming, process
from codexw.core.models import TYPE_NAME_RE
from codexw.core.store import JobFiles
from codexw.services.cleanup import copies, retention
from codexw.services.cleanup.context import Context
from codexw.services.cleanup.dirs import Dir, Entry, entry_stat, open_recorded
from codexw.services.cleanup.index import ProjectIndex
from codexw.services.cleanup.mover import Move
from codexw.services.cleanup.result import Action
from codexw.services.cleanup.retention import Candidate


def runner_alive(row: JobFiles) -> bool:
    return process.is_alive(row.runner_pid, row.runner_start)


class ProjectPass:
    """Archive/compress/delete one project's reports, with its folders kept open."""

    def __init__(self, ctx: Context, project: str) -> None:
        self.ctx = ctx
        self.project = project
        self.targets: dict[str, Dir] = {}
        self._parts: dict[tuple[int, str], tuple[str, ...]] = {}
        self.stack = ExitStack()

    def run(self) -> ProjectIndex:
        """Returns the project's registry rows (its logs follow)."""
        with self.stack:
            try:
                return self._run()
            finally:
                self.ctx.mover.close()  # no removal outlives the folders it works in

    def _run(self) -> ProjectIndex:
        ctx = self.ctx
        try:
            top = self.stack.enter_context(Dir.open(self.project))
            codexw = top.sub(".codexw")
        except OSError as exc:
            ctx.result.error(os.path.join(self.project, ".codexw"), exc)
            return ProjectIndex(self.project, ctx.store.job_files(self.project))
        if codexw is None:
            return ProjectIndex(self.project, ctx.store.job_files(self.project))
        self.stack.enter_context(codexw)
        types = self.type_dirs(codexw)
        try:
            store_dir = codexw.sub(naming.ARCHIVE_DIR)
        except OSError as exc:
            ctx.result.error(codexw.join(naming.ARCHIVE_DIR), exc)
            store_dir = None
        if store_dir is not None:
            self.stack.enter_context(store_dir)
            self.targets[store_dir.path] = store_dir
        # The registry is read after the listing: a report written since then
        # belongs to a job the snapshot still sees as running, and is left alone.
        index = ProjectIndex(self.project, ctx.store.job_files(self.project))
        for job_type, (directory, files) in types.items():
            ctx.stale_tmps(directory, files)
            candidates = self.classify(index, job_type, directory, files)
            self.relink(index, codexw, job_type, files)
            if ctx.plan.archive_step:
                for report in retention.select(ctx.plan, candidates, ctx.result):
                    self.handle(index, codexw, report)
        ctx.mover.flush()  # while the target folders are open
        if ctx.plan.delete_cutoff is not None:
            retention.delete_archives(ctx, index, store_dir, [d for d, _ in types.values()])
        elif store_dir is not None and not ctx.plan.dry_run:
            retention.drop_stale_tmps(ctx, store_dir)
        return index

    def type_dirs(self, codexw: Dir) -> dict[str, tuple[Dir, dict[str, Entry]]]:
        types: dict[str, tuple[Dir, dict[str, Entry]]] = {}
        for name in codexw.subdirs():
            if name == naming.ARCHIVE_DIR or not TYPE_NAME_RE.fullmatch(name):
                continue
            if not self.ctx.plan.in_scope(name):
                continue
            try:
                sub = codexw.sub(name)
            except OSError as exc:
                self.ctx.result.error(codexw.join(name), exc)
                continue
            if sub is not None:
                types[name] = (self.stack.enter_context(sub), dict(sub.files()))
        return types

    def archive_parts(self, ts: float, job_type: str) -> tuple[str, ...]:
        """naming.archive_parts, remembered per quarter hour: local time changes its
        offset (and so a month its first instant) only on a quarter hour."""
        key = (int(ts // 900), job_type)
        parts = self._parts.get(key)
        if parts is None:
            parts = self._parts[key] = naming.archive_parts(ts, job_type)
        return parts

    def target(self, top: Dir, parts: tuple[str, ...], create: bool) -> Dir:
        """A folder below `top` (created if asked), kept open for this project's batch."""
        key = "/".join((top.path, *parts))
        if key not in self.targets:
            directory = top
            for part in parts:
                sub = directory.sub(part, create=create)
                if sub is None:
                    raise FileNotFoundError(2, "No such file or directory", directory.join(part))
                directory = self.stack.enter_context(sub)
            self.targets[key] = directory
        return self.targets[key]

    # -- which files are finished reports ----------------------------------------------------

    def classify(
        self, index: ProjectIndex, job_type: str, directory: Dir, files: dict[str, Entry]
    ) -> list[Candidate]:
        candidates: list[Candidate] = []
        for name, entry in files.items():
            if not naming.is_report(name):
                continue
            try:
                self.classify_one(index, job_type, directory, name, entry, candidates)
            except FileNotFoundError:
                continue  # gone since the listing (a runner replaced its TEMP report)
            except OSError as exc:
                self.ctx.result.error(directory.join(name), exc)
        return candidates

    def classify_one(
        self, index: ProjectIndex, job_type: str, directory: Dir, name: str, entry: Entry,
        candidates: list[Candidate],
    ) -> None:
        result, path = self.ctx.result, directory.join(name)
        temp_of = naming.temp_report_job(name)
        if temp_of is not None:
            row = index.by_id.get(temp_of)
            if row is None or row.type != job_type:
                result.skip(path, "TEMP report of a job this registry does not know: left alone")
            elif not row.state.is_final:
                if self.ctx.plan.dry_run and row.runner_pid and not runner_alive(row):
                    result.skip(path, f"job {row.id}'s runner is gone: a real run first"
                                      " finalizes it as lost")
            else:
                old = row.report_path if row.report_path == path else None
                ts = row.ended_at or entry_stat(entry).st_mtime
                candidates.append(Candidate(directory, name, job_type, entry, ts, row, old))
            return
        row = index.by_path.get(path)
        if row is not None:
            if row.state.is_final:
                ts = row.ended_at or entry_stat(entry).st_mtime
                candidates.append(Candidate(directory, name, job_type, entry, ts, row, path))
            return
        if index.protected(name):
            return
        moved = index.moved.get((job_type, name))
        if moved is not None:
            self.leftover(directory, name, entry, job_type, moved, candidates)
            return
        ts = entry_stat(entry).st_mtime
        candidates.append(Candidate(directory, name, job_type, entry, ts, None, None))

    # -- repairs -------------------------------------------------------------------------------

    def relink(
        self, index: ProjectIndex, codexw: Dir, job_type: str, files: dict[str, Entry]
    ) -> None:
        """A finished job whose recorded report is gone while its copy exists (the
        machine stopped before the registry's last write was durable): point at it."""
        ctx = self.ctx
        prefix = codexw.join(job_type) + os.sep
        for row in index.rows():
            path = index.report_path(row)
            if not path or not path.startswith(prefix) or not row.state.is_final:
                continue
            name = path[len(prefix):]
            if name in files or os.sep in name or naming.is_gz(name):
                continue
            for parts in ((job_type,), naming.archive_parts(row.ended_at or 0, job_type)):
                try:
                    directory = self.target(codexw, parts, create=False)
                    with directory.open_file(naming.gz(name)) as fh:
                        if not copies.intact_gzip(fh):
                            continue
                except OSError:
                    continue
                where = directory.join(naming.gz(name))
                if ctx.plan.dry_run or ctx.mover.record(row, False, path, where):
                    index.moved_to(row, where)
                    ctx.result.act(Action("repair", "report", path, where, row.id,
                                          note="registry pointed at the removed original"))
                break

    def leftover(
        self, directory: Dir, name: str, entry: Entry, job_type: str,
        moved: tuple[JobFiles, str], candidates: list[Candidate],
    ) -> None:
        """The original of a report the registry already places elsewhere: a run that
        stopped after recording the copy and before removing the original."""
        ctx = self.ctx
        row, where = moved
        path = directory.join(name)
        try:
            with ExitStack() as stack:
                target = open_recorded(stack, where)
                original = stack.enter_context(directory.open_file(name))
                if target is None:  # the registry points at nothing: this is the report
                    ts = row.ended_at or entry_stat(entry).st_mtime
                    candidates.append(Candidate(directory, name, job_type, entry, ts, row, where))
                    return
                same = copies.same_content(
                    copies.content(original, naming.is_gz(name)),
                    copies.content(target, naming.is_gz(where)),
                )
        except OSError as exc:
            ctx.result.error(path, exc)
            return
        if not same:
            ctx.result.skip(path, f"differs from job {row.id}'s recorded report {where}:"
                                  " left alone")
            return
        size = entry_stat(entry).st_size
        if not ctx.plan.dry_run:
            directory.unlink(name)
        ctx.result.act(Action("repair", "report", path, where, row.id, size, 0,
                              "finished an interrupted cleanup"))

    # -- archive or compress one report ----------------------------------------------------------

    def handle(self, index: ProjectIndex, codexw: Dir, report: Candidate) -> None:
        ctx, plan, row = self.ctx, self.ctx.plan, report.row
        is_gz = naming.is_gz(report.name)
        target_name = naming.gz(report.name)
        parts: tuple[str, ...]
        if plan.compress_only:
            kind, parts = "compress", ()
        else:
            kind, parts = "archive", self.archive_parts(report.ts, report.type)
        if plan.dry_run:
            where = "/".join((codexw.path, *parts, target_name)) if parts else (
                report.dir.join(target_name))
            action = Action(kind, "report", report.path, where, row.id if row else None)
            try:
                action.bytes_before, action.bytes_after = copies.estimate(
                    report.dir, report.name, is_gz)
            except OSError as exc:
                ctx.result.error(report.path, exc)
                return
            ctx.result.act(action)
            if row is not None and report.registry_old is not None:
                index.moved_to(row, where)
            return
        try:
            target = self.target(codexw, parts, create=True) if parts else report.dir
        except OSError as exc:
            ctx.result.error(report.path, exc)
            return
        action = Action(kind, "report", report.path, target.join(target_name),
                        row.id if row else None)

        def moved(move: Move) -> None:
            if move.row is not None and move.action.dest:
                index.moved_to(move.row, move.action.dest)

        ctx.mover.queue(Move(action, report.dir, report.name, target, target_name, is_gz, True,
                             row, report.registry_old, False, moved))
