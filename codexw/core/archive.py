"""Safe file moves for cleanup.

Every name is resolved relative to an open directory descriptor and never through a
symbolic link (O_NOFOLLOW on each step, lstat for listings). A copy is written to a
temporary name, fsynced and only then linked to its final name; the original is
removed by the caller after that, so a crash at any point leaves the original, the
finished copy, or both (which the next run recognises by comparing contents).
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import os
import secrets
import shutil
import stat
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from codexw.core.errors import BusyError, StoreError

CHUNK = 1 << 16
TMP_PREFIX = ".cleanup-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafePath(OSError):
    """A directory on the way is a symbolic link or not a directory: not followed."""


class Dir:
    """An open directory. Names below it never resolve through a symbolic link."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

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

    def join(self, name: str) -> str:
        return f"{self.path}/{name}"

    def files(self) -> dict[str, os.DirEntry[str]]:
        """Regular files here (by d_type or lstat: a symbolic link is not a file). Their
        `stat(follow_symlinks=False)` is taken only when asked for, and then cached."""
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

    def open_file(self, name: str) -> IO[bytes]:
        """Open a regular file for reading; a symbolic link or anything else is refused."""
        fd = os.open(name, _FILE_FLAGS, dir_fd=self.fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafePath(errno.EINVAL, "not a regular file", self.join(name))
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


def content(fh: IO[bytes], gz: bool) -> IO[bytes]:
    return gzip.GzipFile(fileobj=fh, mode="rb") if gz else fh


def _read_full(fh: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = fh.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def same_content(a: IO[bytes], b: IO[bytes]) -> bool:
    """Byte-for-byte equal streams; a damaged gzip stream is simply not equal."""
    try:
        while True:
            x, y = _read_full(a, CHUNK), _read_full(b, CHUNK)
            if x != y:
                return False
            if not x:
                return True
    except (OSError, EOFError, zlib.error):
        return False


def intact_gzip(fh: IO[bytes]) -> bool:
    """A complete, non-empty gzip stream (what a crash of the machine can leave is not)."""
    try:
        with gzip.GzipFile(fileobj=fh, mode="rb") as packed:
            while packed.read(CHUNK):
                pass
        return fh.tell() > 0
    except (OSError, EOFError, zlib.error):
        return False


def gzip_size(src: IO[bytes]) -> int:
    """How big `src` would be gzipped (for --dry-run; nothing is written)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    size = 0
    while chunk := src.read(CHUNK):
        size += len(packer.compress(chunk))
    return size + len(packer.flush())


SMALL = 8 << 20  # files up to this size are gzipped in one piece, larger ones streamed
# Unnamed files (O_TMPFILE) linked in through /proc: nothing to clean up after a crash.
_tmpfile = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


@dataclass
class Staged:
    """A finished copy that has no name yet."""

    fd: int
    tmp: str | None  # a named temporary file where O_TMPFILE is not available
    size: int


def _new_file(directory: Dir, token: str) -> tuple[int, str | None]:
    global _tmpfile
    if _tmpfile:
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=directory.fd)
            return fd, None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            _tmpfile = False
    tmp = f"{TMP_PREFIX}{token}-{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(tmp, flags, 0o600, dir_fd=directory.fd), tmp


def gzip_small(data: bytes, mtime: int) -> bytes:
    """gzip in one piece, with a window no larger than the data: for small files most
    of the cost of zlib is setting up a 32 kB window (any gzip reader reads the result)."""
    bits = max(9, min(15, len(data).bit_length()))
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + bits, max(1, min(8, bits - 7)))
    packed = bytearray(packer.compress(data) + packer.flush())
    packed[4:8] = (mtime & 0xFFFFFFFF).to_bytes(4, "little")  # MTIME of the gzip header
    return bytes(packed)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_copy(
    directory: Dir, src: IO[bytes], *, compress: bool, token: str, mode: int, mtime_ns: int,
    durable: bool = True,
) -> Staged:
    """Write `src` (gzipped if asked) to a new file in `directory` that has no name yet,
    with the original's permissions and mtime; fsync it unless the caller makes a whole
    batch durable at once (`sync_filesystems`). `publish` gives it its name."""
    fd, tmp = _new_file(directory, token)
    try:
        size = os.fstat(src.fileno()).st_size
        if size <= SMALL:
            data = src.read()
            if compress:
                data = gzip_small(data, mtime_ns // 1_000_000_000)
            _write_all(fd, data)
            written = len(data)
        else:
            with os.fdopen(os.dup(fd), "wb") as out:
                if compress:
                    with gzip.GzipFile(
                        filename="", mode="wb", fileobj=out, mtime=mtime_ns // 1_000_000_000
                    ) as packed:
                        shutil.copyfileobj(src, packed, CHUNK)
                else:
                    shutil.copyfileobj(src, out, CHUNK)
                written = out.tell()
        os.fchmod(fd, stat.S_IMODE(mode))
        os.utime(fd, ns=(mtime_ns, mtime_ns))
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        if tmp is not None:
            directory.unlink(tmp)
        raise
    return Staged(fd, tmp, written)


def publish(
    directory: Dir, staged: Staged, name: str, replace: bool = False, durable: bool = True
) -> bool:
    """Give the staged copy its name. Without `replace`, an existing name is never
    overwritten: returns False and the copy is dropped."""
    tmp = staged.tmp
    try:
        if tmp is None and replace:  # an unnamed file cannot be renamed over a name
            tmp = f"{TMP_PREFIX}r-{secrets.token_hex(6)}.tmp"
            os.link(f"/proc/self/fd/{staged.fd}", tmp, dst_dir_fd=directory.fd)
        if replace:
            os.replace(tmp, name, src_dir_fd=directory.fd, dst_dir_fd=directory.fd)
        else:
            source = tmp if tmp is not None else f"/proc/self/fd/{staged.fd}"
            try:
                os.link(source, name, src_dir_fd=directory.fd if tmp is not None else None,
                        dst_dir_fd=directory.fd)
            except FileExistsError:
                return False
        if durable:
            directory.fsync()
        return True
    finally:
        os.close(staged.fd)
        if tmp is not None:
            directory.unlink(tmp)


_syncfs: object = None


def sync_filesystems(directories: list[Dir]) -> None:
    """Make everything written under these directories durable at once: syncfs(2) on
    each filesystem (Linux; a write-back error raises), else sync(2) and fsync."""
    global _syncfs
    if _syncfs is None:
        try:
            import ctypes

            _syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            _syncfs = False
    if not _syncfs:
        os.sync()
        for directory in directories:
            directory.fsync()
        return
    import ctypes

    seen: set[int] = set()
    for directory in directories:
        device = os.fstat(directory.fd).st_dev
        if device not in seen:
            seen.add(device)
            if _syncfs(directory.fd) != 0:  # type: ignore[operator]
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), directory.path)


def is_stale_tmp(name: str, token: str) -> bool:
    """A temporary file of an earlier cleanup that did not finish (we hold the lock)."""
    return name.startswith(TMP_PREFIX) and name.endswith(".tmp") and not name.startswith(
        f"{TMP_PREFIX}{token}-"
    )


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
