"""One project's registry rows: by id, by report path, and where reports went."""

from __future__ import annotations

import os

from codexw.core import naming
from codexw.core.store import JobFiles


class ProjectIndex:
    """Read once per project, after its folders were listed (a report written since
    belongs to a job this snapshot still sees as running, and is left alone)."""

    def __init__(self, project: str, rows: list[JobFiles]) -> None:
        self.project = project
        self.by_id = {r.id: r for r in rows}
        self.by_path: dict[str, JobFiles] = {}
        # (type, file name) → the row and where the registry places that report now
        self.moved: dict[tuple[str, str], tuple[JobFiles, str]] = {}
        self.base = os.path.join(project, ".codexw")
        self.reports: dict[int, str] = {}  # where this run moved reports
        prefixes: list[str] = []
        for row in rows:
            if row.report_path:
                self._place(row, row.report_path)
            if not row.state.is_final:
                prefixes += naming.open_report_prefixes(row.queued_at, row.id, row.runner_pid)
        self.prefixes = tuple(prefixes)

    def _place(self, row: JobFiles, path: str) -> None:
        self.by_path[path] = row
        if not row.state.is_final or not path.startswith(self.base + os.sep):
            return
        rel = path[len(self.base) + 1 :].split(os.sep)
        if len(rel) == 4 and rel[0] == naming.ARCHIVE_DIR and naming.is_gz(rel[3]):
            self.moved[(rel[2], rel[3])] = (row, path)
            self.moved[(rel[2], rel[3][: -len(naming.GZ)])] = (row, path)
        elif len(rel) == 2 and naming.is_gz(rel[1]):
            self.moved[(rel[0], rel[1][: -len(naming.GZ)])] = (row, path)

    def moved_to(self, row: JobFiles, path: str) -> None:
        """This run moved the row's report to `path` (`moved`, which tells the
        leftovers of earlier runs apart in a type folder already listed, stays)."""
        self.reports[row.id] = path
        self.by_path[path] = row

    def report_path(self, row: JobFiles) -> str | None:
        return self.reports.get(row.id, row.report_path)

    def protected(self, name: str) -> bool:
        """A final report a still-running job may have just written (not yet recorded)."""
        return bool(self.prefixes) and name.startswith(self.prefixes)

    def rows(self) -> list[JobFiles]:
        return list(self.by_id.values())
