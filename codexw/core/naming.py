"""Every file name codexw writes, and the patterns that recognise them: one place.

```
<project>/.codexw/<type>/YYYYMMDD_HHMMSS_TEMP_<job>_codex_task.md       queued/running
<project>/.codexw/<type>/YYYYMMDD_HHMMSS_TEMP_<job>.<key>_codex_task.md  (its name taken)
<project>/.codexw/<type>/YYYYMMDD_HHMMSS_<PID>_codex_task.md            finished (J<job>
                                                   if it never ran; `_<n>` before the suffix
                                                   when the name is taken)
<project>/.codexw/archive/YYYY-MM/<type>/<report>.gz                     archived
<state>/logs/<job>.jsonl, <job>.<key>.jsonl      codex's event stream (keyed: name taken)
<state>/logs/<job>.stderr.log, <job>.runner.log  beside it; `.gz` once compressed
<state>/env/<key>.json                           the launching command's environment
```

Pure string functions (no I/O, no clock but `time.localtime`), so that the runner, the
reports, the scheduler and cleanup cannot disagree about a name.
"""

from __future__ import annotations

import re
import time

REPORT_SUFFIX = "_codex_task.md"
GZ = ".gz"
ARCHIVE_DIR = "archive"
ENV_DIR = "env"
LOG_KINDS = ("jsonl", "stderr.log", "runner.log")
CLEANUP_TMP_PREFIX = ".cleanup-"

# A TEMP report, plain or keyed, possibly compressed: group 1 is the job id.
TEMP_REPORT_RE = re.compile(r".*_TEMP_(\d+)(?:\.[0-9A-Za-z]+)?_codex_task\.md(?:\.gz)?")
# A job's log of one kind, possibly compressed: groups are id, kind, ".gz". Keyed logs
# (`<job>.<key>.jsonl`) are not matched: they belong to a job of an earlier registry
# that had the same id, and cleanup leaves what it cannot attribute alone.
LOG_RE = re.compile(r"(\d+)\.(jsonl|stderr\.log|runner\.log)(\.gz)?")
MONTH_RE = re.compile(r"\d{4}-\d{2}")


# -- reports --------------------------------------------------------------------------


def stamp(ts: float) -> str:
    """`YYYYMMDD_HHMMSS` in local time: the first part of every report name."""
    return time.strftime("%Y%m%d_%H%M%S", time.localtime(ts))


def temp_report(queued_at: float, job_id: int, key: str | None = None) -> str:
    """`<stamp>_TEMP_<job>_codex_task.md`, or with `.<key>` when that name is taken."""
    keyed = f".{key}" if key else ""
    return f"{stamp(queued_at)}_TEMP_{job_id}{keyed}{REPORT_SUFFIX}"


def is_temp_report(name: str) -> bool:
    return TEMP_REPORT_RE.fullmatch(name) is not None


def temp_report_job(name: str) -> int | None:
    """The job id a TEMP report name carries, or None for any other name."""
    match = TEMP_REPORT_RE.fullmatch(name)
    return int(match.group(1)) if match else None


def final_report(queued_at: float, job_id: int, runner_pid: int | None,
                 shared: bool = False) -> str:
    """`<stamp>_<runner PID>_codex_task.md`; a job that never ran has no PID: `J<job>`,
    and one run by a process shared with other jobs (an app-server) `A<job>`."""
    who = f"A{job_id}" if shared and runner_pid else str(runner_pid) if runner_pid else f"J{job_id}"
    return f"{stamp(queued_at)}_{who}{REPORT_SUFFIX}"


def open_report_prefixes(queued_at: float, job_id: int, runner_pid: int | None) -> tuple[str, ...]:
    """Starts of the final report names a job that has not ended may be writing."""
    when = stamp(queued_at)
    found = (f"{when}_J{job_id}_", f"{when}_J{job_id}{REPORT_SUFFIX}",
             f"{when}_A{job_id}_", f"{when}_A{job_id}{REPORT_SUFFIX}")
    return found + ((f"{when}_{runner_pid}_",) if runner_pid else ())


def is_report(name: str) -> bool:
    """A report, finished or TEMP, plain or compressed."""
    return name.endswith((REPORT_SUFFIX, REPORT_SUFFIX + GZ))


def numbered(name: str, n: int) -> str:
    """The `n`th name for a file whose name is taken: `…_<n>_codex_task.md[.gz]` for a
    report, `<name>.<n>[.gz]` for anything else."""
    gz = name.endswith(GZ)
    base = name[: -len(GZ)] if gz else name
    if base.endswith(REPORT_SUFFIX):
        base = f"{base[: -len(REPORT_SUFFIX)]}_{n}{REPORT_SUFFIX}"
    else:
        base = f"{base}.{n}"
    return base + (GZ if gz else "")


def atomic_tmp(name: str, nonce: str) -> str:
    """The hidden temporary file an atomic write of `name` goes through."""
    return f".{name}.{nonce}.tmp"


# -- compressed files and archives ----------------------------------------------------


def gz(name: str) -> str:
    return name if name.endswith(GZ) else name + GZ


def is_gz(name: str) -> bool:
    return name.endswith(GZ)


def archive_month(ts: float) -> str:
    """`YYYY-MM` (local time) of a job's end: the archive folder it goes to."""
    return time.strftime("%Y-%m", time.localtime(ts))


def archive_parts(ts: float, job_type: str) -> tuple[str, str, str]:
    """The folders below `.codexw` an archived report goes to: archive/YYYY-MM/<type>."""
    return (ARCHIVE_DIR, archive_month(ts), job_type)


def cleanup_tmp(token: str, nonce: str) -> str:
    """A named temporary copy of a cleanup run (`token` is unique to that run)."""
    return f"{CLEANUP_TMP_PREFIX}{token}-{nonce}.tmp"


def is_stale_cleanup_tmp(name: str, token: str) -> bool:
    """A temporary file of another, earlier cleanup run (the caller holds the lock)."""
    return (name.startswith(CLEANUP_TMP_PREFIX) and name.endswith(".tmp")
            and not name.startswith(f"{CLEANUP_TMP_PREFIX}{token}-"))


# -- logs -----------------------------------------------------------------------------


def job_log(job_id: int, key: str | None = None) -> str:
    """`<job>.jsonl`, or `<job>.<key>.jsonl` when a job of an earlier registry has that name."""
    return f"{job_id}.{key}.jsonl" if key else f"{job_id}.jsonl"


def log_of_kind(job_id: int, kind: str) -> str:
    """`<job>.<kind>` for one of LOG_KINDS (`jsonl`, `stderr.log`, `runner.log`)."""
    return f"{job_id}.{kind}"


def companion_log(event_log: str, kind: str) -> str:
    """The file beside an event log (`5.jsonl`, `5.<key>.jsonl`) of another kind:
    `5.stderr.log`, `5.<key>.stderr.log`."""
    base = event_log[: -len(".jsonl")] if event_log.endswith(".jsonl") else event_log
    return f"{base}.{kind}"


def task_log(task_id: str) -> str:
    """A Celery worker's event log of one task (in the worker's own log folder)."""
    return f"{task_id}.jsonl"


def runner_log(job_id: int) -> str:
    """Where a runner's own stdout and stderr go."""
    return log_of_kind(job_id, "runner.log")


# -- environment files ----------------------------------------------------------------


def env_file(key: str) -> str:
    """`<key>.json` in the state dir's env folder; keys are ours (hex), anything else
    never names a path."""
    if not key.isalnum():
        raise ValueError(f"bad environment key {key!r}")
    return f"{key}.json"
