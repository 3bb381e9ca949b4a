"""Job-end and batch-end announcements (core.announce): recorded with the ending,
claimed before sending, settled after."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from codexw.core.store import sql
from codexw.core.store.connection import Connection

DUE, SENDING, SENT, FAILED = "due", "sending", "sent", "failed"


@dataclass(frozen=True)
class Announcement:
    id: int
    job_id: int | None
    batch_id: int | None
    targets: tuple[str, ...]
    created_at: float
    state: str
    sender_pid: int | None
    sender_start: float | None
    error: str | None


def targets_of(raw: object) -> tuple[str, ...]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        value = None
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


class Announcements(Connection):
    def queue_announcement(
        self, targets: tuple[str, ...], now: float, *, job_id: int | None = None,
        batch_id: int | None = None,
    ) -> bool:
        """Inside the transaction that ends the job: one announcement per job end and
        per batch end (UNIQUE); False if there already is one."""
        cur = self._exec(
            "INSERT OR IGNORE INTO announcements (job_id, batch_id, targets, created_at)"
            " VALUES (?, ?, ?, ?)",
            (job_id, batch_id, json.dumps(list(targets)), now),
        )
        return cur.rowcount == 1

    def batch_notify(self, batch_id: int) -> tuple[str, ...]:
        row = self._exec("SELECT notify FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return targets_of(row["notify"]) if row is not None else ()

    def batch_is_open(self, batch_id: int) -> bool:
        """Whether a job of the batch (a retry included) has not ended yet."""
        row = self._exec(
            f"SELECT 1 FROM jobs WHERE batch_id = ? AND {sql.IS_OPEN} LIMIT 1", (batch_id,)
        ).fetchone()
        return row is not None

    def open_announcements(self) -> list[Announcement]:
        """Announcements not sent yet, oldest first (a partial index holds only these)."""
        rows = self._exec(
            f"SELECT * FROM announcements WHERE state IN ('{DUE}', '{SENDING}')"
            " ORDER BY created_at"
        ).fetchall()
        return [_announcement(r) for r in rows]

    def get_announcement(self, announcement_id: int) -> Announcement | None:
        row = self._exec(
            "SELECT * FROM announcements WHERE id = ?", (announcement_id,)
        ).fetchone()
        return _announcement(row) if row is not None else None

    def announcement_of(self, *, job_id: int | None = None,
                        batch_id: int | None = None) -> Announcement | None:
        """The announcement of this job's end or this batch's end, if there is one."""
        column, value = ("job_id", job_id) if job_id is not None else ("batch_id", batch_id)
        row = self._exec(f"SELECT * FROM announcements WHERE {column} = ?", (value,)).fetchone()
        return _announcement(row) if row is not None else None

    def claim_announcement(self, announcement_id: int, pid: int, start: float | None) -> bool:
        """Due → sending, recorded before anything is sent; False if someone else has it."""
        cur = self._exec(
            f"UPDATE announcements SET state = '{SENDING}', sender_pid = ?, sender_start = ?"
            f" WHERE id = ? AND state = '{DUE}'",
            (pid, start, announcement_id),
        )
        return cur.rowcount == 1

    def settle_announcement(
        self, announcement_id: int, state: str, now: float, error: str | None,
        sender_pid: int | None,
    ) -> bool:
        """Sending → sent or failed, by the sender that claimed it (or, with the pid of
        a sender that died, by whoever noticed)."""
        assert state in (SENT, FAILED)
        cur = self._exec(
            f"UPDATE announcements SET state = ?, sent_at = ?, error = ?"
            f" WHERE id = ? AND state = '{SENDING}' AND sender_pid IS ?",
            (state, now, error, announcement_id, sender_pid),
        )
        return cur.rowcount == 1


def _announcement(r: sqlite3.Row) -> Announcement:
    return Announcement(
        id=r["id"], job_id=r["job_id"], batch_id=r["batch_id"], targets=targets_of(r["targets"]),
        created_at=r["created_at"], state=r["state"], sender_pid=r["sender_pid"],
        sender_start=r["sender_start"], error=r["error"],
    )
