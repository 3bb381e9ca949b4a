"""copy → sync → record → remove, a batch at a time.

For each batch: every copy is gzipped into a new unnamed file and linked into place
(never over another file); one durability barrier (syncfs) covers the whole batch; one
registry transaction points the jobs at the copies; only then are the originals
removed. A run that stops anywhere leaves each file in place, copied, or both, and the
next run recognises equal copies and finishes (a damaged copy, which only a crash of
the machine can leave, is rewritten; a different file is never overwritten).
Deletions go the other way round: the registry forgets, then the files go.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from codexw.core import naming
from codexw.core.store import JobFiles, Store
from codexw.services.cleanup import copies
from codexw.services.cleanup.dirs import Dir, sync_filesystems
from codexw.services.cleanup.result import Action, CleanupResult

BATCH = 500
# Copies and removals overlap in a few threads: most of each is a wait in the kernel
# (journal, inode allocation) with the GIL released.
THREADS = 8


@dataclass
class Move:
    """One file to copy; the registry and the removal of the original follow at the
    flush, for the whole batch."""

    action: Action
    src: Dir
    name: str
    target: Dir
    target_name: str
    src_gz: bool
    rename_clash: bool  # reports: a different file at the name → the next free name
    row: JobFiles | None
    registry_old: str | None  # what the registry names now, if it names this file
    log: bool
    on_done: Callable[[Move], None] | None = None
    final: str | None = None
    problem: str | None = None


@dataclass
class _Delete:
    action: Action
    directory: Dir
    name: str
    row: JobFiles | None


def record_move(store: Store, row: JobFiles, log: bool, old: str | None, new: str | None) -> bool:
    """Point a job's log or report elsewhere (None: deleted), only if it still points
    at `old`. Inside the caller's transaction."""
    if log:
        return store.move_log(row.id, old, new)
    return store.move_report(row.id, old, new)


class Mover:
    def __init__(self, store: Store, result: CleanupResult, token: str) -> None:
        self.store = store
        self.result = result
        self.token = token
        self.pending: list[Move] = []
        self.deletes: list[_Delete] = []
        self._pool: ThreadPoolExecutor | None = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="cleanup")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def record(self, row: JobFiles, log: bool, old: str | None, new: str | None) -> bool:
        with self.store.transaction(notify_waiters=False):
            return record_move(self.store, row, log, old, new)

    # -- moves -----------------------------------------------------------------------------

    def queue(self, move: Move) -> None:
        self.pending.append(move)
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        moves, self.pending = self.pending, []
        if not moves:
            return
        pool = self._threads()
        list(pool.map(self._copy, moves))
        done = []
        for move in moves:
            if move.problem is not None:
                self.result.error(move.action.path, move.problem)
            elif move.final is not None:
                move.action.dest = move.target.join(move.final)
                done.append(move)
        if not done:
            return
        try:  # one barrier for the batch, as sync(1) after a run of gzip
            sync_filesystems(list({id(m.target): m.target for m in done}.values()))
        except OSError as exc:
            for move in done:
                self.result.error(move.action.path,
                                  f"copy not made durable: {exc.strerror or exc}")
            return
        kept = self._commit(done)
        for move in done:
            if id(move) in kept:
                self.result.skip(move.action.path,
                                 "its job's record changed meanwhile: left in place")
        done = [m for m in done if id(m) not in kept]
        problems = list(pool.map(_remove_original, done))
        for move, problem in zip(done, problems, strict=True):
            if problem is not None:
                self.result.error(move.action.path, problem)
                continue
            if move.on_done is not None:
                move.on_done(move)
            self.result.act(move.action)
        for directory in {id(m.src): m.src for m in done}.values():
            directory.fsync()

    def _commit(self, moves: list[Move]) -> set[int]:
        """Point the registry at the copies, in one transaction; returns the moves whose
        job record changed meanwhile (their originals stay)."""
        kept: set[int] = set()
        with self.store.transaction(notify_waiters=False):
            for move in moves:
                if move.row is not None and move.registry_old is not None and not record_move(
                    self.store, move.row, move.log, move.registry_old, move.action.dest
                ):
                    kept.add(id(move))
        return kept

    def _copy(self, move: Move) -> None:
        """(In a pool thread.) Put a gzipped copy of the file at its target name, or at
        the next free name when a different file holds it; an equal copy already there
        (an interrupted run) is reused, a damaged one rewritten. Sets move.final."""
        try:
            fd, st = move.src.open_fd(move.name)
        except OSError as exc:
            move.problem = exc.strerror or str(exc)
            return
        try:
            move.action.bytes_before = st.st_size
            staged = copies.write_copy(
                move.target, fd, compress=not move.src_gz, token=self.token,
                mode=st.st_mode, mtime_ns=st.st_mtime_ns, durable=False,
            )
            if copies.publish(move.target, staged, move.target_name, durable=False):
                move.action.bytes_after = staged.size
                move.final = move.target_name
                return
            self._clash(move, fd, st)  # the name is taken: rare, the slow way
        except OSError as exc:
            move.problem = exc.strerror or str(exc)
        finally:
            os.close(fd)

    def _clash(self, move: Move, fd: int, st: os.stat_result) -> None:
        action = move.action
        candidate = move.target_name
        with os.fdopen(os.dup(fd), "rb") as src:
            for n in range(2, 1000):
                src.seek(0)
                found = copies.compare(move.target, candidate, src, move.src_gz)
                src.seek(0)
                if found == "same":
                    action.kind, action.note = "repair", "finished an interrupted cleanup"
                    action.bytes_after = 0
                    move.final = candidate
                    return
                if found == "different" and move.rename_clash:
                    candidate = naming.numbered(move.target_name, n)
                    staged = copies.write_copy(
                        move.target, src, compress=not move.src_gz, token=self.token,
                        mode=st.st_mode, mtime_ns=st.st_mtime_ns, durable=False,
                    )
                    if copies.publish(move.target, staged, candidate, durable=False):
                        action.bytes_after = staged.size
                        move.final = candidate
                        return
                    continue
                # damaged (a machine crash cut it short), or a different log: rewritten
                staged = copies.write_copy(
                    move.target, src, compress=not move.src_gz, token=self.token,
                    mode=st.st_mode, mtime_ns=st.st_mtime_ns, durable=False,
                )
                copies.publish(move.target, staged, candidate, replace=True, durable=False)
                action.bytes_after = staged.size
                move.final = candidate
                return
        move.problem = "too many archived files with this name"

    # -- deletions -------------------------------------------------------------------------

    def delete(self, action: Action, directory: Dir, name: str, row: JobFiles | None) -> None:
        """Delete at the next flush_deletes, in a batch."""
        self.deletes.append(_Delete(action, directory, name, row))

    def flush_deletes(self) -> None:
        """The registry forgets the files (one transaction), then they go (in threads):
        a run that stops between leaves files nobody points at, deleted next time."""
        deletes, self.deletes = self.deletes, []
        if not deletes:
            return
        with self.store.transaction(notify_waiters=False):
            for d in deletes:
                if d.row is not None:
                    record_move(self.store, d.row, d.action.what == "log", d.action.path, None)
        problems = list(self._threads().map(_unlink, deletes))
        for d, problem in zip(deletes, problems, strict=True):
            if problem is None:
                self.result.act(d.action)
            else:
                self.result.error(d.action.path, problem)


def _unlink(d: _Delete) -> str | None:
    try:
        d.directory.unlink(d.name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _remove_original(move: Move) -> str | None:
    """(In a pool thread.) Remove a move's original; the problem, if any."""
    try:
        move.src.unlink(move.name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
