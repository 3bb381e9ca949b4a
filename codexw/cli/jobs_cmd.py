"""`codexw status`: list jobs, show one, watch them, their statistics."""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import TYPE_CHECKING

import typer

from codexw.cli import render
from codexw.core.durations import format_duration
from codexw.core.errors import EXIT_INTERRUPTED, UsageError
from codexw.core.models import REMOTE_BACKENDS, Job, JobState

STATES = ", ".join(s.value for s in JobState)

if TYPE_CHECKING:
    from rich.table import Table

    from codexw.services import status as svc_status
    from codexw.services.stats import Stats


# -- status -------------------------------------------------------------------------------


def status(
    job_id: int = typer.Argument(None, metavar="[ID]", help="Show this one job in detail.", **render.ID),
    latest: int = typer.Option(None, "--latest", "-n", metavar="N", help="How many of the newest jobs to list. [default: 10]", **render.ID),
    show_all: bool = typer.Option(False, "--all", "-a", help="List every job, not just the newest."),
    all_projects: bool = typer.Option(False, "--all-projects", help="Jobs of every project, not just this one."),
    job_type: str = typer.Option(None, "--type", "-t", metavar="TYPE", help="Only jobs of this type."),
    state: str = typer.Option(None, "--state", metavar="STATE", help=f"Only jobs in this state ({STATES})."),
    workers: bool = typer.Option(False, "--workers", help="Shortcut for --type workers."),
    research: bool = typer.Option(False, "--research", help="Shortcut for --type research."),
    batch: int = typer.Option(None, "--batch", "-b", metavar="ID", help="Only jobs of this batch.", **render.ID),
    watch: bool = typer.Option(False, "--watch", help="Keep the table live until Ctrl-C."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    stats: bool = typer.Option(
        False, "--stats", help="Counts, success rate, durations, tokens and disk use."
    ),
) -> None:
    """List the latest jobs of this project, or show one job in detail."""
    from codexw.services import status as svc

    if workers and research:
        raise UsageError("--workers and --research exclude each other")
    if workers or research:
        if job_type:
            raise UsageError("--type and --workers/--research exclude each other")
        job_type = "workers" if workers else "research"
    if state is not None and state not in {s.value for s in JobState}:
        raise UsageError(f"unknown state {state!r}", f"use one of {STATES}")
    if stats:
        _stats(job_id, state, batch, watch, all_projects, job_type, as_json, latest, show_all)
        return
    if job_id is not None:
        # One job: every list option would be silently ignored, so each is refused.
        given = _given(latest=latest is not None, all=show_all, all_projects=all_projects,
                       type=job_type is not None, state=state is not None,
                       batch=batch is not None, watch=watch)
        if given:
            raise UsageError(f"status ID shows one job: {given} lists jobs",
                             "drop the ID to list, or the options to see the job")
        detail = svc.job_detail(job_id)
        if as_json:
            render.emit_json("status", {"job": detail.to_dict()})
        else:
            _print_detail(detail)
        return
    if latest is not None and show_all:
        raise UsageError("--latest and --all exclude each other", "--all lists every job")
    if watch and as_json:
        raise UsageError("--watch is for people and --json for scripts: pick one",
                         "a script can run `codexw status --json` when `codexw wait` returns")

    query = svc.JobQuery(all_projects=all_projects, job_type=job_type, state=state,
                         batch_id=batch, limit=None if show_all else latest or 10)
    many = all_projects  # jobs of several projects: each row says which
    if watch:
        _watch(svc.watch(query), many)
        return
    jobs = svc.list_jobs(query)
    limits = svc.limits()
    if as_json:
        render.emit_json("status", {"jobs": [j.to_dict() for j in jobs], **limits.to_dict()})
        return
    if not jobs:
        render.write(_empty_text(svc.explain_empty(query)) + "\n")
    else:
        _print_table(jobs, many)
    for line in limit_lines(limits):
        render.write(render.clean(line, oneline=True) + "\n")


def limit_lines(limits: svc_status.Limits) -> list[str]:
    """One line per account that holds jobs back, and the waker if one sleeps."""
    from codexw.core import limiter

    lines = [f"account {a.label}: {limiter.describe(a)}" for a in limits.accounts
             if a.throttled or a.budget_spent or a.next_start is not None]
    if limits.waker is not None:
        until = limits.waker["until"]
        when = time.strftime("%H:%M:%S", time.localtime(until)) if until else "now"
        lines.append(f"waker: pid {limits.waker['pid'] or '?'}, starts queued jobs at {when}")
    return lines


def _given(**flags: bool) -> str:
    """'--all and --type' for the flags that are set."""
    names = [f"--{name.replace('_', '-')}" for name, on in flags.items() if on]
    return " and ".join(names)


def _empty_text(empty: svc_status.EmptyListing) -> str:
    """What an empty list was filtered by, and where the jobs are instead."""
    filters = " ".join(empty.filters)
    scope = "in this project" if empty.project is not None else ""
    if empty.filters and "in batch" in filters:
        scope = ""
    head = " ".join(part for part in ("no jobs", filters, scope) if part)
    if not empty.filters and empty.project is None:
        head = "no jobs yet"
    notes = []
    if empty.filters and empty.unfiltered:
        notes.append(f"{render.plural(empty.unfiltered, 'job')} without"
                     f" {'that filter' if len(empty.filters) == 1 else 'those filters'}")
    if empty.elsewhere:
        notes.append(f"{render.plural(empty.elsewhere, 'job')} in"
                     f" {render.plural(empty.other_projects, 'other project')}: --all-projects")
    if not notes and not empty.filters:
        notes.append('start one with `codexw launch "TASK"`')
    text = head + ("; " + "; ".join(notes) if notes else "")
    if empty.project is not None and not empty.unfiltered:
        text += f"\n(this project: {render.clean(empty.project, oneline=True)})"
    return text


HEADERS = ["ID", "STATE", "LEVEL", "TYPE", "TIME", "PID", "TASK", "REPORT"]


def _headers(many: bool, jobs: list[Job] | None = None) -> list[str]:
    headers = [*HEADERS[:-1], "PROJECT", HEADERS[-1]] if many else list(HEADERS)
    if _isolated(jobs or []):
        headers[-1:-1] = ["BRANCH", "FILES"]
    return headers


def _isolated(jobs: list[Job]) -> bool:
    """Whether a listing shows BRANCH and FILES: when one of its jobs has a worktree."""
    return any(j.spec.branch for j in jobs)


def _rows(jobs: list[Job], many: bool = False) -> list[list[str]]:
    """Table cells, each through the sanitiser (one line each). REPORT is relative to
    the job's project (`.codexw/…`): with several projects, PROJECT says which."""
    rows = []
    isolated = _isolated(jobs)
    for j in jobs:
        cells = [
            str(j.id),
            _state_cell(j),
            j.spec.level,
            j.spec.type,
            render.age_or_duration(j),
            str(_pid_of(j) or "-"),
            render.task_head(j.spec.task),
            _short_path(j.report_path),
        ]
        if many:
            cells.insert(-1, _home_short(j.spec.project))
        if isolated:
            merged = " (merged)" if j.merged_at else ""
            cells[-1:-1] = [(j.spec.branch or "-") + merged,
                            "-" if j.files_changed is None else str(j.files_changed)]
        rows.append([render.clean(cell, oneline=True) for cell in cells])
    return rows


def _state_cell(job: Job) -> str:
    """The state, and for a queued job held back by its account's limits, that: "queued
    (throttled)", "queued (retry in 20s, throttled)"."""
    text = render.state_text(job)
    if job.waiting not in ("throttled", "budget"):
        return text
    return f"{text[:-1]}, {job.waiting})" if text.endswith(")") else f"{text} ({job.waiting})"


def _home_short(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home != "/" and (path + "/").startswith(home + "/") else path


def _short_path(path: str | None) -> str:
    if not path:
        return "-"
    marker = "/.codexw/"
    return ".codexw/" + path.split(marker, 1)[1] if marker in path else path


def _rich_table(jobs: list[Job], many: bool = False) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False, expand=True)
    rows = _rows(jobs, many)
    for i, header in enumerate(_headers(many, jobs)):
        if header in ("TASK", "REPORT", "PROJECT"):
            # These share what the narrow columns leave (the task most); the rest always
            # show whole: an 80-column terminal lost ID and TASK to a long report path.
            table.add_column(header, no_wrap=header != "TASK", overflow="ellipsis",
                             ratio=2 if header == "TASK" else 1, min_width=8)
        else:
            width = max([len(header), *(len(str(row[i])) for row in rows)])
            table.add_column(header, no_wrap=True, min_width=width)
    for job, row in zip(jobs, rows, strict=True):
        # Text cells: a task such as "[bold red]x" is shown, not read as markup.
        cells = [render.rich_text(cell) for cell in row]
        cells[1].stylize(render.STATE_STYLE[job.state])
        table.add_row(*cells)
    return table


def _print_table(jobs: list[Job], many: bool = False) -> None:
    if render.is_tty():
        render.console().print(_rich_table(jobs, many))
    else:
        render.write(render.plain_table(_headers(many, jobs), _rows(jobs, many)) + "\n")


def _watch(listings: Generator[list[Job], None, None], many: bool) -> None:
    """Show each listing the service yields (it waits for changes) until Ctrl-C."""
    from contextlib import closing

    from rich.live import Live

    try:
        with closing(listings):
            first = next(listings)  # an unknown batch fails here, before the live table
            with Live(_rich_table(first, many), auto_refresh=False) as live:
                for jobs in listings:
                    live.update(_rich_table(jobs, many), refresh=True)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None  # 130, as every command's Ctrl-C


def _pid_of(job: Job) -> int | None:
    """The PID a person looks for: the runner's, or the app-server's that runs the job
    as one thread among others (`--backend app-server`)."""
    return job.codex_pgid if job.spec.backend == "app-server" else job.runner_pid


def _print_detail(detail: svc_status.JobDetail) -> None:
    job = detail.job
    s = job.spec
    lines = [
        ("job", f"{job.id}" + (f" (attempt {job.attempt}/{s.retries + 1})" if s.retries else "")),
        ("state", render.state_text(job) + (f": {job.reason}" if job.reason else "")
         + (f" (waiting: {job.waiting})" if job.waiting else "")),
        ("task", render.task_head(s.task, 100)),
        ("level / type", f"{s.level} / {s.type}"),
        ("model", s.model or "codex default"),
        ("sandbox", s.sandbox),
        ("cwd", s.cwd),
        ("queued", _ts(job.queued_at)),
        ("started", _ts(job.started_at)),
        ("ended", _ts(job.ended_at)),
        ("duration", format_duration(job.duration)),
        ("timeout", format_duration(s.timeout) if s.timeout else "none"),
        ("runner pid", str(job.runner_pid or "-")
         + (" (the app-server's supervisor)" if s.backend == "app-server" else "")),
        ("codex", job.codex_exec or "-"),
        ("exit status", "-" if job.exit_code is None else str(job.exit_code)),
        ("last action", job.last_action or "-"),
        ("tokens", " ".join(f"{k.replace('_tokens', '')}={v}" for k, v in job.tokens.items())),
        ("thread", job.thread_id or "-"),
        ("report", job.report_path or "-"),
        ("log", job.log_path or "-"),
    ]
    if s.backend in REMOTE_BACKENDS:
        lines.append(("backend", f"{s.backend}, queue {s.queue or '-'},"
                                 f" task {job.celery_task_id or '-'}"))
        lines.append(("worker", job.host or "- (not taken by a worker yet)"))
    if s.branch:
        files = "" if job.files_changed is None else f", {render.plural(job.files_changed, 'file')} changed"
        merged = f", merged {_ts(job.merged_at)}" if job.merged_at else ""
        lines.append(("branch", f"{s.branch} from {(s.base_commit or '')[:12]}{files}{merged}"))
        lines.append(("worktree", s.worktree or "-"))
    if s.batch_id:
        lines.append(("batch", str(s.batch_id)))
    if s.after:
        lines.append(("after", ", ".join(map(str, s.after))))
    if detail.attempts:
        lines.append(("attempts", " → ".join(f"{a.id} {a.state.value}" for a in detail.attempts)))
    if detail.chain:
        lines.append(("conversation", " → ".join(f"{c.id} {c.state.value}" for c in detail.chain)))
    width = max(len(k) for k, _ in lines)
    # Every value may quote codex (reason, last action, thread id) or the task: one line each.
    out = [f"{k.rjust(width)}  {render.clean(v, oneline=True)}" for k, v in lines]
    if detail.processes:
        out.append("")
        out.append(render.plain_table(
            ["PID", "ROLE", "CPU%", "RSS", "COMMAND"],
            [[str(p.pid), p.role, f"{p.cpu_percent:.0f}", f"{p.rss // (1 << 20)}M",
              render.clean(p.cmdline, oneline=True)[:60]]
             for p in detail.processes],
        ))
    render.write("\n".join(out) + "\n")


def _ts(value: float | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def _stats(job_id: int | None, state: str | None, batch: int | None, watch: bool,
           all_projects: bool, job_type: str | None, as_json: bool, latest: int | None,
           show_all: bool) -> None:
    from codexw.services.stats import job_stats

    if (job_id is not None or state is not None or batch is not None or watch
            or latest is not None or show_all):
        raise UsageError("--stats combines only with --type, --all-projects and --json")
    result = job_stats(all_projects=all_projects, job_type=job_type)
    if as_json:
        render.emit_json("status", {"stats": result.to_dict()})
    else:
        render.write(_stats_text(result))


def _stats_text(st: Stats) -> str:
    def counts(table: dict[str, int]) -> str:
        return "  ".join(f"{k} {v}" for k, v in table.items()) or "-"

    def num(n: float) -> str:
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if n >= size:
                return f"{n / size:.1f}{unit}"
        return f"{n:.0f}"

    scope = st.project or "all projects"
    if st.job_type:
        scope += f", type {st.job_type}"
    rate = (f"{st.success_rate:.1%} of {st.rated} rated runs (succeeded, failed, timed out,"
            " lost)" if st.success_rate is not None else "-")
    tokens = st.tokens
    lines = [
        ("jobs", f"{st.total} ({scope})"),
        ("states", counts(st.by_state)),
        ("types", counts(st.by_type)),
        ("levels", counts(st.by_level)),
        ("success", rate),
        ("tokens", f"in {num(tokens['input_tokens'])} (cached {num(tokens['cached_input_tokens'])})"
                   f"  out {num(tokens['output_tokens'])}"
                   f"  reasoning {num(tokens['reasoning_output_tokens'])}"),
    ]
    disk = st.disk
    avg = st.average_report_bytes
    lines.append(("disk", "  ".join(
        f"{name} {d.files} files {num(d.bytes)}B" for name, d in disk.items()
    ) + (f"  (average report {num(avg)}B)" if avg is not None else "")))
    for day in st.rate_limits[:7]:
        lines.append(("429s", f"{day['day']}: {day['429s']}, throttled"
                              f" {format_duration(day['throttled_seconds'])}"))
    for label, ref in (("oldest", st.oldest), ("newest", st.newest)):
        if ref is not None:
            lines.append((label, f"job {ref.id} {_ts(ref.queued_at)} {ref.state}"
                                 f"  {render.task_head(ref.task, 60)}"))
    width = max(len(k) for k, _ in lines)
    out = [f"{k.rjust(width)}  {v}" for k, v in lines]
    if st.tokens_by_level or st.durations:
        rows = []
        for level in dict.fromkeys([*st.durations, *st.tokens_by_level]):
            d = st.durations.get(level)
            t = st.tokens_by_level.get(level, {})
            rows.append([
                level, str(st.by_level.get(level, 0)), str(d.runs if d else 0),
                format_duration(d.median) if d else "-", format_duration(d.p90) if d else "-",
                num(t.get("input_tokens", 0)), num(t.get("output_tokens", 0)),
                num(t.get("reasoning_output_tokens", 0)),
            ])
        out += ["", render.plain_table(
            ["LEVEL", "JOBS", "RUNS", "MEDIAN", "P90", "IN", "OUT", "REASONING"], rows)]
    return "\n".join(out) + "\n"
