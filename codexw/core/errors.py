"""Typed errors. Each carries the exit code the CLI uses and a hint for the user.

Exit codes: 2 means the user's input was wrong (a flag, a task, a config value, a job
id that does not exist) and nothing was recorded; 1 means the input was fine but the
command could not do its work (a job failed, the registry cannot be written, the disk
is full, a lock stayed busy). Scripts can tell "fix the command" from "try again later".
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_FAILED = 1  # the command could not do its work (environment, not input)
EXIT_USAGE = 2
EXIT_WAIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130


class CodexwError(Exception):
    """Base of every error codexw reports to the user."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(CodexwError):
    """Bad input from the user: nothing was recorded."""


class ConfigError(CodexwError):
    """A config file or CODEXW_* variable is malformed."""


class NotFoundError(CodexwError):
    """A job or batch id that the registry does not know."""


class NoLogError(NotFoundError):
    """A job that exists but has nothing to show (it never ran): not a usage error, the
    command just has no work to do, so exit 1 as for a job that did not succeed."""

    exit_code = EXIT_FAILED


class StoreError(CodexwError):
    """The registry, a report or a lock cannot be opened, read or written (full disk,
    read-only mount, corrupt file): the environment, not the user's input."""

    exit_code = EXIT_FAILED


class TemplateError(CodexwError):
    """A report template does not parse or uses an unknown variable."""


class CodexMissingError(CodexwError):
    """The codex binary cannot be found or run."""


class BusyError(CodexwError):
    """Another codexw process holds a lock this command needs, for longer than it waits."""

    exit_code = EXIT_FAILED


class GitError(CodexwError):
    """A git command codexw needs failed (a worktree, a commit, a merge): the
    repository's state, not the command line."""

    exit_code = EXIT_FAILED


class MergeConflict(CodexwError):
    """A job's branch does not merge cleanly; the tree was left as it was."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None,
                 files: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint)
        self.files = files
