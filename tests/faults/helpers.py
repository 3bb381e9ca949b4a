"""Tools for fault tests: process groups, pseudo-terminals, mounts, DB fingerprints."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import Env, wait_until


def stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat_fields(int(name))
            if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                found.append(int(name))
    return found


def fake_pids(cx: Env, kind: str) -> list[int]:
    """PIDs the fake codex recorded: kind 'grandchild' or 'native' (wrapper's child)."""
    return [int(p.name.split(".")[1]) for p in cx.fake_state.glob(f"{kind}.*")]


def status_json(cx: Env, *args: str) -> dict:
    return json.loads(cx.ok("status", "--json", *args).stdout)


def wait_running(cx: Env, job_id: int, *, also: str | None = None, timeout: float = 60) -> dict:
    """Wait until job `job_id` runs (and, if `also` is given, the fake recorded that kind)."""

    def ready() -> dict | None:
        job = cx.job(job_id)
        if job["state"] != "running" or not job["codex_pgid"]:
            return None
        if also and not fake_pids(cx, also):
            return None
        return job

    return wait_until(ready, timeout=timeout, what=f"job {job_id} running")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The whole stderr of a failed command: exactly one line, starting 'codexw: '."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("codexw: "), lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


# -- mounts (root only; tests skip when the kernel or sandbox refuses) -----------------


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    if not shutil.which("mount") or os.geteuid() != 0:
        return subprocess.CompletedProcess(args, 1, "", "not root or no mount(8)")
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at `path` (created), or skip the test if mounting is refused."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """Bind-mount `path` read-only onto itself (root bypasses permission bits, not this)."""
    import pytest

    done = _mount("--bind", str(path), str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({done.stderr.strip()})")
    try:
        again = _mount("-o", "remount,bind,ro", str(path))
        if again.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({again.stderr.strip()})")
        yield path
    finally:
        _umount(path)


def fill_disk(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 16, 512):
            block = b"\0" * size
            try:
                while True:
                    fh.write(block)
            except OSError:
                pass
    return filler


# -- pseudo-terminals ----------------------------------------------------------------


def _take_terminal() -> None:
    """In the child after setsid(): make stdin (the pty slave) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A real pseudo-terminal with a process as the session leader on its slave side.

    `hang_up()` closes the master: the kernel sends SIGHUP to the session leader,
    exactly as when a terminal window is closed."""

    def __init__(self, argv: list[str], cx: Env) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=cx.project, env=cx.env,
            start_new_session=True, preexec_fn=_take_terminal, close_fds=True,
        )
        os.close(slave)
        self.output = b""

    def read_until(self, needle: bytes, timeout: float = 60) -> bytes:
        import select
        import time

        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} on the terminal; got {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {needle!r}: {self.output!r}")
                self.output += chunk
        return self.output

    def hang_up(self) -> None:
        os.close(self.master)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)


def codexw_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "codexw", *args]


def run_in_terminal(cx: Env, *args: str, columns: int = 200) -> str:
    """Output of codexw on a real pseudo-terminal `columns` wide (rich rendering), read
    to the end; the command must succeed."""
    master, slave = os.openpty()
    env = {k: v for k, v in cx.env.items() if k != "NO_COLOR"}
    env.update(TERM="xterm-256color", COLUMNS=str(columns), LINES="50")
    proc = subprocess.Popen([sys.executable, "-m", "codexw", *args], stdin=slave,
                            stdout=slave, stderr=slave, cwd=cx.project, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as exc:  # EIO: every writer of the terminal is gone
            assert exc.errno == errno.EIO
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, out
    return out.decode("utf-8", "replace")
