"""Directories that never lead through a symbolic link, durability, and the run lock.

Every name is resolved relative to an open directory descriptor and never through a
symbolic link (O_NOFOLLOW on each step, lstat for listings).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from codexw.core.errors import BusyError, StoreError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Entry = os.DirEntry[str] | os.stat_result


def entry_stat(entry: Entry) -> os.stat_result:
    return entry.stat(follow_symlinks=False) if isinstance(entry, os.DirEntry) else entry


class UnsafePath(OSError):
    """A directory on the way is a symbolic link or not a directory: not followed."""


class Dir:
    """An open directory. Names below it never resolve through a symbolic link."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self._dev: int | None = None

    @property
    def dev(self) -> int:
        """The filesystem it is on."""
        if self._dev is None:
            self._dev = os.fstat(self.fd).st_dev
        return self._dev

    @classmethod
    def open(cls, path: str) -> Dir:
        """Open a top-level directory (a project or the log folder) as named."""
        return cls(os.open(path, _DIR_FLAGS), path)

    def sub(self, name: str, create: bool = False, mode: int = 0o777) -> Dir | None:
        """Open the directory `name` inside this one; None if it does not exist."""
        if create:
            try:
                os.mkdir(name, mode, dir_fd=self.fd)
            except FileExistsError:
                pass
        try:
            fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(
                    exc.errno, "a symbolic link or not a directory: not followed", self.join(name)
                ) from None
            raise
        return Dir(fd, self.join(name))

    def existing(self, name: str) -> Dir:
        """`sub(name)`, or FileNotFoundError."""
        sub = self.sub(name)
        if sub is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self.join(name))
        return sub

    def join(self, name: str) -> str:
        return f"{self.path}/{name}"

    def files(self) -> dict[str, Entry]:
        """Regular files here (by d_type or lstat: a symbolic link is not a file), in the
        directory's own order. Their `stat(follow_symlinks=False)` is taken only when
        asked for, and then cached."""
        with os.scandir(self.fd) as entries:
            return {e.name: e for e in entries if e.is_file(follow_symlinks=False)}

    def subdirs(self) -> list[str]:
        with os.scandir(self.fd) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open_fd(self, name: str) -> tuple[int, os.stat_result]:
        """A regular file opened for reading, and its stat; anything else is refused."""
        fd = os.open(name, FILE_FLAGS, dir_fd=self.fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafePath(errno.EINVAL, "not a regular file", self.join(name))
        return fd, st

    def open_file(self, name: str) -> IO[bytes]:
        """Open a regular file for reading; a symbolic link or anything else is refused."""
        fd, _st = self.open_fd(name)
        return os.fdopen(fd, "rb")

    def unlink(self, name: str) -> bool:
        """Remove a file (never what a link points to); False if it was already gone."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def rmdir_if_empty(self, name: str) -> None:
        try:
            os.rmdir(name, dir_fd=self.fd)
        except OSError:
            pass

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_recorded(stack: ExitStack, path: str) -> IO[bytes] | None:
    """Open a path the registry recorded, without following a link in its last part;
    None if it is not there."""
    parent, name = os.path.split(path)
    try:
        directory = stack.enter_context(Dir.open(parent))
    except FileNotFoundError:
        return None
    if directory.lstat(name) is None:
        return None
    return stack.enter_context(directory.open_file(name))


_syncfs: Callable[[int], int] | None = None


def _load_syncfs() -> Callable[[int], int] | None:
    global _syncfs
    if _syncfs is None:
        try:
            _syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            _syncfs = None
    return _syncfs


def sync_filesystems(directories: list[Dir]) -> None:
    """Make everything written under these directories durable at once, as sync(1)
    does but only where we wrote: syncfs(2) on each filesystem (Linux; a write-back
    error raises), else sync(2) and an fsync of each directory."""
    syncfs = _load_syncfs()
    if syncfs is None:
        os.sync()
        for directory in directories:
            directory.fsync()
        return
    seen: set[int] = set()
    for directory in directories:
        device = os.fstat(directory.fd).st_dev
        if device not in seen:
            seen.add(device)
            if syncfs(directory.fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), directory.path)


@contextmanager
def exclusive_lock(path: Path, wait: float, what: str = "cleanup") -> Iterator[None]:
    """flock(LOCK_EX) on `path`, waiting up to `wait` seconds; BusyError after that."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot open the {what} lock {path}: {exc.strerror}",
            "make the state directory writable or set CODEXW_STATE_DIR",
        ) from None
    try:
        deadline = time.monotonic() + wait
        delay = 0.02
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    raise BusyError(
                        f"another {what} (pid {holder or '?'}) is still running;"
                        f" gave up after waiting {wait:g}s",
                        "let it finish, or raise --lock-wait",
                    ) from None
                time.sleep(min(delay, left))
                delay = min(delay * 1.5, 0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
