"""`codexw status --stats`: counts, success rate, durations, tokens and disk use.

Everything about jobs comes from SQL aggregates over indexes (no job rows are loaded);
disk use is one directory walk per project plus the log folder.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from codexw.core import paths
from codexw.core.models import LEVELS, TOKEN_KEYS, TYPE_NAME_RE, JobState
from codexw.core.store import Store
from codexw.services.common import using_store

QUANTILES = (0.5, 0.9)
# Outcomes that say how well the agent did; `killed` and `cancelled` were a person's choice.
RATED = (JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.LOST)
ARCHIVE = "archive"
_LOG_RE = re.compile(r"(\d+)\.")


@dataclass
class Durations:
    runs: int
    median: float
    p90: float

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "median": self.median, "p90": self.p90}


@dataclass
class DiskUse:
    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size

    def to_dict(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}


@dataclass
class JobRef:
    id: int
    queued_at: float
    state: str
    task: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Stats:
    project: str | None
    job_type: str | None
    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    by_level: dict[str, int] = field(default_factory=dict)
    durations: dict[str, Durations] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KEYS, 0))
    tokens_by_level: dict[str, dict[str, int]] = field(default_factory=dict)
    disk: dict[str, DiskUse] = field(
        default_factory=lambda: {"reports": DiskUse(), "archives": DiskUse(), "logs": DiskUse()}
    )
    oldest: JobRef | None = None
    newest: JobRef | None = None
    # Per day (newest first, the last RATE_LIMIT_DAYS, every account and project: the
    # limits are the account's): 429s received and time spent in cool-downs.
    rate_limits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rated(self) -> int:
        return sum(self.by_state.get(s.value, 0) for s in RATED)

    @property
    def success_rate(self) -> float | None:
        rated = self.rated
        return self.by_state.get(JobState.SUCCEEDED.value, 0) / rated if rated else None

    @property
    def average_report_bytes(self) -> float | None:
        reports = self.disk["reports"]
        return reports.bytes / reports.files if reports.files else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "type": self.job_type,
            "jobs": self.total,
            "by_state": self.by_state,
            "by_type": self.by_type,
            "by_level": self.by_level,
            "success_rate": self.success_rate,
            "rated": self.rated,
            "succeeded": self.by_state.get(JobState.SUCCEEDED.value, 0),
            "durations": {k: v.to_dict() for k, v in self.durations.items()},
            "tokens": self.tokens,
            "tokens_by_level": self.tokens_by_level,
            "disk": {k: v.to_dict() for k, v in self.disk.items()},
            "average_report_bytes": self.average_report_bytes,
            "oldest": self.oldest.to_dict() if self.oldest else None,
            "newest": self.newest.to_dict() if self.newest else None,
            "rate_limits": self.rate_limits,
        }


def _level_order(level: str) -> tuple[int, str]:
    return (LEVELS.index(level) if level in LEVELS else len(LEVELS), level)


def job_stats(
    *,
    cwd: str | None = None,
    all_projects: bool = False,
    job_type: str | None = None,
    store: Store | None = None,
    disk: bool = True,
) -> Stats:
    with using_store(store) as store:
        return _job_stats(store, cwd, all_projects, job_type, disk)


def _job_stats(
    store: Store, cwd: str | None, all_projects: bool, job_type: str | None, disk: bool
) -> Stats:
    project = None if all_projects else str(paths.project_root(cwd or os.getcwd()))
    result = Stats(project=project, job_type=job_type)
    projects: set[str] = set()
    for row in store.stats_groups(project, job_type):
        n = row["n"]
        projects.add(row["project"])
        result.total += n
        for key, table in (("state", result.by_state), ("type", result.by_type),
                           ("level", result.by_level)):
            table[row[key]] = table.get(row[key], 0) + n
        per_level = result.tokens_by_level.setdefault(row["level"], dict.fromkeys(TOKEN_KEYS, 0))
        for key in TOKEN_KEYS:
            value = row[key] or 0
            result.tokens[key] += value
            per_level[key] += value
    order = [s.value for s in JobState]
    result.by_state = {k: result.by_state[k] for k in order if k in result.by_state}
    result.by_type = dict(sorted(result.by_type.items(), key=lambda kv: (-kv[1], kv[0])))
    result.by_level = dict(sorted(result.by_level.items(), key=lambda kv: _level_order(kv[0])))
    result.tokens_by_level = dict(
        sorted(result.tokens_by_level.items(), key=lambda kv: _level_order(kv[0]))
    )
    quantiles = store.duration_quantiles(project, job_type, QUANTILES)
    for level in sorted(quantiles, key=_level_order):
        runs, (median, p90) = quantiles[level]
        result.durations[level] = Durations(runs, max(0.0, median), max(0.0, p90))
    oldest, newest = store.first_and_last(project, job_type)
    result.oldest = _ref(oldest)
    result.newest = _ref(newest)
    if disk:
        _disk_use(store, result, sorted(projects) if project is None else [project])
    result.rate_limits = rate_limit_days(store, time.time())
    return result


RATE_LIMIT_DAYS = 30


def rate_limit_days(store: Store, now: float) -> list[dict[str, Any]]:
    """429s and throttled time (the union of each account's cool-downs) per local day."""
    days: dict[str, dict[str, Any]] = {}
    reach: dict[str, float] = {}  # per account: the end of the cool-downs counted so far
    for account, at, kind, seconds in store.account_events(now - RATE_LIMIT_DAYS * 86400):
        if kind != "429":
            continue
        day = days.setdefault(time.strftime("%Y-%m-%d", time.localtime(at)),
                              {"429s": 0, "throttled_seconds": 0.0})
        day["429s"] += 1
        end = min(at + (seconds or 0.0), now)
        begin = max(at, reach.get(account, at))
        if end > begin:
            day["throttled_seconds"] += end - begin
            reach[account] = end
    return [{"day": d, **v} for d, v in sorted(days.items(), reverse=True)]


def _ref(row: Any) -> JobRef | None:
    if row is None:
        return None
    return JobRef(row["id"], row["queued_at"], row["state"], row["task"].strip().split("\n")[0][:200])


def _disk_use(store: Store, result: Stats, projects: list[str]) -> None:
    for project in projects:
        _walk_codexw(os.path.join(project, ".codexw"), result)
    try:
        entries = os.scandir(paths.logs_dir())
    except OSError:
        return
    scoped = result.project is not None or result.job_type is not None
    wanted: set[int] | None = None
    with entries:
        for entry in entries:
            match = _LOG_RE.match(entry.name)
            if match is None:
                continue
            if scoped:
                if wanted is None:  # only when there are logs to sort out
                    wanted = set(store.job_ids(result.project, result.job_type))
                if int(match.group(1)) not in wanted:
                    continue
            size = _file_size(entry)
            if size is not None:
                result.disk["logs"].add(size)


def _walk_codexw(top: str, result: Stats) -> None:
    """Reports in <type>/ (plain → reports, .gz → archives) and everything in archive/."""
    try:
        types = [e for e in os.scandir(top) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for entry in types:
        if entry.name == ARCHIVE:
            _walk_archive(entry.path, result)
        elif TYPE_NAME_RE.fullmatch(entry.name) and result.job_type in (None, entry.name):
            try:
                files = list(os.scandir(entry.path))
            except OSError:
                continue
            for item in files:
                if not item.name.endswith((".md", ".md.gz")):
                    continue
                size = _file_size(item)
                if size is not None:
                    result.disk["archives" if item.name.endswith(".gz") else "reports"].add(size)


def _walk_archive(top: str, result: Stats) -> None:
    """archive/YYYY-MM/<type>/*.gz, without following links."""
    stack = [(top, 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                # depth 0: months; depth 1: types (filtered); depth 2: the files
                if depth < 2 and (depth == 0 or result.job_type in (None, entry.name)):
                    stack.append((entry.path, depth + 1))
            elif entry.name.endswith(".gz"):
                size = _file_size(entry)
                if size is not None:
                    result.disk["archives"].add(size)


def _file_size(entry: os.DirEntry[str]) -> int | None:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
