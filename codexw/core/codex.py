"""The codex command line: argv for `codex exec`, the prompt, and the --json event stream."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codexw.core.models import TOKEN_KEYS, JobSpec

# The codex versions the e2e suite runs against (docs/e2e.md). Older ones are not refused
# but warned about: the argv codexw builds (resume with exec options before it) and the
# event stream it parses were checked on these.
MIN_CODEX_VERSION = (0, 169, 0)
TESTED_CODEX_VERSION = "0.169.0"
INSTALL_HINT = (
    f"install it with `npm install -g @openai/codex@{TESTED_CODEX_VERSION}`, or point codex_bin"
    " (config) or CODEXW_CODEX_BIN at it; `codexw doctor` checks the setup"
)

REPORT_SECTIONS = ("Task Summary", "Files Modified", "Changes Made", "Issues Encountered", "Next Steps")

PROMPT_SUFFIX = (
    "\n\n---\nWhen you are done, end with a final message in Markdown with these sections,"
    " each as a `##` heading: " + ", ".join(REPORT_SECTIONS) + "."
)


def build_prompt(task: str) -> str:
    """What codex reads on stdin: the task, then the report format we ask for."""
    return task + PROMPT_SUFFIX


def in_git_repo(cwd: str) -> bool:
    here = Path(cwd).resolve()
    return any((p / ".git").exists() for p in (here, *here.parents))


def auto_skip_git_check(spec: JobSpec) -> bool:
    """True when codexw adds --skip-git-repo-check itself (cwd is outside a git repo)."""
    return not in_git_repo(spec.cwd) and "--skip-git-repo-check" not in spec.codex_args


def build_argv(spec: JobSpec) -> list[str]:
    """argv for one run; the prompt always goes on stdin (`-`), never on argv.

    A follow-up is `codex exec [OPTIONS] resume THREAD -`: the `resume` subcommand
    itself rejects -s, -C, --add-dir and -p, but codex (0.169.0, checked against the
    real CLI) honours every `exec` option given before it. Without them a resumed
    run falls back to a read-only sandbox.
    """
    argv = [
        spec.codex_bin,
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


@dataclass
class CommandRun:
    command: str
    exit_code: int | None = None
    status: str = "in_progress"


@dataclass
class RunSummary:
    """What a run did, folded from its event stream as it arrives."""

    thread_id: str | None = None
    commands: dict[str, CommandRun] = field(default_factory=dict)
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

    @property
    def final_message(self) -> str | None:
        return self.messages[-1] if self.messages else None

    def feed_line(self, line: bytes | str) -> dict[str, Any] | None:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        text = text.strip()
        if not text:
            return None
        try:
            event = json.loads(text)
        except ValueError:
            self.bad_lines += 1
            return None
        if not isinstance(event, dict):
            self.bad_lines += 1
            return None
        self.feed(event)
        return event

    def feed(self, event: dict[str, Any]) -> None:
        self.events += 1
        kind = event.get("type")
        if kind == "thread.started":
            self.thread_id = event.get("thread_id") or self.thread_id
        elif kind == "turn.completed":
            self.turn_ended = True
            usage = event.get("usage") or {}
            for key in TOKEN_KEYS:
                value = usage.get(key)
                if isinstance(value, int):
                    self.usage[key] += max(0, value - self.usage_baseline.get(key, 0))
            self.usage_baseline = {}
        elif kind == "turn.failed":
            self.turn_failed = self.turn_ended = True
            err = event.get("error") or {}
            self.error = (err.get("message") if isinstance(err, dict) else str(err)) or self.error
            self.last_action = f"failed: {self.error}"
        elif kind == "error":
            self.error = str(event.get("message") or "codex reported an error")
            self.last_action = f"error: {self.error}"
        elif kind in ("item.started", "item.updated", "item.completed"):
            item = event.get("item")
            if isinstance(item, dict):
                self._feed_item(item, completed=kind == "item.completed")

    def _feed_item(self, item: dict[str, Any], completed: bool) -> None:
        item_type = item.get("type")
        item_id = str(item.get("id") or len(self.commands))
        if item_type == "command_execution":
            run = self.commands.setdefault(item_id, CommandRun(str(item.get("command", ""))))
            if item.get("command"):
                run.command = str(item["command"])
            if isinstance(item.get("exit_code"), int):
                run.exit_code = item["exit_code"]
            run.status = str(item.get("status") or run.status)
            if completed:
                self.last_action = f"ran `{_short(run.command)}` → exit {run.exit_code}"
            else:
                self.last_action = f"running `{_short(run.command)}`"
        elif item_type == "file_change":
            for change in item.get("changes") or []:
                if isinstance(change, dict) and change.get("path"):
                    self.files[str(change["path"])] = str(change.get("kind") or "update")
            if completed:
                self.last_action = "changed " + ", ".join(list(self.files)[-3:])
        elif item_type == "agent_message" and completed:
            text = str(item.get("text") or "")
            if text:
                self.messages.append(text)
                self.last_action = "said: " + _short(text)
        elif item_type == "error" and completed:
            # An error *item* is a warning (e.g. missing model metadata), not a failure.
            self.warnings.append(str(item.get("message") or ""))
        elif item_type == "reasoning" and completed:
            self.last_action = "thinking"
        elif completed and item_type:
            self.last_action = str(item_type).replace("_", " ")


def _short(text: str, width: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
