"""The codex command line: argv for `codex exec`, the prompt, and the --json event stream."""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codexw.core.events import MAX_LINE_BYTES, LineSplitter, Skipped, parse_event
from codexw.core.models import TOKEN_KEYS, JobSpec

# The codex versions the e2e suite runs against (docs/e2e.md). Older ones are not refused
# but warned about: the argv codexw builds (resume with exec options before it) and the
# event stream it parses were checked on these.
MIN_CODEX_VERSION = (0, 169, 0)
TESTED_CODEX_VERSION = "0.169.0"
# `--backend app-server` speaks codex's experimental app-server protocol, which changes
# between releases: only these versions are accepted (tests/e2e/test_app_server.py).
APP_SERVER_TESTED_VERSIONS = ("0.169.0",)
INSTALL_HINT = (
    f"install it with `npm install -g @openai/codex` ({TESTED_CODEX_VERSION} or newer), or"
    " point codex_bin (config) or CODEXW_CODEX_BIN at it; `codexw doctor` checks the setup"
)


def parse_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in match.groups()) if match else None


def app_server_refusal(version_output: str) -> str | None:
    """Why `--backend app-server` will not drive this codex (None: it will)."""
    version = parse_version(version_output)
    shown = ".".join(map(str, version)) if version else repr(version_output.strip()[:40])
    if version is not None and shown in APP_SERVER_TESTED_VERSIONS:
        return None
    return (f"codex {shown} is not a version the app-server backend was tested with"
            f" ({', '.join(APP_SERVER_TESTED_VERSIONS)}): its protocol changes between releases;"
            f" use the default backend, or install @openai/codex@{APP_SERVER_TESTED_VERSIONS[-1]}")


def missing_codex(codex_bin: str) -> tuple[str, str]:
    """(problem, hint) for a codex_bin that `shutil.which` did not find. A path names
    what is wrong with that path (installing codex from npm would not fix it)."""
    import os

    if os.sep not in codex_bin:
        return f"codex not found: {codex_bin!r} is not on PATH", INSTALL_HINT
    fix = "fix codex_bin (config) or CODEXW_CODEX_BIN, or unset it to use codex from PATH"
    if not os.path.exists(codex_bin):
        return f"codex not found: {codex_bin} does not exist", fix
    if os.path.isdir(codex_bin):
        return f"codex not found: {codex_bin} is a directory", fix
    return f"codex is not executable: {codex_bin}", f"chmod +x it, or {fix}"


REPORT_SECTIONS = ("Task Summary", "Files Modified", "Changes Made", "Issues Encountered", "Next Steps")

PROMPT_SUFFIX = (
    "\n\n---\nWhen you are done, end with a final message in Markdown with these sections,"
    " each as a `##` heading: " + ", ".join(REPORT_SECTIONS) + "."
)


def build_prompt(task: str, sections: bool = True) -> str:
    """What codex reads on stdin: the task, then (unless `sections` is off) the report
    format we ask for."""
    return task + PROMPT_SUFFIX if sections else task


def configured_model(spec: JobSpec) -> str | None:
    """The model codex picks when codexw names none: a `-c model=…` override, else the
    profile's (`$CODEX_HOME/<profile>.config.toml`), else `$CODEX_HOME/config.toml`'s;
    None when none says (codex then uses its built-in default)."""
    import tomllib

    args = list(spec.codex_args)
    profile = None
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "-c" and value.replace(" ", "").startswith("model="):
            try:
                found = tomllib.loads("v = " + value.split("=", 1)[1]).get("v")
            except ValueError:
                found = None
            return found[:200] if isinstance(found, str) and found else None
        if flag in ("-p", "--profile"):
            profile = value
    home = Path(spec.codex_home or os.path.expanduser("~/.codex"))
    candidates = [home / f"{profile}.config.toml"] if profile else []
    for path in [*candidates, home / "config.toml"]:
        try:
            model = tomllib.loads(path.read_text(encoding="utf-8")).get("model")
        except (OSError, ValueError):
            continue
        if isinstance(model, str) and model:
            return model[:200]
    return None


def in_git_repo(cwd: str) -> bool:
    here = Path(cwd).resolve()
    return any((p / ".git").exists() for p in (here, *here.parents))


def auto_skip_git_check(spec: JobSpec) -> bool:
    """True when codexw adds --skip-git-repo-check itself (cwd is outside a git repo)."""
    return not in_git_repo(spec.cwd) and "--skip-git-repo-check" not in spec.codex_args


def build_argv(spec: JobSpec, program: str | None = None) -> list[str]:
    """argv for one run; the prompt always goes on stdin (`-`), never on argv. `program`
    is what to exec for codex (core.codexbin), `spec.codex_bin` by default.

    A follow-up is `codex exec [OPTIONS] resume THREAD -`: the `resume` subcommand
    itself rejects -s, -C, --add-dir and -p, but codex (0.169.0, checked against the
    real CLI) honours every `exec` option given before it. Without them a resumed
    run falls back to a read-only sandbox.
    """
    argv = [
        program or spec.codex_bin,
        "exec",
        "--json",
        "-c",
        f'model_reasoning_effort="{spec.level}"',
        "-c",
        'approval_policy="never"',
        "-s",
        spec.sandbox,
        "-C",
        spec.cwd,
    ]
    if spec.model:
        argv += ["-m", spec.model]
    if auto_skip_git_check(spec):
        argv.append("--skip-git-repo-check")
    argv += list(spec.codex_args)
    if spec.resume_thread:
        argv += ["resume", spec.resume_thread]
    argv.append("-")
    return argv


_TRANSIENT_RE = re.compile(
    r"\b(429|500|502|503|504)\b|too many requests|rate.?limit|high demand|temporar|"
    r"overloaded|stream (error|disconnected|closed)|connection (reset|refused|closed|error)|"
    r"timed? ?out|retry limit",
    re.IGNORECASE,
)


def is_transient(message: str | None) -> bool:
    return bool(message and _TRANSIENT_RE.search(message))


# A rate limit (HTTP 429, codex's "exceeded retry limit, last status: 429 Too Many
# Requests", a usage limit), as opposed to a quota that no waiting restores.
_RATE_LIMIT_RE = re.compile(
    r"\b429\b|too many requests|rate.?limit|usage limit", re.IGNORECASE
)
_QUOTA_RE = re.compile(r"insufficient.quota|exceeded your current quota", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "m": 60.0,
          "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hour": 3600.0,
          "hours": 3600.0}
_RETRY_IN_RE = re.compile(
    r"(?:try again|retry|resets?) in\s+(\d+(?:\.\d+)?)\s*(ms|seconds?|sec|s|minutes?|min|m|"
    r"hours?|h)\b|retry-after:?\s*(\d+(?:\.\d+)?)",
    re.IGNORECASE,
)
_RETRY_AT_RE = re.compile(
    r"(?:try again|resets?) at\s+(\d{1,2}):(\d{2})\s*([ap]\.?m\.?)?", re.IGNORECASE
)
MAX_RETRY_AFTER = 24 * 3600.0


def rate_limit(message: str | None, now: float | None = None) -> tuple[bool, float | None]:
    """(whether `message` reports a rate limit, seconds until it lifts if it says so:
    "try again in 1.5s", "Retry-After: 20", "try again at 3:45 PM")."""
    if not message or not _RATE_LIMIT_RE.search(message) or _QUOTA_RE.search(message):
        return False, None
    match = _RETRY_IN_RE.search(message)
    if match:
        if match.group(3) is not None:
            return True, min(MAX_RETRY_AFTER, float(match.group(3)))
        return True, min(MAX_RETRY_AFTER, float(match.group(1)) * _UNITS[match.group(2).lower()])
    at = _RETRY_AT_RE.search(message)
    if at:
        import time

        hour, minute = int(at.group(1)) % 24, int(at.group(2))
        meridiem = (at.group(3) or "").lower().replace(".", "")
        if meridiem == "pm" and hour < 12:
            hour += 12
        elif meridiem == "am" and hour == 12:
            hour = 0
        now = time.time() if now is None else now
        local = time.localtime(now)
        target = time.mktime((local.tm_year, local.tm_mon, local.tm_mday, hour, minute, 0,
                              0, 0, -1))
        if target <= now:
            target += 24 * 3600
        return True, min(MAX_RETRY_AFTER, target - now)
    return True, None


# Bounds on what a summary keeps: codex's stdout is untrusted, so no stream of events can
# grow the runner's memory without limit or put a value SQLite refuses in the registry.
# Tokens per value and per run, saturating: a trillion is far beyond any real run, and keeps
# every sum SQLite makes (`status --stats` adds all jobs' counts) below 2**63.
MAX_TOKENS = 10**12
MAX_COMMANDS = 500  # the last ones are kept, the rest counted
MAX_FILES = 2000  # the first ones are kept, the rest counted
MAX_MESSAGES = 5  # the last ones (the report uses the final one)
MAX_WARNINGS = 50  # the first ones, then a count
MAX_MESSAGE_CHARS = 1 << 20
MAX_COMMAND_CHARS = 8192
MAX_PATH_CHARS = 4096
MAX_ERROR_CHARS = 4096
MAX_WARNING_CHARS = 500
# A thread id becomes an argv word of `codex exec resume`: a short token, never an option.
THREAD_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass
class CommandRun:
    command: str
    exit_code: int | None = None
    status: str = "in_progress"


@dataclass
class RunSummary:
    """What a run did, folded from its event stream as it arrives.

    Every value read from an event is checked for type and range before it is kept;
    what cannot be understood is skipped and noted in `warnings` (bounded)."""

    thread_id: str | None = None
    commands: OrderedDict[str, CommandRun] = field(default_factory=OrderedDict)
    files: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KEYS, 0))
    # A resumed thread's first turn.completed reports the thread's total so far (codex
    # 0.169.0 adds the earlier runs' usage); the runner sets what those runs used.
    usage_baseline: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    turn_failed: bool = False
    turn_ended: bool = False  # a turn.completed or turn.failed arrived: codex is finishing
    last_action: str | None = None
    events: int = 0
    bad_lines: int = 0
    lines: int = 0  # lines seen, so a warning can name the line of the event log
    _splitter: LineSplitter = field(default_factory=LineSplitter, repr=False, compare=False)
    # warning line index per kind of counted note ("N more warnings", dropped commands…)
    _notes: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def final_message(self) -> str | None:
        return self.messages[-1] if self.messages else None

    # -- reading the stream ------------------------------------------------------------

    def feed_bytes(self, chunk: bytes) -> None:
        """Raw stdout as it arrives, in chunks of any size (linear in their length)."""
        for line in self._splitter.feed(chunk):
            self.feed_line(line)

    def end_of_stream(self) -> None:
        """The stream ended: a last line without its newline still counts."""
        for line in self._splitter.close():
            self.feed_line(line)

    def feed_line(self, line: bytes | str | Skipped) -> dict[str, Any] | None:
        self.lines += 1
        if isinstance(line, Skipped):
            self._unparsed(f"{line.size} bytes, over the {MAX_LINE_BYTES} byte limit")
            return None
        raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
        event, why = parse_event(raw)
        if why is not None:
            self._unparsed(why)
            return None
        if event is None:
            if raw.strip():
                self.bad_lines += 1  # stray text or a bare JSON value: only counted, as always
            return None
        self.feed(event)
        return event

    def _unparsed(self, why: str) -> None:
        self.bad_lines += 1
        self.warn(f"codex event line {self.lines}: {why}; not parsed (kept in the event log)")

    def feed(self, event: dict[str, Any]) -> None:
        self.events += 1
        try:
            self._feed(event)
        except Exception as exc:  # noqa: BLE001 - a last net: no event may stop the runner
            self.warn(f"codex event line {self.lines}: not understood ({type(exc).__name__})")

    def _feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "thread.started":
            thread_id = event.get("thread_id")
            if isinstance(thread_id, str) and THREAD_ID_RE.fullmatch(thread_id):
                self.thread_id = thread_id
            elif thread_id is not None:
                self._odd("thread.started", "thread_id", thread_id)
        elif kind == "turn.completed":
            self.turn_ended = True
            self._add_usage(event.get("usage"))
        elif kind == "turn.failed":
            self.turn_failed = self.turn_ended = True
            err = event.get("error")
            message = err.get("message") if isinstance(err, dict) else err
            if message is not None and not isinstance(message, str):
                self._odd("turn.failed", "error message", message)
            self.error = bounded_text(message, MAX_ERROR_CHARS) or self.error
            self.last_action = _short(f"failed: {self.error}")
        elif kind == "error":
            message = event.get("message")
            if message is not None and not isinstance(message, str):
                self._odd("error", "message", message)
            self.error = bounded_text(message, MAX_ERROR_CHARS) or "codex reported an error"
            self.last_action = _short(f"error: {self.error}")
        elif kind in ("item.started", "item.updated", "item.completed"):
            item = event.get("item")
            if isinstance(item, dict):
                self._feed_item(item, completed=kind == "item.completed")
            elif item is not None:
                self._odd(str(kind), "item", item)

    def _add_usage(self, usage: object) -> None:
        if usage is None:
            return
        if not isinstance(usage, dict):
            self._odd("turn.completed", "usage", usage)
            return
        for key in TOKEN_KEYS:
            value = usage.get(key)
            if value is None:
                continue
            if type(value) is not int or value < 0:  # bool is an int: refused too
                self._odd("turn.completed", key, value)
                continue
            if value > MAX_TOKENS:
                self._odd("turn.completed", key, value)
                value = MAX_TOKENS
            used = max(0, value - self.usage_baseline.get(key, 0))
            self.usage[key] = min(MAX_TOKENS, self.usage[key] + used)  # saturates
        self.usage_baseline = {}

    def _feed_item(self, item: dict[str, Any], completed: bool) -> None:
        item_type = item.get("type")
        item_id = bounded_text(item.get("id"), 200) if isinstance(item.get("id"), (str, int)) else None
        item_id = item_id or f"#{self.events}"
        if item_type == "command_execution":
            run = self.commands.get(item_id)
            if run is None:
                run = self.commands[item_id] = CommandRun("")
                if len(self.commands) > MAX_COMMANDS:
                    self.commands.popitem(last=False)
                    self._count("commands", "earlier commands not listed (the last"
                                f" {MAX_COMMANDS} are)")
            command = item.get("command")
            if isinstance(command, list) and all(isinstance(a, str) for a in command):
                command = " ".join(command)
            elif command is not None and not isinstance(command, str):
                self._odd("command_execution", "command", command)
            run.command = bounded_text(command, MAX_COMMAND_CHARS) or run.command
            exit_code = item.get("exit_code")
            if type(exit_code) is int and -(2**31) <= exit_code < 2**31:
                run.exit_code = exit_code
            elif exit_code is not None:
                self._odd("command_execution", "exit_code", exit_code)
            run.status = bounded_text(item.get("status"), 32) or run.status
            if completed:
                self.last_action = f"ran `{_short(run.command)}` → exit {run.exit_code}"
            else:
                self.last_action = f"running `{_short(run.command)}`"
        elif item_type == "file_change":
            changes = item.get("changes")
            if changes is None:
                changes = []
            elif not isinstance(changes, list):
                self._odd("file_change", "changes", changes)
                changes = []
            paths = []
            for change in changes:
                path = change.get("path") if isinstance(change, dict) else None
                if not isinstance(path, str) or not path:
                    self._odd("file_change", "change", change)
                    continue
                path = bounded_text(path, MAX_PATH_CHARS) or ""
                if path not in self.files and len(self.files) >= MAX_FILES:
                    self._count("files", f"more files changed (the first {MAX_FILES} are listed)")
                    continue
                kind = change.get("kind")
                self.files[path] = (bounded_text(kind, 32) if isinstance(kind, str) else None) or "update"
                paths.append(path)
            if completed and paths:
                self.last_action = _short("changed " + ", ".join(paths[-3:]))
        elif item_type == "agent_message" and completed:
            text = item.get("text")
            if text is not None and not isinstance(text, str):
                self._odd("agent_message", "text", text)
            elif text:
                if len(text) > MAX_MESSAGE_CHARS:
                    self.warn(f"an agent message of {len(text)} characters was cut to"
                              f" {MAX_MESSAGE_CHARS}")
                self.messages.append(bounded_text(text, MAX_MESSAGE_CHARS) or "")
                if len(self.messages) > MAX_MESSAGES:
                    del self.messages[0]
                self.last_action = "said: " + _short(self.messages[-1])
        elif item_type == "error" and completed:
            # An error *item* is a warning (e.g. missing model metadata), not a failure.
            self.warn(bounded_text(item.get("message"), MAX_WARNING_CHARS) or "")
        elif item_type == "reasoning" and completed:
            self.last_action = "thinking"
        elif completed and item_type:
            self.last_action = _short(str(bounded_text(item_type, 80)).replace("_", " "))

    # -- warnings, bounded -------------------------------------------------------------

    def warn(self, text: str) -> None:
        """Note something in the report: the first MAX_WARNINGS, then a count."""
        if len(self.warnings) - len(self._notes) < MAX_WARNINGS:
            self.warnings.append(bounded_text(text, MAX_WARNING_CHARS) or "")
        else:
            self._count("warnings", "more warnings not shown (see the event log)")

    def _count(self, kind: str, what: str) -> None:
        """One warning line per kind that says how many times it happened."""
        at, n = self._notes.get(kind, (-1, 0))
        if not 0 <= at < len(self.warnings):
            at = len(self.warnings)
            self.warnings.append("")
        self._notes[kind] = (at, n + 1)
        self.warnings[at] = f"{n + 1} {what}"

    def _odd(self, event: str, name: str, value: object) -> None:
        shown = bounded_text(value, 60) if isinstance(value, str) else type(value).__name__
        if type(value) is int:
            shown = f"int of {value.bit_length()} bits" if value.bit_length() > 62 else str(value)
        self.warn(f"codex event line {self.lines}: {event} with an unusable {name} ({shown});"
                  " ignored")


def bounded_text(value: object, limit: int) -> str | None:
    """`value` as a bounded string SQLite and a UTF-8 file accept, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif type(value) is int and value.bit_length() > 64:
        text = f"<int of {value.bit_length()} bits>"
    elif isinstance(value, (int, float)):
        text = str(value)
    else:  # a list or object (at most MAX_DEPTH deep): shown compactly, in bounded size
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)[: limit + 1]
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from \\ud800 escapes
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _short(text: str, width: int = 80) -> str:
    line = " ".join(text[: width * 4].split())
    return line if len(line) <= width else line[: width - 1] + "…"
