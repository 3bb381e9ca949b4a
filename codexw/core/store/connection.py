"""The registry's connection: opening it, transactions, and SQLite errors as StoreErrors.

SQLite in WAL mode with a busy timeout; every state change is one `BEGIN IMMEDIATE`
transaction. The other modules of this package add methods to `Connection` (mixins):
each runs its SQL through `_exec`, so no database error escapes as a traceback.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Self

from codexw.core import notify, paths, process
from codexw.core.errors import StoreError
from codexw.core.store import schema

BUSY_TIMEOUT_S = 60.0


class Result:
    """The fetched rows of one statement, with the cursor's rowcount and lastrowid."""

    __slots__ = ("_rows", "rowcount", "lastrowid")

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class Connection:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._in_txn = False
        self._after_commit: list[Callable[[], None]] = []

    @classmethod
    def open(cls) -> Self:
        try:
            directory = paths.ensure_state_dir()
        except OSError as exc:
            raise StoreError(
                f"cannot create or enter the state directory {paths.state_dir()}: {exc.strerror}",
                "make it writable or point CODEXW_STATE_DIR somewhere else",
            ) from None
        path = directory / "codexw.db"
        new = not path.exists()
        if new:
            try:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the registry {path}: {exc.strerror}",
                    "make the state directory writable or set CODEXW_STATE_DIR",
                ) from None
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":  # pragma: no cover - only on filesystems without WAL
                raise StoreError(f"{path}: the registry cannot use WAL mode ({mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            store = cls(conn)
            schema.migrate(store, path)
        except sqlite3.DatabaseError as exc:
            raise store_error(path, exc) from None
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, notify_waiters: bool = True) -> Iterator[Self]:
        """One IMMEDIATE transaction; waiters are woken after a commit that wrote."""
        if self._in_txn:
            yield self
            return
        # Waiters are woken only by a commit that changed rows: a transaction that
        # found nothing to do woke every `wait` and `status --watch`, each of which
        # then read in a transaction of its own and woke the others (100% CPU idle).
        changes_before = self.conn.total_changes
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise store_error(paths.db_path(), exc) from None
        self._in_txn = True
        try:
            yield self
        except BaseException:
            self._rollback()
            raise
        else:
            # From COMMIT to the end of the post-commit work, a Ctrl-C waits: raised in
            # between, it would reach the caller as a failed transaction and make it
            # undo what is already committed (remove a queued job's TEMP report).
            with process.signals_deferred():
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    self._rollback()
                    raise store_error(paths.db_path(), exc) from None
                self._post_commit(notify_waiters and self.conn.total_changes != changes_before)
        finally:
            self._in_txn = False
            self._after_commit = []

    def _post_commit(self, changed: bool) -> None:
        """Wake waiters and run the after-commit callbacks; neither may fail the
        transaction, which is committed."""
        callbacks, self._after_commit = self._after_commit, []
        if changed:
            try:
                notify.broadcast()
            except OSError:
                pass  # waiters also look at the registry every few seconds
        for callback in callbacks:
            try:
                callback()
            except OSError:
                pass

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the current transaction has committed (never on rollback):
        for files that may go only when the registry no longer needs them."""
        self._after_commit.append(callback)

    @contextmanager
    def snapshot(self) -> Iterator[Self]:
        """A read transaction: one consistent view, no write lock, nobody woken.

        For the cheap look that decides whether a write transaction is needed at all
        (inside a transaction already, it is that transaction)."""
        if self._in_txn or self.conn.in_transaction:
            yield self
            return
        try:
            self.conn.execute("BEGIN DEFERRED")
        except sqlite3.DatabaseError as exc:
            raise store_error(paths.db_path(), exc) from None
        try:
            yield self  # a write in here fails loudly: BEGIN IMMEDIATE cannot nest
        finally:
            self._rollback()  # nothing was written: ending it is all that is needed

    def _rollback(self) -> None:
        """Roll back what is still open: after a failed COMMIT (disk full, I/O error)
        SQLite may already have rolled back, and a second ROLLBACK would raise."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> Result:
        """Run one statement and fetch its rows at once: a corrupt page can surface on
        any row, and each such error must become a StoreError, not a traceback."""
        try:
            cur = self.conn.execute(sql, tuple(params))
            return Result(cur.fetchall(), cur.rowcount, cur.lastrowid)
        except sqlite3.DatabaseError as exc:
            raise store_error(paths.db_path(), exc) from None


def store_error(path: os.PathLike[str] | str, exc: sqlite3.DatabaseError) -> StoreError:
    text = str(exc)
    if "not a database" in text or "malformed" in text or "Could not decode" in text:
        return StoreError(
            f"the registry {path} is corrupt ({text})",
            f"move it aside (mv {path} {path}.corrupt) and codexw starts a new one;"
            " reports under .codexw/ are untouched",
        )
    if "readonly" in text or "unable to open" in text:
        return StoreError(
            f"cannot write the registry {path} ({text})",
            "make the state directory writable or set CODEXW_STATE_DIR",
        )
    if "disk" in text and ("full" in text or _disk_full(path)):
        return StoreError(
            f"no space left for the registry {path}",
            f"free some disk space (df -h {os.path.dirname(path)})",
        )
    if "disk I/O error" in text:
        return StoreError(
            f"cannot read or write the registry {path} (disk I/O error)",
            "check that its disk is healthy, not full and writable",
        )
    return StoreError(f"registry error in {path}: {text}")


def _disk_full(path: os.PathLike[str] | str) -> bool:
    """SQLite reports a full disk under its shared-memory file as a mere I/O error."""
    try:
        return os.statvfs(os.path.dirname(path)).f_bavail == 0
    except OSError:
        return False
