"""Gzipped copies that get their name only when complete, and comparing contents.

A copy is written to an unnamed file (O_TMPFILE; a named temporary file where that is
not supported) and then linked to its name, never over another file; the caller
removes the original after the copy is durable and recorded, so a stop at any point
leaves the original, the finished copy, or both (the next run compares contents).
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import zlib
from dataclasses import dataclass
from typing import IO

from codexw.core import naming
from codexw.services.cleanup.dirs import Dir

CHUNK = 1 << 16
LEVEL = 6  # the gzip(1) default: what the seed's `gzip` produced
SMALL = 8 << 20  # files up to this size are gzipped in one piece, larger ones streamed
# Unnamed files (O_TMPFILE) linked in through /proc: nothing to clean up after a crash.
_tmpfile = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


# A file, or a gzip reader over one (typeshed keeps GzipFile apart from IO[bytes]).
Stream = IO[bytes] | gzip.GzipFile


def content(fh: IO[bytes], gz: bool) -> Stream:
    return gzip.GzipFile(fileobj=fh, mode="rb") if gz else fh


def _read_full(fh: Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = fh.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def same_content(a: Stream, b: Stream) -> bool:
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


def compare(directory: Dir, name: str, src: IO[bytes], src_gz: bool) -> str:
    """same | different | damaged (a gzip file cut short: what a machine crash leaves)."""
    try:
        with directory.open_file(name) as existing:
            if same_content(content(src, src_gz), content(existing, True)):
                return "same"
            existing.seek(0)
            return "different" if intact_gzip(existing) else "damaged"
    except OSError:
        return "different"  # not a regular file (a link, a folder): never replaced


def gzip_size(src: IO[bytes]) -> int:
    """How big `src` would be gzipped (for --dry-run; nothing is written)."""
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)
    size = 0
    while chunk := src.read(CHUNK):
        size += len(packer.compress(chunk))
    return size + len(packer.flush())


def estimate(directory: Dir, name: str, is_gz: bool) -> tuple[int, int]:
    """(size now, size gzipped) of a file, for --dry-run."""
    with directory.open_file(name) as fh:
        size = os.fstat(fh.fileno()).st_size
        return size, size if is_gz else gzip_size(fh)


def gzip_small(data: bytes, mtime: int) -> bytes:
    """gzip in one piece, with a window no larger than the data: for small files most
    of the cost of zlib is setting up a 32 kB window (any gzip reader reads the result)."""
    bits = max(9, min(15, len(data).bit_length()))
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, 16 + bits, max(1, min(8, bits - 7)))
    packed = bytearray(packer.compress(data) + packer.flush())
    packed[4:8] = (mtime & 0xFFFFFFFF).to_bytes(4, "little")  # MTIME of the gzip header
    return bytes(packed)


@dataclass
class Staged:
    """A finished copy that has no name yet."""

    fd: int
    tmp: str | None  # a named temporary file where O_TMPFILE is not available
    size: int


def _new_file(directory: Dir, token: str, near: Dir | None = None) -> tuple[int, str | None]:
    global _tmpfile
    if _tmpfile:
        # An unnamed file can be linked into any folder of its filesystem. Made next to
        # the original, its inode comes from where the originals are being freed: on
        # ext4 without a journal a new folder's block group can cost a long scan per
        # new inode (it skips every inode freed in the last seconds).
        home = near if near is not None and near.dev == directory.dev else directory
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=home.fd)
            return fd, None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            _tmpfile = False
    tmp = naming.cleanup_tmp(token, os.urandom(4).hex())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(tmp, flags, 0o600, dir_fd=directory.fd), tmp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int, size: int) -> bytes:
    """To the end, even if the file grew since its stat: a regular file's read returns
    less than asked only at its end."""
    want = max(CHUNK, size + 1)
    data = os.read(fd, want)
    if len(data) < want:
        return data
    parts = [data]
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def write_copy(
    directory: Dir, src: int | IO[bytes], *, compress: bool, token: str, mode: int,
    mtime_ns: int, durable: bool = True, near: Dir | None = None, size: int | None = None,
) -> Staged:
    """Write the file open at `src` (gzipped if asked) to a new file for `directory` that
    has no name yet (made in `near`, the original's folder, when that is on the same
    filesystem), with the original's permissions and mtime; fsync it unless the caller
    makes a whole batch durable at once (`sync_filesystems`). `publish` names it.
    `size`: the size of `src` (an fd at its start) if the caller has just taken it."""
    src_fd = src if isinstance(src, int) else src.fileno()
    fd, tmp = _new_file(directory, token, near)
    try:
        if size is None or not isinstance(src, int):
            size = os.fstat(src_fd).st_size
        if size <= SMALL:
            data = _read_all(src_fd, size)
            if compress:
                data = gzip_small(data, mtime_ns // 1_000_000_000)
            _write_all(fd, data)
            written = len(data)
        else:
            import shutil

            with os.fdopen(os.dup(src_fd), "rb") as fh, os.fdopen(os.dup(fd), "wb") as out:
                if compress:
                    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=LEVEL,
                                       mtime=mtime_ns // 1_000_000_000) as packed:
                        shutil.copyfileobj(fh, packed, CHUNK)
                else:
                    shutil.copyfileobj(fh, out, CHUNK)
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
            tmp = naming.cleanup_tmp("r", os.urandom(6).hex())
            os.link(f"/proc/self/fd/{staged.fd}", tmp, dst_dir_fd=directory.fd)
        if replace:
            assert tmp is not None
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
