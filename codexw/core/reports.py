"""Report files: names, atomic writes and the live TEMP report.

The TEMP report is plain text formatting (no Jinja2) so that launch and a running
runner stay small; the final report's Jinja2 render is core/templates.py.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from codexw.core import naming, paths
from codexw.core.codex import RunSummary
from codexw.core.models import Job

# -- names (formats and patterns live in naming.py; these take a Job) ------------------


def temp_report_path(job: Job) -> Path:
    """Where the job's TEMP report is: the path recorded at queue time (which may carry
    a key, see `new_temp_report_path`), else `<stamp>_TEMP_<id>_codex_task.md`."""
    if job.report_path and naming.is_temp_report(os.path.basename(job.report_path)):
        return Path(job.report_path)
    directory = paths.report_dir(job.spec.project, job.spec.type)
    return directory / naming.temp_report(job.queued_at, job.id)


def new_temp_report_path(job: Job) -> Path:
    """The TEMP name for a job being queued. Another registry (a second state dir on this
    project, a registry deleted and made anew) can have a job with the same id queued in
    the same second: then `<stamp>_TEMP_<id>.<key>_codex_task.md`, never its file."""
    path = temp_report_path(job)
    if job.job_key and os.path.lexists(path) and not carries_key(path, job.job_key):
        path = path.with_name(naming.temp_report(job.queued_at, job.id, job.job_key))
    return path


KEY_MARK = "<!-- codexw job key: "


def carries_key(path: Path, job_key: str | None) -> bool:
    """Whether the report at `path` is the one written for the attempt with `job_key`
    (TEMP reports carry the key in an HTML comment). A file that cannot prove it is
    someone else's, and is never removed as ours."""
    if not job_key:
        return False
    try:
        with open(path, "rb", opener=_nofollow) as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f"{KEY_MARK}{job_key} -->".encode() in head


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


SHARED_BACKEND = "app-server"  # one process runs many jobs: reports carry A<job>, not a PID


def final_report_name(job: Job) -> str:
    """`<stamp>_<runner PID>_codex_task.md`; a job that never ran has no PID: `J<id>`."""
    return naming.final_report(job.queued_at, job.id, job.runner_pid,
                               shared=job.spec.backend == SHARED_BACKEND)


def fmt_time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# -- atomic writes --------------------------------------------------------------------


def _write_tmp(directory: Path, name: str, text: str, durable: bool = True,
               mode: int = 0o666) -> Path:
    tmp = directory / naming.atomic_tmp(name, os.urandom(4).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_replace(path: Path, text: str, durable: bool = True, mode: int = 0o666) -> None:
    """Write `text` to `path` via tmp (+ fsync) + rename; a planted symlink is replaced,
    never followed. TEMP reports skip the fsync: they are rewritten while the job runs.
    `mode` (before the umask) is the new file's: the trust store is 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_tmp(path.parent, path.name, text, durable, mode)
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)  # the rename itself survives a crash


def atomic_create(path: Path, text: str) -> Path:
    """Write a new file without ever overwriting one; on a name clash add `_<n>`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_tmp(path.parent, path.name, text)
    candidate = path
    try:
        for n in range(2, 1000):
            try:
                os.link(tmp, candidate)
                break
            except FileExistsError:
                candidate = path.with_name(naming.numbered(path.name, n))
        else:  # pragma: no cover
            raise OSError(errno.EEXIST, "too many reports with this name", str(path))
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)
    return candidate


# -- the TEMP report ------------------------------------------------------------------


def render_temp(job: Job, summary: RunSummary | None = None, state: str | None = None) -> str:
    s = job.spec
    lines = [f"# codexw job {job.id} ({state or job.state.value})"]
    if job.job_key:
        lines.append(f"{KEY_MARK}{job.job_key} -->")
    lines += [
        "",
        f"**Task:** {_first_line(s.task)}",
        (f"**Started:** {fmt_time(job.started_at)}" if job.started_at
         else f"**Queued:** {fmt_time(job.queued_at)} (not started)"),
        f"**Reasoning Level:** {s.level}",
        f"**Type:** {s.type}  **Model:** {s.model or 'codex default'}  **Attempt:** "
        f"{job.attempt}/{s.retries + 1}",
        "",
        "This report is being written by codexw; it is renamed when the job ends.",
        "",
        "## Live",
        "",
        f"- state: {state or job.state.value}",
        f"- updated: {fmt_time(time.time())}",
    ]
    if summary is not None:
        lines.append(f"- last action: {summary.last_action or '-'}")
        lines.append(f"- commands run: {len(summary.commands)}")
        for run in list(summary.commands.values())[-10:]:
            lines.append(f"  - `{_first_line(run.command, 100)}` → {_exit(run.exit_code)}")
        if summary.files:
            lines.append("- files changed: " + ", ".join(sorted(summary.files)))
        used = summary.usage
        lines.append(
            f"- tokens so far: in {used['input_tokens']}, out {used['output_tokens']},"
            f" reasoning {used['reasoning_output_tokens']}"
        )
    lines += ["", "## Task", "", s.task, ""]
    return "\n".join(lines)


def _first_line(text: str, width: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _exit(code: int | None) -> str:
    return "running" if code is None else f"exit {code}"
