"""What every step of one cleanup run shares: the registry, the plan, the result, the mover."""

from __future__ import annotations

from dataclasses import dataclass

from codexw.core import naming
from codexw.core.store import JobFiles, Store
from codexw.services.cleanup.dirs import Dir, Entry, entry_stat
from codexw.services.cleanup.mover import Mover
from codexw.services.cleanup.plan import Plan
from codexw.services.cleanup.result import Action, CleanupResult


@dataclass
class Context:
    store: Store
    plan: Plan
    result: CleanupResult
    mover: Mover
    token: str  # names this run's temporary files; another run's are stale

    def stale_tmps(self, directory: Dir, files: dict[str, Entry]) -> None:
        """Drop temporary files of a cleanup that was interrupted (we hold the lock)."""
        for name in [n for n in files if naming.is_stale_cleanup_tmp(n, self.token)]:
            size = entry_stat(files.pop(name)).st_size
            if not self.plan.dry_run:
                directory.unlink(name)
            self.result.act(Action("repair", "tmp", directory.join(name), bytes_before=size,
                                   note="leftover of an interrupted cleanup"))

    def delete_file(
        self, directory: Dir, name: str, row: JobFiles | None, what: str, entry: Entry
    ) -> None:
        """Delete now (dry run: say so) or at the mover's next flush_deletes."""
        path = directory.join(name)
        try:
            size = entry_stat(entry).st_size
        except OSError as exc:
            self.result.error(path, exc)
            return
        action = Action("delete", what, path, None, row.id if row else None, size, 0)
        if self.plan.dry_run:
            self.result.act(action)
        else:
            self.mover.delete(action, directory, name, row)
