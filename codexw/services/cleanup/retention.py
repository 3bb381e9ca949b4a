"""What goes: the reports chosen by age and --keep, and archives past
--delete-archives-older."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from codexw.core import naming
from codexw.core.store import JobFiles
from codexw.services.cleanup.context import Context
from codexw.services.cleanup.dirs import Dir, Entry, entry_stat
from codexw.services.cleanup.index import ProjectIndex
from codexw.services.cleanup.plan import SETTLE, Plan
from codexw.services.cleanup.result import CleanupResult


@dataclass
class Candidate:
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


def select(plan: Plan, candidates: list[Candidate], result: CleanupResult) -> list[Candidate]:
    """Beyond the newest --keep, and older than --age; oldest first. What is kept for
    being too new is counted in `result`, so that cleanup can say why."""
    ordered = sorted(candidates, key=lambda r: (r.ts, r.name), reverse=True)
    if plan.keep is not None:
        result.kept["kept by --keep"] = result.kept.get("kept by --keep", 0) + len(
            ordered[: plan.keep])
        ordered = ordered[plan.keep :]
    chosen = []
    for report in ordered:
        if plan.old_enough(report.ts, plan.age_cutoff):
            chosen.append(report)
        else:
            why = ("ended in the last minute" if report.ts > plan.now - SETTLE
                   else f"younger than {plan.age}")
            result.kept[why] = result.kept.get(why, 0) + 1
    if plan.compress_only:
        chosen = [r for r in chosen if not naming.is_gz(r.name)]
    return sorted(chosen, key=lambda r: (r.ts, r.name))


def archived(ctx: Context, store_dir: Dir) -> Iterator[tuple[Dir, dict[str, Entry]]]:
    """Each archive/YYYY-MM/<type>/ folder in scope with its files; empty ones go."""
    dry = ctx.plan.dry_run
    for month in store_dir.subdirs():
        if not naming.MONTH_RE.fullmatch(month):
            continue
        try:
            with store_dir.existing(month) as month_dir:
                for job_type in month_dir.subdirs():
                    if not ctx.plan.in_scope(job_type):
                        continue
                    with month_dir.existing(job_type) as type_dir:
                        files = type_dir.files()
                        ctx.stale_tmps(type_dir, files)
                        yield type_dir, files
                    if not dry:
                        month_dir.rmdir_if_empty(job_type)
            if not dry:
                store_dir.rmdir_if_empty(month)
        except OSError as exc:
            ctx.result.error(store_dir.join(month), exc)


def delete_archives(
    ctx: Context, index: ProjectIndex, store_dir: Dir | None, type_dirs: list[Dir]
) -> None:
    """Reports compressed in place and archived ones, past --delete-archives-older."""
    for directory in type_dirs:
        for name, entry in sorted(directory.files().items()):  # again: some were compressed
            if name.endswith(naming.REPORT_SUFFIX + naming.GZ):
                _delete_if_old(ctx, index, directory, name, entry)
    ctx.mover.flush_deletes()
    if store_dir is not None:
        for directory, files in archived(ctx, store_dir):
            for name, entry in sorted(files.items()):
                if naming.is_gz(name):
                    _delete_if_old(ctx, index, directory, name, entry)
            ctx.mover.flush_deletes()  # before the folder closes (and goes, if empty)


def drop_stale_tmps(ctx: Context, store_dir: Dir) -> None:
    """Only what an interrupted cleanup left in the archive (and empty folders) goes."""
    for _directory, _files in archived(ctx, store_dir):
        pass


def _delete_if_old(
    ctx: Context, index: ProjectIndex, directory: Dir, name: str, entry: Entry
) -> None:
    row = index.by_path.get(directory.join(name))
    temp_of = naming.temp_report_job(name)
    if temp_of is not None and row is None:
        row = index.by_id.get(temp_of)
        if row is None:
            return  # a TEMP report of a job this registry does not know: left alone
    if row is not None and not row.state.is_final:
        return
    if row is None and index.protected(name):
        return
    ts = row.ended_at if row is not None and row.ended_at else entry_stat(entry).st_mtime
    if ctx.plan.old_enough(ts, ctx.plan.delete_cutoff):
        ctx.delete_file(directory, name, row, "report", entry)
