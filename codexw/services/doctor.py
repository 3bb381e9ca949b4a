"""`codexw doctor`: is everything a job needs in place? One check per line, each with a hint.

Checks return results and never print. A `fail` means jobs cannot work (the CLI exits 1);
a `warn` means they may work, with a caveat.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from codexw.core import codexbin, paths, process, templates
from codexw.core.codex import (
    INSTALL_HINT,
    MIN_CODEX_VERSION,
    TESTED_CODEX_VERSION,
    app_server_refusal,
    missing_codex,
    parse_version,
)
from codexw.core.config import Config, load_config
from codexw.core.errors import CodexwError

PROBE_TIMEOUT = 30.0

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    hint: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class DoctorReport:
    checks: list[Check]
    project_config: dict[str, object] | None = None  # its file, trust state, ignored keys

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "counts": {s: sum(c.status == s for c in self.checks) for s in (OK, WARN, FAIL)},
            "checks": [c.to_dict() for c in self.checks],
            "project_config": self.project_config,
        }


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """(exit status, stdout+stderr) of a short probe; (None, why) if it could not run."""
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT,
            env=env, check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"no answer within {PROBE_TIMEOUT:g}s"
    except OSError as exc:
        return None, exc.strerror or str(exc)
    text = (done.stdout + b"\n" + done.stderr).decode("utf-8", "replace")
    return done.returncode, text


def _meaningful(text: str) -> list[str]:
    """Output lines without codex's harmless warnings (e.g. CODEX_HOME under /tmp)."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING:")]


def codex_home() -> tuple[Path, bool]:
    """CODEX_HOME and whether it was set explicitly."""
    value = os.environ.get("CODEX_HOME")
    if value:
        return Path(value).expanduser(), True
    return Path.home() / ".codex", False


# -- the checks -----------------------------------------------------------------------


def check_config(project: Path) -> tuple[Check, Config | None]:
    try:
        config = load_config(project)
    except CodexwError as exc:
        return Check("config", FAIL, exc.message, exc.hint or "fix the file named above"), None
    files = sorted(set(config.sources.values()))
    detail = "valid" + (f" ({', '.join(files)})" if files else " (defaults only)")
    return Check("config", OK, detail), config


def check_trust(config: Config | None, project: Path) -> Check | None:
    """Is the project config trusted, and which of its keys are ignored until it is?"""
    if config is None:
        return None  # the config check failed already
    info = config.project
    if info is None:
        return Check("trust", OK, f"no project config in {project}")
    if info.state == "not needed":
        return Check("trust", OK, f"{info.file} sets no key that needs trust")
    keys = ", ".join(info.needs_trust)
    if not info.ignored:
        return Check("trust", OK, f"{info.file} is trusted: {keys} in effect")
    why = "edited since it was trusted" if info.state == "changed" else "not trusted"
    return Check("trust", WARN, f"{info.file} is {why}: ignoring {', '.join(info.ignored)}",
                 "review the file, then run `codexw trust`")


def check_app_server(codex: str) -> Check:
    """`backend = "app-server"` (experimental) accepts only the codex versions it was
    tested with."""
    code, out = _run([codex, "--version"])
    refusal = app_server_refusal(out) if code == 0 else f"`{codex} --version` failed"
    if refusal is not None:
        return Check("app-server backend", FAIL, refusal.split(": ", 1)[0],
                     refusal.split(": ", 1)[-1])
    return Check("app-server backend", OK, f"experimental; codex {out.strip().split()[-1]}"
                 " is a tested version")


def check_codex(codex_bin: str, native: bool = True) -> tuple[list[Check], str | None]:
    found = shutil.which(codex_bin)
    if found is None:
        problem, hint = missing_codex(codex_bin)
        return [Check("codex", FAIL, problem, hint)], None
    path = os.path.abspath(found)
    code, out = _run([path, "--version"])
    if code != 0:
        why = out if code is None else (_meaningful(out) or [f"exit status {code}"])[-1]
        return [Check("codex", FAIL, f"{path} does not run: {why}",
                      "the npm package needs Node.js 16+ on PATH; reinstall codex")], None
    version = parse_version(out)
    program = codexbin.locate(path, native)
    checks = [Check("codex", OK, f"{path}"), Check("codex program", OK, (
        f"jobs start the native binary {program.path} (the npm wrapper is bypassed;"
        " `codex_native = false` keeps it)" if program.kind == codexbin.NATIVE
        else f"jobs start the npm wrapper: {program.note}" if program.kind == codexbin.WRAPPER
        else f"jobs start {program.path} as it is"))]
    shown = ".".join(map(str, version)) if version else "unknown"
    minimum = ".".join(map(str, MIN_CODEX_VERSION))
    if version is None:
        checks.append(Check("codex version", WARN, f"cannot read a version from {out.strip()!r}",
                            f"codexw is tested with codex {TESTED_CODEX_VERSION}"))
    elif version < MIN_CODEX_VERSION:
        checks.append(Check("codex version", WARN, f"{shown} is older than {minimum}",
                            f"upgrade: npm install -g @openai/codex@{TESTED_CODEX_VERSION}"))
    else:
        checks.append(Check("codex version", OK, f"{shown} (minimum {minimum})"))
    return checks, path


def _custom_provider(home: Path) -> tuple[str, str | None] | None:
    """(provider, env_key) when CODEX_HOME/config.toml selects a non-OpenAI provider."""
    try:
        with (home / "config.toml").open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    provider = data.get("model_provider")
    if not isinstance(provider, str) or provider == "openai":
        return None
    table = (data.get("model_providers") or {}).get(provider) or {}
    env_key = table.get("env_key") if isinstance(table, dict) else None
    return provider, env_key if isinstance(env_key, str) else None


def check_login(codex: str, home: Path) -> Check:
    env = dict(os.environ)
    code, out = _run([codex, "login", "status"], env=env)
    lines = _meaningful(out)
    said = lines[0] if lines else ""
    if code == 0:
        return Check("login", OK, said or "logged in")
    custom = _custom_provider(home)
    if custom is not None:
        provider, env_key = custom
        if env_key and not os.environ.get(env_key):
            return Check("login", WARN, f"model_provider {provider!r} reads {env_key}, which is unset",
                         f"export {env_key}=… before launching jobs")
        return Check("login", OK, f"not logged in; model_provider {provider!r} needs no login")
    why = said or (out.strip() if code is None else f"exit status {code}")
    return Check("login", FAIL, f"codex login status: {why}",
                 "run `codex login`, or `printf %s \"$OPENAI_API_KEY\" | codex login --with-api-key`")


def check_codex_home(home: Path, explicit: bool) -> Check:
    where = f"{home}" + ("" if explicit else " (default; set CODEX_HOME to change)")
    if not home.exists():
        if explicit:
            return Check("CODEX_HOME", FAIL, f"{home} does not exist",
                         "codex refuses a CODEX_HOME that does not exist: create it")
        return Check("CODEX_HOME", WARN, f"{where} does not exist yet",
                     "`codex login` creates it")
    if not home.is_dir():
        return Check("CODEX_HOME", FAIL, f"{home} is not a directory", "point CODEX_HOME at a directory")
    if not os.access(home, os.W_OK | os.X_OK):
        return Check("CODEX_HOME", FAIL, f"{home} is not writable",
                     "codex keeps sessions there (needed by `codexw continue`): fix its permissions")
    return Check("CODEX_HOME", OK, f"{where}, writable")


def check_state() -> Check:
    from codexw.core.store import Store

    directory = paths.state_dir()
    try:
        store = Store.open()
    except CodexwError as exc:
        return Check("registry", FAIL, exc.message, exc.hint or "set CODEXW_STATE_DIR to a writable dir")
    try:
        with store:
            result = store.conn.execute("PRAGMA quick_check").fetchone()[0]
            jobs = store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            journal = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
    except Exception as exc:  # sqlite3.DatabaseError and friends
        return Check("registry", FAIL, f"{paths.db_path()}: {exc}",
                     "move the file away; codexw starts a new registry")
    if result != "ok":
        return Check("registry", FAIL, f"{paths.db_path()}: integrity check says {result}",
                     "move the file away; codexw starts a new registry")
    mode = directory.stat().st_mode & 0o777
    detail = f"{paths.db_path()} ({jobs} job{'s' * (jobs != 1)}, {journal})"
    if mode & 0o077:
        return Check("registry", WARN, f"{detail}; state dir {directory} is mode {mode:o}",
                     f"chmod 700 {directory}: logs hold task text")
    if not os.access(paths.logs_dir(), os.W_OK | os.X_OK):
        return Check("registry", FAIL, f"{paths.logs_dir()} is not writable",
                     "fix the permissions of the state directory")
    return Check("registry", OK, detail)


def check_limits() -> Check:
    """The accounts' rate limiters: throttled ones, spent budgets, the waker."""
    from codexw.core import limiter
    from codexw.services.status import limits

    try:
        found = limits()
    except CodexwError as exc:
        return Check("rate limits", WARN, exc.message, exc.hint)
    held = [f"{a.label}: {limiter.describe(a)}" for a in found.accounts
            if a.throttled or a.budget_spent]
    waker = (f"; waker pid {found.waker['pid']} starts queued jobs later"
             if found.waker is not None else "")
    if held:
        return Check("rate limits", WARN, "; ".join(held) + waker,
                     "queued jobs start by themselves when the limit lifts")
    return Check("rate limits", OK, "no account is rate-limited or over budget" + waker)


def check_templates(config: Config | None) -> Check:
    folders = [paths.packaged_templates_dir()]
    if config is not None and config.templates_dir:
        custom = Path(config.templates_dir).expanduser()
        if not custom.is_dir():
            return Check("templates", FAIL, f"templates_dir {custom} is not a directory",
                         "fix templates_dir in the config")
        folders.append(custom)
    checked = []
    for folder in folders:
        for template in sorted(folder.glob("*-task.md")):
            try:
                templates.check_template(template)
            except CodexwError as exc:
                return Check("templates", FAIL, exc.message, exc.hint)
            checked.append(template.name)
    if not checked:
        return Check("templates", FAIL, "no *-task.md templates found",
                     f"reinstall codexw (expected them in {paths.packaged_templates_dir()})")
    return Check("templates", OK, f"{len(checked)} render: {', '.join(sorted(set(checked)))}")


def _pdeathsig_available() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        value = ctypes.c_int(0)
        PR_GET_PDEATHSIG = 2  # a read-only probe: nothing changes for this process
        return libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def check_os(platform: str = sys.platform) -> Check:
    """Linux is what codexw is tested on; elsewhere it runs on fallbacks nobody tests."""
    if platform.startswith("linux"):
        return Check("platform", OK, "Linux: tested")
    if platform == "darwin":
        return Check(
            "platform", WARN,
            "macOS: not tested; codexw falls back to psutil for /proc, to polling for pidfd,"
            " and a crashed runner's codex is stopped by the next codexw command",
            "report what breaks; Linux is the supported platform",
        )
    return Check("platform", WARN, f"{platform}: not tested and not supported",
                 "codexw is tested on Linux (macOS runs on untested fallbacks)")


def check_platform() -> list[Check]:
    checks = [check_os()]
    if process.pidfd_supported():
        checks.append(Check("pidfd", OK, "available: `wait` wakes the moment a runner exits"))
    else:
        checks.append(Check("pidfd", WARN, "not available on this system",
                            "wait falls back to polling (Linux 5.3+ and Python 3.9+ have it)"))
    if _pdeathsig_available():
        checks.append(Check("PR_SET_PDEATHSIG", OK, "available: codex dies with its runner"))
    else:
        checks.append(Check("PR_SET_PDEATHSIG", WARN, "not available (Linux only)",
                            "a crashed runner's codex is stopped by the next codexw command"))
    git = shutil.which("git")
    if git:
        checks.append(Check("git", OK, f"{git}: reports list the files a run changed"))
    else:
        checks.append(Check("git", WARN, "not found",
                            "reports then list only the files codex's patch tool changed"))
    return checks


def run_doctor(cwd: str | None = None) -> DoctorReport:
    project = paths.project_root(cwd or os.getcwd())
    checks: list[Check] = []
    config_check, config = check_config(project)
    checks.append(config_check)
    trust_check = check_trust(config, project)
    if trust_check is not None:
        checks.append(trust_check)
    codex_checks, codex = check_codex(config.codex_bin if config else "codex",
                                      config.codex_native if config else True)
    checks += codex_checks
    if config is not None and config.backend == "app-server" and codex is not None:
        checks.append(check_app_server(codex))
    home, explicit = codex_home()
    home_check = check_codex_home(home, explicit)
    checks.append(home_check)
    if codex is None:
        checks.append(Check("login", WARN, "not checked: codex is missing", INSTALL_HINT))
    elif home_check.status == FAIL:
        checks.append(Check("login", WARN, "not checked: CODEX_HOME is unusable", home_check.hint))
    else:
        checks.append(check_login(codex, home))
    state_check = check_state()
    checks.append(state_check)
    if state_check.status != FAIL:
        checks.append(check_limits())
    checks.append(check_templates(config))
    checks += check_platform()
    info = config.project if config is not None else None
    return DoctorReport(checks, info.to_dict() if info is not None else None)
