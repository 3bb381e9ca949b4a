"""The final report: Jinja2 templates, their context, and rendering them safely.

A user's template (`templates_dir`) is user code: it compiles and renders in a forked
child bounded in time, output and memory (render_final). Jinja2 is imported only here,
when a final report is rendered or a template checked, so that launch and a running
runner stay small (reports.py formats the live TEMP report without it).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from codexw.core import paths, process
from codexw.core.codex import RunSummary, configured_model
from codexw.core.durations import format_duration
from codexw.core.errors import TemplateError
from codexw.core.models import Job
from codexw.core.reports import fmt_time


def template_for(job_type: str, templates_dir: str | None) -> Path:
    """The template a type renders with: `<type>-task.md`, `worker-task.md` as fallback."""
    names = {"workers": "worker-task.md", "research": "research-task.md"}
    wanted = names.get(job_type, f"{job_type}-task.md")
    for directory in (Path(templates_dir).expanduser() if templates_dir else None,
                      paths.packaged_templates_dir()):
        if directory is None:
            continue
        for name in (wanted, "worker-task.md"):
            candidate = directory / name
            if candidate.is_file():
                return candidate
    raise TemplateError(
        f"no report template for type {job_type!r}",
        f"add {wanted} or worker-task.md to {templates_dir or paths.packaged_templates_dir()}",
    )


def template_context(job: Job, summary: RunSummary | None = None) -> dict[str, Any]:
    summary = summary or RunSummary()
    data = job.to_dict()
    if not job.spec.model:  # say which model codex's own config chose, when one did
        model = configured_model(job.spec)
        data["model"] = f"{model} (codex's config)" if model else None
    usage = dict(summary.usage) if summary.events else dict(job.tokens)
    usage["total_tokens"] = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
    data.update(
        outcome=job.state.value,
        started=fmt_time(job.started_at),
        ended=fmt_time(job.ended_at),
        queued=fmt_time(job.queued_at),
        duration_text=format_duration(job.duration),
        commands=[
            {"command": c.command, "exit_code": c.exit_code, "status": c.status}
            for c in summary.commands.values()
        ],
        files=[{"path": p, "kind": k} for p, k in sorted(summary.files.items())],
        final_message=summary.final_message,
        warnings=list(summary.warnings),
        error=summary.error,
        usage=usage,
        diffstat=_diffstat(job),
    )
    return {
        "job": data,
        "TASK_DESCRIPTION": job.spec.task,
        # A job that never ran has no start time to show.
        "START_TIME": fmt_time(job.started_at) if job.started_at else "never started",
        "REASONING_LEVEL": job.spec.level,
    }


def _diffstat(job: Job) -> str:
    """An isolated job's branch against its base commit (`git diff --stat`), else ''."""
    spec = job.spec
    if not spec.branch or not spec.base_commit:
        return ""
    from codexw.core import worktree

    return worktree.diffstat(spec.project, spec.base_commit,
                             worktree.rev(spec.project, f"refs/heads/{spec.branch}"))


_environments: dict[str, Any] = {}  # per template folder; Jinja2 caches compiled templates


def _environment(directory: Path) -> Any:
    cached = _environments.get(str(directory))
    if cached is not None:
        return cached
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = _environments[str(directory)] = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=_code_cache(),
    )
    return env


def _code_cache() -> Any:
    """Compiled templates kept in `<state dir>/template-cache` (0600 files): a render
    child compiles a template once (compiling is the template's code running: it only
    ever happens in the bounded child) and later children load it, not compile it."""
    from jinja2.bccache import Bucket, BytecodeCache

    class CodeCache(BytecodeCache):
        def __init__(self, directory: Path) -> None:
            self.directory = directory

        def load_bytecode(self, bucket: Bucket) -> None:
            try:
                with open(self.directory / f"{bucket.key}.cache", "rb") as fh:
                    bucket.load_bytecode(fh)
            except OSError:
                pass

        def dump_bytecode(self, bucket: Bucket) -> None:
            path = self.directory / f"{bucket.key}.cache"
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                self.directory.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    bucket.write_bytecode(fh)
                os.replace(tmp, path)
            except OSError:  # no cache: the next child compiles again, that is all
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    return CodeCache(paths.state_dir() / "template-cache")


def warm(template: Path) -> None:
    """Import Jinja2 and build the template folder's environment ahead of the render.

    Not the compile: Jinja2 folds constant expressions while compiling
    (`{{ 'x' * 10**10 }}`, `{{ 'x'|center(10**10) }}`), so compiling is the template's
    code running too, and happens only in render_final's bounded child (except for the
    templates shipped with codexw, which are no user code: compiled here)."""
    env = _environment(template.parent)
    if _shipped(template):
        try:
            env.get_template(template.name)
        except Exception:  # noqa: BLE001 - render_final reports it properly
            pass
        return
    import ctypes  # noqa: F401 - what the render child's confinement needs, loaded
    import resource  # noqa: F401 - here once rather than in every child


# A report template is user code: it compiles and renders in a forked child, bounded in
# time, size and memory, so a runaway loop can neither hang a launch nor keep a finished
# job `running` (the outcome is recorded anyway, with the built-in template).
RENDER_TIMEOUT_S = 5.0
RENDER_MAX_BYTES = 4 << 20
RENDER_MAX_MEMORY = 512 << 20  # address space the child may add to what it inherits
MAX_TEMPLATE_BYTES = 1 << 20


def _shipped(template: Path) -> bool:
    """A template that comes with codexw itself: no user code, rendered in-process (a
    fork per report would cost a batch ~10 ms of CPU per job for nothing)."""
    try:
        return template.resolve().parent == paths.packaged_templates_dir().resolve()
    except OSError:
        return False


def render_final(template: Path, job: Job, summary: RunSummary | None) -> str:
    context = template_context(job, summary)
    if _shipped(template):
        return _render(template, context)
    parent = os.getpid()
    try:
        read_fd, write_fd = os.pipe()
    except OSError as exc:
        raise _no_renderer(template, exc) from None
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise _no_renderer(template, exc) from None
    if pid == 0:  # the child: render, send status byte + text, never return
        os.close(read_fd)
        code = 0
        try:
            _confine(parent)
            try:
                data = b"0" + _render(template, context).encode("utf-8", "surrogateescape")
            except TemplateError as exc:
                data = b"1" + str(exc).encode("utf-8", "replace")
            with os.fdopen(write_fd, "wb") as out:
                out.write(data[: RENDER_MAX_BYTES + 2])
        except BaseException:  # noqa: BLE001 - a broken pipe, MemoryError: the parent says why
            code = 1
        os._exit(code)
    os.close(write_fd)
    try:
        data, why = _read_bounded(read_fd, time.monotonic() + RENDER_TIMEOUT_S)
    finally:
        os.close(read_fd)
        _kill_and_reap(pid)  # done or past a bound: either way it is over
    if why is None and data[:1] == b"0":
        return data[1:].decode("utf-8", "surrogateescape")
    if why is None and data[:1] == b"1":
        raise TemplateError(data[1:].decode("utf-8", "replace"))
    raise TemplateError(
        f"report template {template}: {why or 'rendering failed (out of memory?)'}",
        "fix the template; variables: job.*, TASK_DESCRIPTION, START_TIME, REASONING_LEVEL",
    )


def _render(template: Path, context: dict[str, Any]) -> str:
    import jinja2

    try:
        env = _environment(template.parent)
        return str(env.get_template(template.name).render(context))
    except (jinja2.TemplateError, UnicodeDecodeError) as exc:
        raise _template_error(template, exc) from None
    except Exception as exc:  # evaluating a template can raise anything: {{ 1/0 }}, recursion
        raise _template_error(template, exc, f"{type(exc).__name__}: ") from None


def _no_renderer(template: Path, exc: OSError) -> TemplateError:
    return TemplateError(
        f"report template {template}: its renderer could not start ({exc.strerror or exc})")


def _confine(parent: int) -> None:
    """The render child's bounds of its own: it dies with its parent (SIGKILL; a stop
    signal ends it too, as the runner's flag-setting handler would not), and has only so
    much CPU time and address space; no orphan of a runaway template outlives a runner."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    process.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    try:
        import resource

        cpu = int(RENDER_TIMEOUT_S) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = used + RENDER_MAX_MEMORY
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError, ImportError):  # no /proc: time and size still bound it
        pass


def _read_bounded(fd: int, deadline: float) -> tuple[bytes, str | None]:
    """Everything the child writes, or why not: too slow, too big."""
    import select

    parts: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"", f"did not finish within {RENDER_TIMEOUT_S:g} s"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(parts), None
        parts.append(chunk)
        size += len(chunk)
        if size > RENDER_MAX_BYTES + 1:
            return b"", f"wrote more than {RENDER_MAX_BYTES >> 20} MiB"


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _template_error(template: Path, exc: Exception, kind: str = "") -> TemplateError:
    line = getattr(exc, "lineno", None)
    where = f"{template}:{line}" if line else str(template)
    return TemplateError(
        f"report template {where}: {kind}{exc}",
        "fix the template; variables: job.*, TASK_DESCRIPTION, START_TIME, REASONING_LEVEL",
    )


def check_template(template: Path) -> None:
    """Parse and test-render `template`; each distinct content is checked only once."""
    try:
        with template.open("rb") as fh:
            content = fh.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise TemplateError(f"cannot read report template {template}: {exc.strerror}") from None
    if len(content) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"report template {template} is over {MAX_TEMPLATE_BYTES >> 20} MiB")
    import zlib  # not hashlib: OpenSSL would cost every launch ~10 ms and the runner ~4 MB

    # This names "content already checked", it is no security boundary.
    digest = f"{len(content)}-{zlib.crc32(content):08x}-{zlib.adler32(content):08x}"
    marker = paths.state_dir() / "templates-checked" / digest
    try:
        if marker.exists():
            return
    except OSError:  # an unreadable state dir: check the template, the registry says the rest
        pass
    from codexw.core.models import JobSpec, JobState

    sample = Job(
        id=0,
        spec=JobSpec(task="sample task", level="low", type="workers", cwd="/", project="/",
                     codex_bin="codex"),
        state=JobState.SUCCEEDED,
        queued_at=time.time(),
        started_at=time.time(),
        ended_at=time.time(),
    )
    summary = RunSummary()
    summary.feed({"type": "item.completed", "item": {"id": "1", "type": "command_execution",
                                                     "command": "true", "exit_code": 0}})
    summary.feed({"type": "item.completed", "item": {"id": "2", "type": "agent_message",
                                                     "text": "done"}})
    render_final(template, sample, summary)
    try:  # the marker only saves work next time: failing to write it changes nothing
        paths.ensure_state_dir()
        marker.parent.mkdir(exist_ok=True, mode=0o700)
        marker.touch(mode=0o600)
    except OSError:
        pass
