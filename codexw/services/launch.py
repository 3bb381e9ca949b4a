"""Validate a job spec, record it, write its TEMP report and start it if a slot is free."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from codexw.core import envfile, lifecycle, limiter, paths, scheduler, templates, validate
from codexw.core.codex import in_git_repo, missing_codex  # one message for launch and doctor
from codexw.core.config import Config, load_config
from codexw.core.durations import parse_duration
from codexw.core.errors import CodexMissingError, ConfigError, StoreError, UsageError
from codexw.core.models import (
    LEVELS,
    REMOTE_BACKENDS,
    SANDBOXES,
    Job,
    JobSpec,
    JobState,
    is_job_type,
)
from codexw.core.scheduler import fill_slots
from codexw.core.store import Store
from codexw.services.common import open_store

CELERY_HINT = (  # codexw is installed from a checkout (README): the extra comes from there too
    "in codexw's environment: pip install '/path/to/codexw[celery]'"
    " (pipx: pipx inject codexw 'celery[redis]')"
)
PROFILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass
class LaunchRequest:
    task: str
    level: str | None = None
    type: str | None = None
    model: str | None = None
    sandbox: str | None = None
    cwd: str | None = None
    timeout: str | None = None
    retries: int | None = None
    retry_timeouts: bool | None = None
    report_sections: bool | None = None
    priority: int = 0
    after: tuple[int, ...] = ()
    name: str | None = None
    codex_args: tuple[str, ...] = ()
    resume_thread: str | None = None
    resume_of: int | None = None
    profile: str | None = None
    add_dirs: tuple[str, ...] = ()
    output_schema: str | None = None
    skip_git_repo_check: bool = False
    backend: str | None = None
    broker_url: str | None = None
    queue: str | None = None
    # A git worktree of its own (None: config `isolation`); `include_dirty` carries the
    # main tree's uncommitted changes over as the worktree's first commit.
    worktree: bool | None = None
    include_dirty: bool = False
    notify: tuple[str, ...] | None = None  # None: the config's `notify`


@dataclass
class LaunchResult:
    job: Job
    warnings: list[str] = field(default_factory=list)
    # Why a job that has not started has not: its ending reason when it was cancelled at
    # once, the dependency it waits for, or the slot limit. Empty once it started.
    waiting_for: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "job_id": self.job.id,
            "state": self.job.state.value,
            "runner_pid": self.job.runner_pid,
            "report_path": self.job.report_path,
            "log_path": str(lifecycle.log_path(self.job.id)),
            "warnings": self.warnings,
        }


def validate_task(task: str) -> str:
    if "\x00" in task:
        raise UsageError("the task contains a NUL byte", "pass plain text")
    validate.check_text(task, "the task")  # undecodable argv bytes cannot be stored
    if not task.strip():
        raise UsageError("the task is empty", "give the task as an argument, with -f FILE, or on stdin")
    return task


def resolve_codex(codex_bin: str) -> str:
    found = shutil.which(codex_bin)
    if found is None:
        raise CodexMissingError(*missing_codex(codex_bin))
    return os.path.abspath(found)


def codex_home_dir() -> Path:
    value = os.environ.get("CODEX_HOME")
    return Path(value).expanduser() if value else Path.home() / ".codex"


def codex_options(req: LaunchRequest, cwd: Path) -> tuple[str, ...]:
    """Validated pass-through options for `codex exec`, as argv (paths made absolute)."""
    args: list[str] = []
    if req.profile is not None:
        if not PROFILE_RE.fullmatch(req.profile):
            raise UsageError(f"invalid profile name {req.profile!r}",
                             "letters, digits, '.', '_' and '-'")
        profile_file = codex_home_dir() / f"{req.profile}.config.toml"
        if not profile_file.is_file():
            # codex 0.169.0 silently ignores a profile it cannot find.
            raise UsageError(f"--profile {req.profile}: {profile_file} does not exist",
                             "codex reads a profile from $CODEX_HOME/<name>.config.toml")
        args += ["-p", req.profile]
    for directory in req.add_dirs:
        path = (cwd / Path(directory).expanduser()).resolve()
        if not path.is_dir():
            raise UsageError(f"--add-dir {directory}: no such directory",
                             "give an existing directory codex may also write to")
        args += ["--add-dir", str(path)]
    if req.output_schema is not None:
        path = (cwd / Path(req.output_schema).expanduser()).resolve()
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"--output-schema {req.output_schema}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"--output-schema {req.output_schema}: not valid JSON ({exc})",
                             "give a JSON Schema file") from None
        if not isinstance(schema, dict):
            raise UsageError(f"--output-schema {req.output_schema}: not a JSON Schema object")
        args += ["--output-schema", str(path)]
    if req.skip_git_repo_check:
        args.append("--skip-git-repo-check")
    return tuple(args)


@dataclass
class Prepared:
    """A validated spec, before anything is recorded."""

    spec: JobSpec
    warnings: list[str]
    # The account's rate-limit settings from this launch's config (saved with the job).
    account: dict[str, dict[str, object]] = field(default_factory=dict)


_identities: dict[tuple[str, ...], limiter.Identity] = {}


def account_of(codex_args: tuple[str, ...]) -> limiter.Identity:
    """The account this command's jobs run on (once per codex arguments: a batch)."""
    found = _identities.get(codex_args)
    if found is None:
        found = _identities[codex_args] = limiter.identify(os.environ, codex_args)
    return found


def prepare(req: LaunchRequest, config: Config | None = None, batch_id: int | None = None) -> Prepared:
    """Validate everything; raise UsageError without touching the registry.

    Every field goes through core.validate: the request's before any of it is used,
    the merged config's (naming the file a bad value came from), and the spec's."""
    validate_task(req.task)
    validate.check_fields(req)
    cwd = Path(req.cwd or os.getcwd()).expanduser()
    if not cwd.is_dir():
        raise UsageError(f"working directory {cwd} does not exist", "check --cd")
    cwd = cwd.resolve()
    project = paths.project_root(cwd)
    if config is None:
        config = load_config(project)
    if req.level is not None and req.level not in LEVELS:
        import difflib

        close = difflib.get_close_matches(req.level.lower(), LEVELS, n=1)
        raise UsageError(
            f"unknown level {req.level!r}" + (f"; did you mean {close[0]}?" if close else ""),
            "use one of " + ", ".join(LEVELS) + ", in lower case",
        )
    if req.type is not None and not is_job_type(req.type):
        raise UsageError(
            f"invalid type name {req.type!r}",
            "use lower-case letters, digits, '-' and '_', up to 32, starting with a letter or"
            " digit; 'archive' is reserved for cleanup",
        )
    if req.sandbox is not None and req.sandbox not in SANDBOXES:
        raise UsageError(f"unknown sandbox {req.sandbox!r}", "use one of " + ", ".join(SANDBOXES))
    if req.retries is not None and req.retries < 0:
        raise UsageError("--retries must be 0 or more")
    isolation = None if req.worktree is None else ("worktree" if req.worktree else "none")
    cfg = config.with_overrides(
        level=req.level, type=req.type, model=req.model, sandbox=req.sandbox, retries=req.retries,
        retry_timeouts=req.retry_timeouts, backend=req.backend, broker_url=req.broker_url,
        queue=req.queue, report_sections=req.report_sections, isolation=isolation,
        notify=req.notify,
    )
    check_config(cfg)
    validate.check_depth(os.environ, cfg.max_depth, inherited_depth())  # jobs launching jobs
    source = cfg.sources.get("notify", "command line")
    validate.check_notify(cfg.notify, "--notify" if source == "command line" else source)
    timeout = parse_duration(req.timeout, what="timeout") if req.timeout else cfg.timeout
    remote = cfg.backend in REMOTE_BACKENDS
    if remote:
        check_remote(cfg)
    # A remote job runs the worker's codex with the worker's CODEX_HOME.
    codex_bin = cfg.codex_bin if remote else resolve_codex(cfg.codex_bin)
    template = templates.template_for(cfg.type, cfg.templates_dir)
    templates.check_template(template)
    warnings = []
    passthrough = codex_options(req, cwd)
    extra = tuple(cfg.codex_args) + passthrough + tuple(req.codex_args)
    if cfg.backend == "app-server" and extra:
        # Its threads are opened with cwd, sandbox, model and effort only: codex options
        # would be dropped without a word (a provider, an added dir, a profile).
        raise UsageError(
            f"codex options ({' '.join(extra)}) cannot go to --backend app-server (experimental)",
            "drop them (codex_args, --codex-arg, --profile, --add-dir, --output-schema), or use the"
            " default backend",
        )
    if "--skip-git-repo-check" not in passthrough + cfg.codex_args and not in_git_repo(str(cwd)):
        warnings.append(
            f"{cwd} is not in a git repository: codexw passes --skip-git-repo-check"
            " (noted in the report)"
        )
    if cfg.sandbox == "danger-full-access":
        warnings.append(
            "sandbox danger-full-access: codex can change anything this user can, without asking"
        )
    spec = JobSpec(
        task=req.task,
        level=cfg.level,
        type=cfg.type,
        cwd=str(cwd),
        project=str(project),
        codex_bin=codex_bin,
        sandbox=cfg.sandbox,
        model=cfg.model,
        timeout=timeout,
        kill_grace=cfg.kill_grace,
        retries=cfg.retries,
        retry_timeouts=cfg.retry_timeouts,
        report_sections=cfg.report_sections,
        codex_native=cfg.codex_native,
        backoff_base=cfg.backoff_base,
        backoff_max=cfg.backoff_max,
        priority=req.priority,
        batch_id=batch_id,
        name=req.name,
        after=tuple(req.after),
        global_limit=cfg.max_parallel,
        codex_args=tuple(cfg.codex_args) + passthrough + tuple(req.codex_args),
        codex_home=None if remote else os.environ.get("CODEX_HOME") or None,
        path_env=None if remote else os.environ.get("PATH") or None,
        template=str(template),
        resume_thread=req.resume_thread,
        resume_of=req.resume_of,
        backend=cfg.backend,
        broker_url=cfg.broker_url if remote else None,
        queue=cfg.queue if remote else None,
        notify=cfg.notify,
    )
    spec = isolate(spec, cfg, req, warnings)
    account: dict[str, dict[str, object]] = {}
    if not remote:
        try:
            identity = account_of(spec.codex_args)
        except OSError:
            identity = None  # no salt in an unusable state dir: the registry says why next
        if identity is not None:
            spec = replace(spec, account=identity.id)
            account[identity.id] = {"label": identity.label, **limiter.settings_from(cfg)}
    return Prepared(validate.check_spec(spec), warnings, account)


def isolate(spec: JobSpec, cfg: Config, req: LaunchRequest, warnings: list[str]) -> JobSpec:
    """`spec` with its isolation fields: for a job in a worktree of its own, the commit it
    starts from (HEAD now; with `include_dirty`, a commit of the uncommitted changes on
    top of it)."""
    if req.include_dirty and cfg.isolation != "worktree":
        raise UsageError("--include-dirty is for a job in its own worktree", "add --worktree")
    if cfg.isolation != "worktree":
        return spec
    from codexw.core import worktree

    project = spec.project
    if cfg.backend == "app-server":
        raise UsageError(
            "--worktree is not available with --backend app-server (experimental) yet",
            "drop --worktree, or use the default backend",
        )
    if cfg.backend != "local":
        raise UsageError(
            f"--worktree runs a job in a git worktree on this machine; the {cfg.backend}"
            " backend's workers do not share this repository",
            "drop --worktree (see docs/distributed.md), or run the job locally",
        )
    base = worktree.head(project)
    if base is None or not worktree.is_git_top(project):
        raise UsageError(
            f"--worktree needs a git repository with at least one commit; {project} has none",
            "run `git init` and commit, or drop --worktree",
        )
    dirty = bool(worktree.dirty_files(project))
    if dirty and req.include_dirty:
        base = worktree.snapshot_commit(project, base, "codexw: uncommitted changes at launch")
    elif dirty:
        warnings.append(
            "the working tree has uncommitted changes: the job starts from HEAD without them"
            " (--include-dirty carries them over)"
        )
    return replace(
        spec, isolation="worktree", base_commit=base, branch_prefix=cfg.branch_prefix,
        worktree_copy=cfg.worktree_copy, worktree_setup=cfg.worktree_setup,
        dirty_base=dirty and not req.include_dirty,
    )


def check_config(cfg: Config) -> None:
    """The merged config's values, by the same rules as a spec's fields: a NUL byte
    or an out-of-range number from a config file or CODEXW_* names where it came from."""
    found = validate.first_problem(cfg)
    if found is None:
        return
    key, problem = found
    error = validate.spec_error(key, problem)
    source = cfg.sources.get(key, "command line")
    if source != "command line":
        raise ConfigError(f"{source}: bad value for {key!r}: {problem}", error.hint)
    raise error


def check_remote(cfg: Config) -> None:
    """A Celery job needs a broker and the extra installed (found, not imported)."""
    import importlib.util

    if not cfg.broker_url:
        raise UsageError(
            f"--backend {cfg.backend} needs a broker",
            "give --broker redis://HOST:6379/0, set CODEXW_BROKER_URL or broker_url in the config",
        )
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None:
        raise UsageError("the Celery backend is not installed", CELERY_HINT)


def check_after(store: Store, after: tuple[int, ...]) -> None:
    for dep in after:
        if store.find_job(dep) is None:
            raise UsageError(f"--after {dep}: no such job", "see `codexw status --all`")


# A new .codexw/ keeps what codexw writes out of `git status`; its config.toml (a
# project's settings, meant to be committed) and this file stay visible.
GITIGNORE = """\
# Written by codexw when it made this directory; edit freely, it is never rewritten.
# Reports and archives stay out of git; config.toml (meant to be committed) does not.
# To track finished reports, set track_reports = true in your codexw config.
*
!.gitignore
!config.toml
"""
GITIGNORE_TRACKED = """\
# Written by codexw when it made this directory (track_reports = true): finished
# reports and config.toml are tracked; reports of queued or running jobs and archives
# are not. Edit freely, it is never rewritten.
*_TEMP_*
archive/
"""


def ensure_report_dir(spec: JobSpec) -> None:
    directory = paths.report_dir(spec.project, spec.type)
    fresh = not os.path.lexists(paths.codexw_dir(spec.project))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if fresh:
            write_gitignore(spec.project)
    except OSError as exc:
        raise StoreError(
            f"cannot create the report directory {directory}: {exc.strerror}",
            "make the project writable or use --cd",
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"the report directory {directory} is not writable")


def enqueue(
    store: Store,
    specs: list[JobSpec],
    *,
    deps: list[tuple[int, int]] = (),  # type: ignore[assignment]
    batch: dict[str, object] | None = None,
    recheck: Callable[[Store], object] | None = None,
    accounts: dict[str, dict[str, object]] | None = None,
) -> tuple[int | None, list[int]]:
    """Record jobs (and their batch) in one transaction, each with its TEMP report.

    `deps` holds (dependent index, dependency index) pairs into `specs`. `recheck`
    runs first inside the transaction: a check made earlier, repeated where no other
    command can change its answer before the jobs are in. `accounts`: the rate-limit
    settings of the jobs' accounts (Prepared.account), saved in the same transaction.
    Returns (batch id, job ids).
    """
    for spec in {(s.project, s.type): s for s in specs}.values():
        ensure_report_dir(spec)
    now = time.time()
    batch_id = None
    written: list[str] = []
    env_key = None
    try:
        specs, env_key = with_launch_env(specs)
        with store.transaction():
            if recheck is not None:
                recheck(store)
            for account_id, settings in (accounts or {}).items():
                store.save_account(account_id, settings)
            if batch is not None:
                batch_id = store.insert_batch(**batch)  # type: ignore[arg-type]
                specs = [replace(s, batch_id=batch_id) for s in specs]
            ids = []
            for spec in specs:
                ids.append(lifecycle.queue_with_report(store, spec, now))
                written.append(store.get_job(ids[-1]).report_path or "")
            for dependent, dependency in deps:
                store.add_dep(ids[dependent], ids[dependency])
            # Last: the registry's own error is the clearer one when the state dir fails.
            save_launch_env(env_key)
    except BaseException as exc:
        # Rolled back: the TEMP reports already written belong to no job. Remove them.
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if env_key is not None:
            envfile.remove(env_key)
        if isinstance(exc, OSError):
            raise StoreError(
                f"cannot write a report in {exc.filename or 'the report directory'}:"
                f" {exc.strerror}",
                "nothing was queued; make the project writable",
            ) from None
        raise
    return batch_id, ids


def write_gitignore(project: str) -> None:
    """.codexw/.gitignore for a .codexw/ just made, unless one is there. Its project
    had no .codexw/config.toml yet: only the user's config or CODEXW_TRACK_REPORTS can
    ask to track reports."""
    track = load_config(None).track_reports
    path = paths.codexw_dir(project) / ".gitignore"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return  # another launch made it a moment ago, or the user did
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(GITIGNORE_TRACKED if track else GITIGNORE)


def with_launch_env(specs: list[JobSpec]) -> tuple[list[JobSpec], str | None]:
    """Name a file for this command's environment in its local jobs, so that whoever
    starts them later runs codex with it (core.envfile); `save_launch_env` writes it.
    Remote jobs run with their worker's environment: nothing secret travels through
    the broker. Returns the specs and the key (None: no local job)."""
    if all(s.backend in REMOTE_BACKENDS for s in specs):
        return specs, None
    key = envfile.new_key()
    return [s if s.backend in REMOTE_BACKENDS else replace(s, env_key=key) for s in specs], key


@functools.cache  # a batch prepares each task: the ancestors are read once
def inherited_depth() -> int:
    """The deepest CODEXW_DEPTH among this process's ancestors: a codexw started by a
    job's codex (through `codexw mcp`, or a scrubbed `env -i`) is as deep as that job,
    whatever its own environment lost on the way."""
    from codexw.core.process import ancestors_env

    depths = (validate.depth_of({validate.DEPTH_ENV: v}) for v in ancestors_env(validate.DEPTH_ENV))
    return max((d for d in depths if d is not None), default=0)


def launch_environ() -> dict[str, str]:
    """This command's environment for its jobs, its depth made explicit (the runner
    starts codex one level deeper: core.run.codex_env)."""
    environ = dict(os.environ)
    depth = max(validate.depth_of(environ) or 0, inherited_depth())
    if depth:
        environ[validate.DEPTH_ENV] = str(depth)
    return environ


def save_launch_env(key: str | None) -> None:
    if key is None:
        return
    try:
        envfile.save(key, launch_environ())
    except OSError as exc:
        raise StoreError(
            f"cannot save the launch environment in {envfile.env_dir()}: {exc.strerror}",
            "nothing was queued; free some disk space or make the state directory writable",
        ) from None


def launch(req: LaunchRequest) -> LaunchResult:
    prepared = prepare(req)
    with open_store() as store:
        check_after(store, prepared.spec.after)
        _, (job_id,) = enqueue(store, [prepared.spec], accounts=prepared.account)
        fill_slots(store)
        job = store.get_job(job_id)
        return LaunchResult(job, prepared.warnings, not_started_because(store, job))


def not_started_because(store: Store, job: Job) -> str:
    """Why `job` has not started (for people), '' when it has. `job.waiting`, when a
    listing has set it (status.with_waiting: one plan for many jobs), is used as is."""
    if job.state.is_final:
        return job.reason or job.state.value
    if job.state != JobState.QUEUED:
        return "" if job.runner_pid else "starting"
    if job.not_before is not None and job.not_before > time.time():
        return "a retry, not due yet"
    states = store.states_of(job.spec.after)
    for dep in job.spec.after:
        state = states.get(dep)
        if state is not None and state != JobState.SUCCEEDED:
            return f"waiting for job {dep} ({state.value}) to succeed"
    if job.spec.backend in REMOTE_BACKENDS:
        return f"waiting for a worker on queue {job.spec.queue or 'codex'}"
    held = job.waiting if job.waiting is not None else scheduler.waiting(store)[0].get(job.id)
    if held == limiter.THROTTLED:
        return "held back: its account is rate-limited (see `codexw status`)"
    if held == limiter.BUDGET:
        return "held back: its account's start or token budget is spent (see `codexw status`)"
    limit = job.spec.global_limit
    return "waiting for a free slot" + (f" (max_parallel {limit})" if limit else "")
