"""The waker: at most one small detached process per state dir that starts queued jobs
when a wait of theirs ends by time alone (a retry's backoff, an account's cool-down,
the start bucket, a token window) and no runner is left to do it.

`python -P -m codexw.core.waker`, started by `ensure` (from `scheduler.fill_slots`,
after its commit, whenever a queued job waits for a time). It holds an exclusive
flock on `<state>/waker.lock` while it lives (a second one leaves at once), sleeps
on a notify FIFO until the earliest deadline or a registry change (which can bring
the deadline forward), fills the slots, and leaves when no queued job waits for a
time. Before leaving it lets go of the lock and looks once more, so a deadline
committed while it was deciding to leave is never missed: the committer either saw
the lock free and started a waker, or saw it held and this look finds its deadline.
`<state>/waker.json` says who it is and until when it sleeps (`status` shows it).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from codexw.core import paths, process

LOCK = "waker.lock"
INFO = "waker.json"


def _lock_path() -> Path:
    return paths.state_dir() / LOCK


def _open_lock() -> int:
    return os.open(_lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def running() -> bool:
    """Whether a waker holds the state dir's lock."""
    try:
        fd = _open_lock()
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also lets go of a lock taken just now
    return False


def ensure(deadline: float) -> None:
    """After a commit: make sure a waker will start what waits until `deadline`."""
    if running():
        return  # it hears the commit on its FIFO and sleeps until the new deadline
    env = dict(os.environ)
    env["CODEXW_STATE_DIR"] = str(paths.state_dir().resolve())
    try:
        process.spawn_detached([sys.executable, "-P", "-m", "codexw.core.waker"],
                               paths.logs_dir() / "waker.log", env)
    except OSError:
        pass  # the next command (or runner) that fills slots tries again


def info() -> dict[str, Any] | None:
    """The running waker: {"pid", "until"} (until None: it is looking), else None."""
    if not running():
        return None
    try:
        data = json.loads((paths.state_dir() / INFO).read_text())
    except (OSError, ValueError):
        return {"pid": None, "until": None}
    if not isinstance(data, dict):
        return {"pid": None, "until": None}
    pid, until = data.get("pid"), data.get("until")
    return {"pid": pid if type(pid) is int else None,
            "until": float(until) if isinstance(until, int | float) else None}


def _say(until: float | None) -> None:
    path = paths.state_dir() / INFO
    tmp = path.with_name(f".{INFO}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "until": until}))
        os.replace(tmp, path)
    except OSError:
        pass


# A sleep of a day (a spent daily token budget) still looks once in a while whether its
# state dir exists: a removed one (a test's temp dir, a reset) never broadcasts again.
SAFETY_WAKE = 600.0


def _registry_id() -> tuple[int, int] | None:
    try:
        st = os.stat(paths.db_path())
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _same_registry(registry: tuple[int, int] | None) -> bool:
    return registry is not None and _registry_id() == registry


def main() -> int:
    from codexw.core import notify, scheduler
    from codexw.core.errors import CodexwError
    from codexw.core.store import Store

    paths.ensure_state_dir()
    fd = _open_lock()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another waker runs
    try:
        with Store.open() as store, notify.Listener() as listener:
            registry = _registry_id()
            while True:
                process.reap_children()
                deadline = scheduler.fill_slots(store).deadline
                if deadline is None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    deadline = scheduler.waiting(store)[1]
                    if deadline is None:
                        return 0
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return 0  # a new waker took over
                    continue
                _say(deadline)
                listener.wait(min(SAFETY_WAKE, max(0.0, deadline - time.time()) + 0.01))
                if not _same_registry(registry):
                    return 0  # the state dir was removed or made anew: not ours to serve
    except CodexwError as exc:
        sys.stderr.write(f"codexw waker: {exc}\n")
        return 1
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
