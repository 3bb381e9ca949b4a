"""Output helpers: rich for people at a terminal, plain text otherwise, JSON for scripts."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

from typer._click.types import IntParamType, IntRange

from codexw.core.durations import format_duration
from codexw.core.models import Job, JobState
from codexw.core.validate import MAX_ID

JSON_VERSION = 1


class IdRange(IntRange):
    """A job or batch id (or a count), 1 … 2^63−1: past SQLite's INTEGER the parser
    refuses it in one line (exit 2), instead of an OverflowError from the registry.
    The bound is checked but not printed on every help line (it is the same for all)."""

    def __init__(self) -> None:
        super().__init__(min=1, max=MAX_ID)

    def _describe_range(self) -> str:
        return ""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = IntParamType.convert(self, value, param, ctx)
        if not 1 <= number <= MAX_ID:
            self.fail(f"{number} is out of range (1 to {MAX_ID})", param, ctx)
        return number


# Every id and count argument: the bounds above, the one placeholder style.
ID: dict[str, Any] = {"click_type": IdRange()}

STATE_STYLE = {
    JobState.QUEUED: "cyan",
    JobState.STARTING: "blue",
    JobState.RUNNING: "bold blue",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "bold red",
    JobState.TIMED_OUT: "red",
    JobState.KILLED: "magenta",
    JobState.LOST: "yellow",
    JobState.CANCELLED: "dim",
}


def is_tty() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


# -- the one sanitiser ---------------------------------------------------------------
# Text that came from codex (messages, commands, thread ids, reasons) or from a task
# (the task itself, paths, names) is shown, never obeyed: an ESC could write the
# clipboard (OSC 52), retitle the window (OSC 0) or clear the screen, a C1 control
# (U+009B is CSI) does the same on some terminals, a bidi override (U+202E) makes the
# text read differently from what it is, and a lone surrogate (undecodable bytes in a
# path) would make the write itself fail. Each such character is printed as a visible
# escape, the way Python writes it: ESC as \x1b, U+009B as \x9b, U+202E as \u202e,
# CR as \r. Newline and tab are kept (in a one-line field they too become \n, \t).
# --raw and --json bypass this: raw bytes as they are, JSON with its own escapes.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")
_UNSAFE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def clean(text: object, oneline: bool = False) -> str:
    """`text` with every control character shown visibly (see above)."""
    return (_UNSAFE_LINE if oneline else _UNSAFE).sub(_visible, str(text))


def write(text: str) -> None:
    """Human-readable output: through the sanitiser, whatever it quotes."""
    sys.stdout.write(clean(text))


def rich_text(text: object, style: str = "", oneline: bool = True) -> Any:
    """A rich Text: cleaned, and never read as markup (`[bold red]`) or emoji (`:x:`)."""
    from rich.text import Text

    return Text(clean(text, oneline=oneline), style=style)


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    # No markup or emoji codes in strings: untrusted text is passed as rich_text().
    return Console(stderr=stderr, highlight=False, soft_wrap=False, markup=False, emoji=False)


def emit_json(command: str, payload: dict[str, Any]) -> None:
    """One versioned object with stable keys (json escapes control characters itself)."""
    data = {"version": JSON_VERSION, "command": command, **payload}
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def error(message: str) -> None:
    sys.stderr.write(f"codexw: {clean(message, oneline=True)}\n")


def warn(message: str) -> None:
    sys.stderr.write(f"codexw: warning: {clean(message, oneline=True)}\n")


def age_or_duration(job: Job) -> str:
    if (job.state.is_final or job.state.is_active) and job.started_at is not None:
        return format_duration(job.duration)
    return format_duration(time.time() - job.queued_at) + " ago"


def task_head(task: str, width: int = 50) -> str:
    """The start of a task on one line, cleaned (runs of whitespace become one space)."""
    line = clean(" ".join(task.split()), oneline=True)
    return line if len(line) <= width else line[: width - 1] + "…"


def state_text(job: Job) -> str:
    text = job.state.value
    if job.spec.retries and (job.attempt > 1 or job.state.is_open):
        text += f" {job.attempt}/{job.spec.retries + 1}"
    if job.state == JobState.QUEUED and job.not_before and job.not_before > time.time():
        text += f" (retry in {format_duration(job.not_before - time.time())})"
    return text


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 job', '2 jobs' (`many` for irregular words)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
