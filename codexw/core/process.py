"""Process control: detached spawn, liveness by (pid, create time), group kill.

"No such process" is a normal answer here, never an exception.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_LINUX = sys.platform.startswith("linux")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _linux_stat(pid: int) -> tuple[str, int, float] | None:
    """(state letter, pgid, start time in seconds since boot) from /proc, or None if gone.

    Since boot, not since the epoch: the kernel's boot time in wall-clock terms moves
    when the clock is stepped (NTP, a VM resumed), and a live runner must never start
    to look like another process because of that."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    state = rest[0].decode()
    pgid = int(rest[2])
    start_ticks = int(rest[19])
    return state, pgid, round(start_ticks / _CLK_TCK, 2)


def create_time(pid: int) -> float | None:
    """A token for when `pid` started, or None if it does not exist (or is a zombie).

    Compare it only with another value from this function: on Linux it counts seconds
    since boot, elsewhere seconds since the epoch (psutil)."""
    if _LINUX:
        info = _linux_stat(pid)
        return None if info is None or info[0] in ("Z", "X") else info[2]
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(proc.create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def now_token() -> float:
    """Now, in `create_time`'s units (seconds since boot on Linux): to tell processes
    started after a moment from older ones."""
    if _LINUX:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.time()


def is_alive(pid: int | None, started: float | None) -> bool:
    """True only if `pid` runs and is provably the process that started at `started`.

    Without a recorded start time nothing proves it: the PID may have been reused, so
    the answer is False (no signal is sent, the job is not waited on as running). Start
    times are recorded whenever the process exists (create_time is None only for a
    process already gone), so a live runner never lands here."""
    if not pid or pid <= 0 or started is None:
        return False
    now = create_time(pid)
    if now is None:
        return False
    return abs(now - started) < 0.05


def signal_pid(pid: int, sig: int, started: float | None) -> bool:
    """Send `sig` to `pid` only if it is still the recorded process."""
    if not is_alive(pid, started):
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_exists(pgid: int | None) -> bool:
    if not pgid or pgid <= 1:
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is `pgid` (Linux: from /proc; else psutil)."""
    found = []
    if _LINUX:
        for name in os.listdir("/proc"):
            if name.isdigit():
                info = _linux_stat(int(name))
                if info is not None and info[1] == pgid and info[0] not in ("Z", "X"):
                    found.append(int(name))
        return found
    import psutil

    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return found


JOB_ENV = "CODEXW_JOB_ID"  # set in codex's environment; its group carries it down


def job_marker(job_id: int, state_dir: str) -> dict[str, str]:
    """What a codex process group of this job has in its environment."""
    return {JOB_ENV: str(job_id), "CODEXW_STATE_DIR": state_dir}


def environ_of(pid: int) -> dict[str, str] | None:
    if _LINUX:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                raw = fh.read()
        except OSError:
            return None
        pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
        return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}
    import psutil

    try:
        return dict(psutil.Process(pid).environ())
    except psutil.Error:
        return None


def group_carries(pgid: int, marker: dict[str, str]) -> bool:
    """True if a live member of group `pgid` has every `marker` variable in its
    environment: proof that the group is still the one we started. A recorded
    pgid whose number was reused by an unrelated group fails this and must never
    be signalled."""
    for pid in group_members(pgid):
        env = environ_of(pid)
        if env is not None and all(env.get(k) == v for k, v in marker.items()):
            return True
    return False


def signal_group(pgid: int | None, sig: int) -> bool:
    if not pgid or pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def terminate_group(pgid: int | None, grace: float, reap: Iterable[object] = ()) -> bool:
    """SIGTERM the group, wait up to `grace` seconds, then SIGKILL what is left.

    Returns True if SIGKILL was needed. `reap` holds Popen objects to poll so
    that our own children do not linger as zombies (which count as gone).
    """
    if not signal_group(pgid, signal.SIGTERM):
        return False
    deadline = time.monotonic() + grace
    delay = 0.01
    while time.monotonic() < deadline:
        for popen in reap:
            popen.poll()  # type: ignore[attr-defined]
        if not group_members(pgid):  # type: ignore[arg-type]
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    signal_group(pgid, signal.SIGKILL)
    return True


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """In a child (preexec): receive `sig` when the parent dies (Linux only)."""
    if not _LINUX:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block is done (a critical section that must
    not stop half-way, like recording an outcome and then writing its report)."""
    deferred = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    except (AttributeError, ValueError, OSError):  # not the main thread, or no sigmask
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def pidfd_supported() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


def open_pidfd(pid: int, started: float | None) -> int | None:
    """A pidfd for the recorded process, or None if it is gone / unsupported."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.ENOSYS, errno.EPERM, errno.EINVAL):
            return None
        raise
    # Verify identity after opening: the fd now pins this exact process.
    if not is_alive(pid, started):
        os.close(fd)
        return None
    return fd


# Popen objects of the detached processes this process started; polled so that none
# lingers as a zombie while this process lives on (a foreground batch, a waiter).
_children: list[subprocess.Popen[bytes]] = []


def spawn_detached(argv: list[str], log: Path, env: dict[str, str]) -> tuple[int, float | None]:
    """Start `argv` in a new session, stdin /dev/null, output appended to `log`, in /;
    returns its (PID, start time)."""
    reap_children()
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            close_fds=True, cwd="/", env=env,
        )
    finally:
        os.close(out)
    _children.append(child)
    return child.pid, create_time(child.pid)


def ancestors_env(name: str, limit: int = 64) -> list[str]:
    """`name`'s value in the environment each ancestor of this process was started
    with (Linux /proc), nearest first. Finds what a parent did not pass on: an MCP
    client such as Codex starts its servers with a few variables only."""
    key = name.encode() + b"="
    found: list[str] = []
    pid = os.getppid()
    for _ in range(limit):
        if pid <= 1:
            break
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read(1 << 20)
        except OSError:  # another user's process, or gone: nothing to read there
            environ = b""
        for item in environ.split(b"\0"):
            if item.startswith(key):
                found.append(item[len(key):].decode("utf-8", "replace"))
                break
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                pid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def reap_children() -> None:
    for child in list(_children):
        if child.poll() is not None:
            # `codexw mcp` runs services in threads: another may have removed it.
            with contextlib.suppress(ValueError):
                _children.remove(child)


def forget_children() -> None:
    """In a forked process: what the parent spawned are not this process's children."""
    _children.clear()


def anonymous_file(directory: os.PathLike[str] | str, text: str = "") -> BinaryIO:
    """An anonymous 0600 file in `directory` holding `text`, read from its start: a child's
    stdin (codex's prompt) or its output (tempfile costs ~1 MB RSS)."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    except (AttributeError, OSError):
        path = os.path.join(directory, f".anon-{os.getpid()}-{os.urandom(4).hex()}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.unlink(path)
    handle = os.fdopen(fd, "w+b")
    handle.write(text.encode("utf-8", "surrogateescape"))
    handle.seek(0)
    return handle
