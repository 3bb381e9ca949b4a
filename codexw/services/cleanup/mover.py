"""copy → sync → record → remove, a batch at a time.

For each batch: every copy is gzipped into a new unnamed file and linked into place
(never over another file); one durability barrier (syncfs) covers the whole batch; one
registry statement (executemany, in one transaction) points the jobs at the copies;
only then are the originals removed. A run that stops anywhere leaves each file in
place, copied, or both, and the next run recognises equal copies and finishes (a damaged
copy, which only a crash of the machine can leave, is rewritten; a different file is
never overwritten). Deletions go the other way round: the registry forgets, then the
files go.

Copies are made in the calling thread, one after the other: they cost CPU (zlib, and
the kernel's inode allocation), which threads would only fight over for the GIL.
Removals mostly wait (on a filesystem mounted with `discard`, each unlink waits for the
device), so a batch's originals are removed by a few threads of their own while the
next batch is copied; `flush` waits for them, and so does `close`, before any folder
they use is closed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from codexw.core import naming
from codexw.core.store import JobFiles, Store
from codexw.core.store import files as store_files
from codexw.services.cleanup import copies
from codexw.services.cleanup.dirs import Dir, sync_filesystems
from codexw.services.cleanup.result import Action, CleanupResult

BATCH = 1000
# Threads removing a batch's originals (or deleting files): each unlink mostly waits
# for the device, and the waits overlap.
REMOVERS = 4


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
    problem: str | None = None


def record_move(store: Store, row: JobFiles, log: bool, old: str | None, new: str | None) -> bool:
    """Point a job's log or report elsewhere (None: deleted), only if it still points
    at `old`. Inside the caller's transaction."""
    if log:
        return store.move_log(row.id, old, new)
    return store.move_report(row.id, old, new)


def _unlink(directory: Dir, name: str) -> str | None:
    """Remove a file; the problem, if any."""
    try:
        directory.unlink(name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class _Syncing:
    """A copied batch being made durable (syncfs) by a thread of its own, while the
    next batch is copied; `wait` joins it and says what went wrong, if anything."""

    def __init__(self, moves: list[Move]) -> None:
        self.moves = moves
        self.error: OSError | None = None
        targets = list({id(m.target): m.target for m in moves}.values())
        self.thread = threading.Thread(target=self._sync, args=(targets,),
                                       name="cleanup-sync", daemon=True)
        self.thread.start()

    def _sync(self, targets: list[Dir]) -> None:
        try:
            sync_filesystems(targets)
        except OSError as exc:
            self.error = exc

    def wait(self) -> OSError | None:
        self.thread.join()
        return self.error


class _Removal:
    """A batch's originals, removed by REMOVERS threads (the last one to finish makes
    the removals in their folders durable); `wait` joins them."""

    def __init__(self, moves: list[Move]) -> None:
        self.moves = moves
        self.problems: list[str | None] = [None] * len(moves)
        count = min(REMOVERS, len(moves))
        self._running = count
        self._lock = threading.Lock()
        # Each thread takes every n-th original: the threads' waits overlap.
        self.threads = [
            threading.Thread(target=self._remove, args=(k, count), name=f"cleanup-rm{k}",
                             daemon=True)
            for k in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _remove(self, k: int, step: int) -> None:
        moves, problems = self.moves, self.problems
        try:
            for i in range(k, len(moves), step):
                problems[i] = _unlink(moves[i].src, moves[i].name)
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                for directory in {id(m.src): m.src for m in moves}.values():
                    directory.fsync()

    def wait(self) -> None:
        for thread in self.threads:
            thread.join()


def _in_threads(items: Sequence[_Delete]) -> None:
    """Delete these files, in REMOVERS threads; each one's problem is set on it."""

    def work(k: int, step: int) -> None:
        for i in range(k, len(items), step):
            items[i].problem = _unlink(items[i].directory, items[i].name)

    step = min(REMOVERS, len(items))
    threads = [threading.Thread(target=work, args=(k, step), daemon=True) for k in range(1, step)]
    for thread in threads:
        thread.start()
    try:
        work(0, max(step, 1))
    finally:
        for thread in threads:
            thread.join()


class Mover:
    """Batches go through three stages, each overlapping the next batch's copies:
    copied (here) → made durable (a sync thread) → recorded (here, one transaction) →
    originals removed (REMOVERS threads)."""

    def __init__(self, store: Store, result: CleanupResult, token: str) -> None:
        self.store = store
        self.result = result
        self.token = token
        self.pending: list[Move] = []
        self.deletes: list[_Delete] = []
        self._syncing: _Syncing | None = None  # the last batch copied, being synced
        self._removal: _Removal | None = None  # the batch before, its originals going

    def close(self) -> None:
        """Wait for the threads still going (before the folders they use are closed).
        A batch whose sync was still going is not recorded: its copies and originals
        both stay, and the next run finishes them."""
        syncing, self._syncing = self._syncing, None
        try:
            if syncing is not None:
                syncing.wait()
        finally:
            self._finish_removal()

    def record(self, row: JobFiles, log: bool, old: str | None, new: str | None) -> bool:
        with self.store.transaction(notify_waiters=False):
            return record_move(self.store, row, log, old, new)

    # -- moves -----------------------------------------------------------------------------

    def queue(self, move: Move) -> None:
        self.pending.append(move)
        if len(self.pending) >= BATCH:
            self._batch()

    def flush(self) -> None:
        """Copy, sync, record and remove all that is queued; returns when it is done."""
        try:
            self._batch()
            self._record()
        finally:
            self.close()

    def _batch(self) -> None:
        """Copy the pending moves; then record the batch before (its sync has had this
        batch's copies to finish) and start removing its originals; then start this
        batch's sync."""
        moves, self.pending = self.pending, []
        done = []
        for move in moves:
            self._copy(move)
            if move.problem is not None:
                self.result.error(move.action.path, move.problem)
            elif move.final is not None:
                move.action.dest = move.target.join(move.final)
                done.append(move)
        self._record()
        if done:
            self._syncing = _Syncing(done)  # one barrier for the batch, as sync(1) after gzip

    def _record(self) -> None:
        """The batch being synced: once durable, point the registry at its copies, then
        hand its originals to the removers."""
        syncing, self._syncing = self._syncing, None
        if syncing is None:
            return
        error = syncing.wait()
        done = syncing.moves
        if error is not None:
            for move in done:
                self.result.error(move.action.path,
                                  f"copy not made durable: {error.strerror or error}")
            return
        kept = self._commit(done)
        if kept:
            for move in done:
                if id(move) in kept:
                    self.result.skip(move.action.path,
                                     "its job's record changed meanwhile: left in place")
            done = [m for m in done if id(m) not in kept]
        self._finish_removal()  # the batch before: its originals are gone by now
        if done:
            self._removal = _Removal(done)

    def _finish_removal(self) -> None:
        removal, self._removal = self._removal, None
        if removal is None:
            return
        removal.wait()
        for move, problem in zip(removal.moves, removal.problems, strict=True):
            if problem is not None:
                self.result.error(move.action.path, problem)
                continue
            if move.on_done is not None:
                move.on_done(move)
            self.result.act(move.action)

    def _commit(self, moves: list[Move]) -> set[int]:
        """Point the registry at the copies, in one transaction (one statement per
        column); returns the moves whose job record changed meanwhile (their originals
        stay)."""
        recorded = [m for m in moves if m.row is not None and m.registry_old is not None]
        if not recorded:
            return set()
        kept: set[int] = set()
        with self.store.transaction(notify_waiters=False):
            for log, column in ((False, "report_path"), (True, "log_path")):
                group = [m for m in recorded if m.log is log]
                if not group:
                    continue
                changed = store_files.move_many(self.store, column, [
                    (m.row.id, m.registry_old, m.action.dest) for m in group if m.row is not None
                ])
                kept.update(id(m) for m in group if m.row is not None and m.row.id in changed)
        return kept

    def _copy(self, move: Move) -> None:
        """Put a gzipped copy of the file at its target name, or at the next free name
        when a different file holds it; an equal copy already there (an interrupted
        run) is reused, a damaged one rewritten. Sets move.final or move.problem."""
        try:
            fd, st = move.src.open_fd(move.name)
        except OSError as exc:
            move.problem = exc.strerror or str(exc)
            return
        try:
            move.action.bytes_before = st.st_size
            staged = copies.write_copy(
                move.target, fd, compress=not move.src_gz, token=self.token,
                mode=st.st_mode, mtime_ns=st.st_mtime_ns, durable=False, near=move.src,
                size=st.st_size,
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
                        near=move.src,
                    )
                    if copies.publish(move.target, staged, candidate, durable=False):
                        action.bytes_after = staged.size
                        move.final = candidate
                        return
                    continue
                # damaged (a machine crash cut it short), or a different log: rewritten
                staged = copies.write_copy(
                    move.target, src, compress=not move.src_gz, token=self.token,
                    mode=st.st_mode, mtime_ns=st.st_mtime_ns, durable=False, near=move.src,
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
        _in_threads(deletes)
        for d in deletes:
            if d.problem is None:
                self.result.act(d.action)
            else:
                self.result.error(d.action.path, d.problem)
