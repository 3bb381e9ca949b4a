"""What a cleanup did (or would do): actions, files left alone, problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    age: str | None = None  # the age in force
    kept: dict[str, int] = field(default_factory=dict)  # finished reports left, per reason

    # -- recording, as the run goes ------------------------------------------------------

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(Skipped(path, reason))

    def error(self, path: str, problem: OSError | str) -> None:
        if isinstance(problem, OSError):
            problem = problem.strerror or str(problem)
        self.errors.append(f"{path}: {problem}")

    # -- reading ---------------------------------------------------------------------------

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
            "age": self.age,
            "kept": dict(self.kept),
            "errors": self.errors,
        }
