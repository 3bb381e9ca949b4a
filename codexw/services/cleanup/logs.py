"""The log folder: a job's logs follow its report; logs of jobs the registry does not
know go by their mtime; a missing project's jobs can be forgotten with their logs."""

from __future__ import annotations

import os

from codexw.core import naming, paths
from codexw.core.store import JobFiles
from codexw.services.cleanup import copies
from codexw.services.cleanup.context import Context
from codexw.services.cleanup.dirs import Dir, Entry, entry_stat
from codexw.services.cleanup.index import ProjectIndex
from codexw.services.cleanup.mover import Move
from codexw.services.cleanup.project import runner_alive
from codexw.services.cleanup.result import Action


class LogFolder:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.dir: Dir | None = None
        self.files: dict[str, Entry] = {}
        self.known_ids: set[int] = set()  # jobs of the projects seen in this run

    def open(self) -> None:
        try:
            self.dir = Dir.open(str(paths.logs_dir()))
            self.files = dict(self.dir.files())
        except FileNotFoundError:
            self.dir = None
        except OSError as exc:
            self.ctx.result.error(str(paths.logs_dir()), exc)
        if self.dir is not None:
            self.ctx.stale_tmps(self.dir, self.files)

    def close(self) -> None:
        if self.dir is not None:
            self.dir.close()

    def job_logs(self, index: ProjectIndex) -> None:
        """Compress the logs of finished jobs (they follow their reports), then delete
        compressed logs past --delete-archives-older."""
        self.known_ids.update(index.by_id)
        if self.dir is None:
            return
        ctx, plan = self.ctx, self.ctx.plan
        # Only jobs with a file in the log folder have anything to do here.
        present = self.job_ids_present()
        mine = [r for r in index.rows()
                if r.id in present and r.state.is_final and plan.in_scope(r.type)]
        if plan.archive_step:
            for row in mine:
                if self.log_due(index.report_path(row), row):
                    for kind in naming.LOG_KINDS:
                        if kind == "runner.log" and runner_alive(row):
                            continue  # a runner lingers for retries: it still holds this file
                        self.compress(row, naming.log_of_kind(row.id, kind))
            ctx.mover.flush()
        if plan.delete_cutoff is not None:
            for row in mine:
                if plan.old_enough(row.ended_at, plan.delete_cutoff):
                    for kind in naming.LOG_KINDS:
                        self.delete(naming.gz(naming.log_of_kind(row.id, kind)), row)
            ctx.mover.flush_deletes()

    def job_ids_present(self) -> set[int]:
        """The jobs that have a log (plain or compressed) in the log folder."""
        present = set()
        for name in self.files:
            match = naming.LOG_RE.fullmatch(name)
            if match is not None:
                present.add(int(match.group(1)))
        return present

    def log_due(self, report: str | None, row: JobFiles) -> bool:
        """Logs follow the report: compressed once it is archived or compressed; a job
        without a report file goes by its end time."""
        plan = self.ctx.plan
        archived = f"/.codexw/{naming.ARCHIVE_DIR}/"
        if report is not None and (naming.is_gz(report) or archived in report):
            return plan.old_enough(row.ended_at, None)
        if report is not None and os.path.lexists(report):
            return False
        if plan.age_cutoff is None:
            return False
        return plan.old_enough(row.ended_at, plan.age_cutoff)

    def delete(self, name: str, row: JobFiles | None) -> None:
        entry = self.files.pop(name, None)
        if entry is not None and self.dir is not None:
            self.ctx.delete_file(self.dir, name, row, "log", entry)

    def compress(self, row: JobFiles | None, name: str) -> None:
        assert self.dir is not None
        ctx, logs = self.ctx, self.dir
        path = logs.join(name)
        if name not in self.files:
            gz = naming.gz(path)
            if row is not None and row.log_path == path and naming.gz(name) in self.files:
                if not ctx.plan.dry_run:
                    ctx.mover.record(row, True, path, gz)
                ctx.result.act(Action("repair", "log", path, gz, row.id,
                                      note="registry pointed at the removed original"))
            return
        action = Action("compress", "log", path, naming.gz(path), row.id if row else None)
        if ctx.plan.dry_run:
            try:
                action.bytes_before, action.bytes_after = copies.estimate(logs, name, False)
            except OSError as exc:
                ctx.result.error(path, exc)
                return
            ctx.result.act(action)
            return
        old = path if row is not None and row.log_path == path else None
        ctx.mover.queue(Move(action, logs, name, logs, naming.gz(name), False, False,
                             row, old, True, self._compressed))

    def _compressed(self, move: Move) -> None:
        self.files.pop(move.name, None)
        packed = move.target.lstat(move.final or "")
        if packed is not None and move.final:
            self.files[move.final] = packed

    def orphans(self) -> None:
        """Logs of jobs the registry does not know (any more): by their mtime."""
        if self.dir is None:
            return
        ctx, plan = self.ctx, self.ctx.plan
        known = set(ctx.store.job_ids()) | self.known_ids
        for name, entry in sorted(self.files.items()):
            match = naming.LOG_RE.fullmatch(name)
            if match is None or int(match.group(1)) in known:
                continue
            mtime = entry_stat(entry).st_mtime
            if match.group(3):
                if plan.delete_cutoff is not None and plan.old_enough(mtime, plan.delete_cutoff):
                    self.delete(name, None)
            elif plan.archive_step and plan.age_cutoff is not None and (
                plan.old_enough(mtime, plan.age_cutoff)
            ):
                self.compress(None, name)
        ctx.mover.flush()
        ctx.mover.flush_deletes()

    def missing_project(self, project: str) -> None:
        """A project directory that is gone: listed; with --prune-missing its finished
        jobs are forgotten and their logs deleted."""
        ctx = self.ctx
        ctx.result.missing_projects.append(project)
        if not ctx.plan.prune_missing:
            return
        rows = [r for r in ctx.store.job_files(project) if r.state.is_final]
        if not rows:
            return
        if ctx.plan.dry_run:
            ids = [r.id for r in rows]
        else:
            with ctx.store.transaction():
                ids = ctx.store.prune_finished(project)
        ctx.result.pruned_jobs += len(ids)
        ctx.result.act(Action("prune", "jobs", project, note=f"{len(ids)} finished jobs"))
        for job_id in ids:
            for kind in naming.LOG_KINDS:
                name = naming.log_of_kind(job_id, kind)
                for each in (name, naming.gz(name)):
                    self.delete(each, None)
        ctx.mover.flush_deletes()
