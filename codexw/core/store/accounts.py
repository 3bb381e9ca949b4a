"""Accounts: one row per identity codex authenticates with, holding the rate limiter's
settings and state (core/limiter.py decides; this module only reads and writes)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from codexw.core.store import sql
from codexw.core.store.connection import Connection

# Tokens that count against a budget: what the model read and wrote.
_USED = "(input_tokens + output_tokens)"


@dataclass(frozen=True)
class Account:
    """An `accounts` row. Settings come from the config of the latest launch on the
    account; the rest is the limiter's state."""

    id: str
    label: str
    max_parallel: int | None = None
    adaptive: bool = True
    backoff: float = 2.0
    rate_limit_retries: int = 6
    max_starts_per_minute: int | None = None
    max_tokens_per_hour: int | None = None
    max_tokens_per_day: int | None = None
    hour_seconds: float = 3600.0
    day_seconds: float = 86400.0
    allowance: int | None = None  # None: not throttled
    cut_from: int | None = None  # the concurrency the first cut started from
    cut_at: float | None = None
    cooldown_until: float | None = None
    strikes: int = 0  # cool-downs in a row without a success in between
    limited_at: float | None = None
    next_start_at: float | None = None  # the start bucket: no start before this


SETTINGS = ("label", "max_parallel", "adaptive", "backoff", "rate_limit_retries",
            "max_starts_per_minute", "max_tokens_per_hour", "max_tokens_per_day",
            "hour_seconds", "day_seconds")
_COLUMNS = tuple(f.name for f in fields(Account))
_STATE = frozenset(_COLUMNS) - frozenset(SETTINGS) - {"id"}


def _account(row: sqlite3.Row) -> Account | None:
    """A row as an Account; None if a value is not of its type (a damaged row is then
    treated as an account without limits rather than stopping every command)."""
    values: dict[str, Any] = {}
    for f in fields(Account):
        value = row[f.name]
        kind = str(f.type)
        if value is None:
            if "None" not in kind:
                return None
        elif kind.startswith("float"):
            if type(value) not in (int, float):
                return None
            value = float(value)
        elif kind.startswith("int") or kind == "bool":
            if type(value) is not int:
                return None
            value = bool(value) if kind == "bool" else value
        elif type(value) is not str:
            return None
        values[f.name] = value
    return Account(**values)


class Accounts(Connection):
    def save_account(self, account_id: str, settings: dict[str, Any]) -> None:
        """Create the account or update its settings (its state is kept)."""
        names = [n for n in SETTINGS if n in settings]
        values = [int(v) if isinstance(v, bool) else v for v in (settings[n] for n in names)]
        self._exec(
            f"INSERT INTO accounts (id, {', '.join(names)})"
            f" VALUES (?, {', '.join('?' * len(names))})"
            f" ON CONFLICT(id) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in names)}",
            (account_id, *values),
        )

    def set_account_state(self, account_id: str, **values: Any) -> None:
        assert values and set(values) <= _STATE
        self._exec(
            f"UPDATE accounts SET {', '.join(f'{n} = ?' for n in values)} WHERE id = ?",
            (*values.values(), account_id),
        )

    def accounts(self, ids: Iterable[str] | None = None) -> dict[str, Account]:
        """Accounts by id (all of them when `ids` is None)."""
        if ids is None:
            rows = self._exec("SELECT * FROM accounts ORDER BY id").fetchall()
        else:
            wanted = list(dict.fromkeys(ids))
            if not wanted:
                return {}
            rows = self._exec(
                f"SELECT * FROM accounts WHERE id IN ({','.join('?' * len(wanted))})", wanted
            ).fetchall()
        found = {}
        for row in rows:
            account = _account(row)
            if account is not None:
                found[account.id] = account
        return found

    def active_per_account(self) -> dict[str, int]:
        rows = self._exec(
            f"SELECT account, COUNT(*) AS n FROM jobs WHERE {sql.IS_ACTIVE} GROUP BY account"
        ).fetchall()
        return {r["account"]: r["n"] for r in rows if r["account"] is not None}

    def tokens_used(self, account_id: str, since: float) -> list[tuple[float | None, int]]:
        """(ended_at, tokens) of the account's jobs that ended after `since` (oldest
        first), and of its running ones (ended_at None, first)."""
        running = self._exec(
            f"SELECT {_USED} AS t FROM jobs WHERE account = ? AND {sql.IS_ACTIVE}", (account_id,)
        ).fetchall()
        ended = self._exec(
            f"SELECT ended_at, {_USED} AS t FROM jobs WHERE account = ? AND ended_at > ?"
            " ORDER BY ended_at",
            (account_id, since),
        ).fetchall()
        return [(None, int(r["t"] or 0)) for r in running] + [
            (float(r["ended_at"]), int(r["t"] or 0)) for r in ended
        ]

    def add_account_event(
        self, account_id: str, at: float, kind: str, seconds: float | None = None
    ) -> None:
        self._exec(
            "INSERT INTO account_events (account, at, kind, seconds) VALUES (?, ?, ?, ?)",
            (account_id, at, kind, seconds),
        )

    def account_events(self, since: float) -> list[tuple[str, float, str, float | None]]:
        rows = self._exec(
            "SELECT account, at, kind, seconds FROM account_events WHERE at >= ? ORDER BY at",
            (since,),
        ).fetchall()
        return [(r["account"], r["at"], r["kind"], r["seconds"]) for r in rows]

    def batch_budgets(self) -> dict[int, tuple[int, int]]:
        """For batches with a token budget and queued jobs: (budget, tokens used so far
        by all their attempts)."""
        rows = self._exec(
            "SELECT b.id, b.budget_tokens,"
            f" (SELECT COALESCE(SUM({_USED}), 0) FROM jobs u WHERE u.batch_id = b.id) AS used"
            " FROM batches b WHERE b.budget_tokens IS NOT NULL AND EXISTS"
            f" (SELECT 1 FROM jobs j WHERE j.batch_id = b.id AND {sql.state_in(sql.QUEUED, 'j.state')})"
        ).fetchall()
        return {r["id"]: (int(r["budget_tokens"]), int(r["used"])) for r in rows}

    def set_batch_budget(self, batch_id: int, tokens: int | None) -> None:
        self._exec("UPDATE batches SET budget_tokens = ? WHERE id = ?", (tokens, batch_id))
