"""One rate limiter per account, shared by every codexw process through the registry.

An account is the identity codex authenticates with: its CODEX_HOME, the model
provider and the credential (the provider's key variable, else the login in
CODEX_HOME), hashed with a salt kept in the state dir; the secret is never stored.

- AIMD: a rate-limited ending cuts the account's allowance (the most of its jobs
  active at once) to half the concurrency it had, at least 1, and opens a cool-down
  (codex's Retry-After or reset time, else exponential with jitter) during which none
  of its jobs starts. A job started after that cut that then succeeds, while the
  allowance was in use, raises it by one; at the ceiling (`max_parallel`, else the
  concurrency first cut from) the account is no longer throttled. Later 429s of the
  same burst (jobs started before the cut) do not halve again: they only bring the
  allowance down to the jobs still running.
- Budgets: `max_starts_per_minute` spaces starts (a token bucket of depth one), and
  `max_tokens_per_hour`/`_per_day` hold starts while the window's tokens are spent.

`Gate` is the limiter's say in the scheduler's plan; `rate_limited` and `succeeded`
run in the transaction that records a job's end (lifecycle.record_end). This module
is imported by the runner: hashlib and tomllib are imported only to identify an
account, at launch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from codexw.core import paths

if TYPE_CHECKING:
    from codexw.core.models import Job
    from codexw.core.store import Account, Store

DEFAULT_BACKOFF = 2.0  # the first cool-down without a Retry-After, in seconds
DEFAULT_RATE_LIMIT_RETRIES = 6
COOLDOWN_MAX = 300.0
HOUR, DAY = 3600.0, 86400.0

THROTTLED, BUDGET, SLOT, AFTER = "throttled", "budget", "slot", "after"
BUDGET_SPENT = "used its token budget"  # in the reason of a batch's unstarted jobs


# -- identity ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    id: str
    label: str  # what a person sees: provider, key variable or login, CODEX_HOME


def codex_home(env: Mapping[str, str]) -> str:
    home = env.get("CODEX_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"),
                                                 ".codex")
    return os.path.abspath(home)


def _provider(home: str, codex_args: Iterable[str]) -> tuple[str, str | None]:
    """(model provider, the environment variable holding its key) as codex will use
    them: `-c model_provider=...` in the job's codex args, else CODEX_HOME/config.toml,
    else OpenAI with OPENAI_API_KEY."""
    provider = None
    args = list(codex_args)
    for i, arg in enumerate(args[:-1]):
        if arg in ("-c", "--config") and args[i + 1].startswith("model_provider="):
            provider = args[i + 1].partition("=")[2].strip().strip("\"'")
    config: dict[str, Any] = {}
    try:
        with open(os.path.join(home, "config.toml"), "rb") as fh:
            raw = fh.read(1 << 20)
    except OSError:
        raw = b""
    if b"model_provider" in raw:
        import tomllib

        try:
            config = tomllib.loads(raw.decode("utf-8", "replace"))
        except tomllib.TOMLDecodeError:
            config = {}
    if provider is None:
        chosen = config.get("model_provider")
        provider = chosen if isinstance(chosen, str) and chosen else "openai"
    providers = config.get("model_providers")
    entry = providers.get(provider) if isinstance(providers, dict) else None
    key_var = entry.get("env_key") if isinstance(entry, dict) else None
    if not isinstance(key_var, str) or not key_var:
        key_var = "OPENAI_API_KEY" if provider == "openai" else None
    return provider, key_var


def _salt() -> bytes:
    """A random salt per state dir (0600), made once: hashes of credentials cannot be
    compared across machines nor tried against a list of leaked keys."""
    path = paths.state_dir() / "account-salt"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    paths.ensure_state_dir()
    tmp = path.with_name(f".account-salt.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(32))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a salt another process made meanwhile
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()


def identify(env: Mapping[str, str], codex_args: Iterable[str] = ()) -> Identity:
    """The account a job launched with this environment runs on."""
    import hashlib

    home = codex_home(env)
    provider, key_var = _provider(home, codex_args)
    secret = env.get(key_var) if key_var else None
    if secret:
        how = key_var
        credential = secret.encode()
    else:
        how = "login"
        try:
            with open(os.path.join(home, "auth.json"), "rb") as fh:
                credential = fh.read(1 << 20)
        except OSError:
            credential = b""
    digest = hashlib.sha256()
    for part in (_salt(), home.encode(), provider.encode(), str(key_var).encode(),
                 hashlib.sha256(credential).digest()):
        digest.update(len(part).to_bytes(4, "big") + part)
    return Identity(digest.hexdigest()[:16], f"{provider} {how} ({home})")


def settings_from(config: Any) -> dict[str, Any]:
    """The account's settings from a launch's Config. Window lengths can be shortened
    for tests (CODEXW_BUDGET_WINDOWS="HOUR_SECONDS,DAY_SECONDS"); hours are hours."""
    hour, day = HOUR, DAY
    windows = os.environ.get("CODEXW_BUDGET_WINDOWS")
    if windows:
        try:
            hour, day = (float(x) for x in windows.split(","))
        except ValueError:
            hour, day = HOUR, DAY
    return {
        "max_parallel": config.max_parallel,
        "adaptive": config.adaptive,
        "backoff": config.rate_limit_backoff,
        "rate_limit_retries": config.rate_limit_retries,
        "max_starts_per_minute": config.max_starts_per_minute,
        "max_tokens_per_hour": config.max_tokens_per_hour,
        "max_tokens_per_day": config.max_tokens_per_day,
        "hour_seconds": hour,
        "day_seconds": day,
    }


# -- the plan's gate --------------------------------------------------------------------


class Gate:
    """Per account, whether a queued job may start now and, if not, why and until when.

    Built inside the plan's transaction (or snapshot); `started` books a planned start
    (one more active job, the next start of the bucket), `bookings` are written with
    the claims."""

    def __init__(self, store: Store, account_ids: Iterable[str | None], now: float) -> None:
        self.store = store
        self.now = now
        ids = {a for a in account_ids if a is not None}
        self.accounts = store.accounts(ids) if ids else {}
        # Only an allowance needs the active counts (one query less per plan otherwise).
        throttled = any(a.allowance is not None for a in self.accounts.values())
        self.active = store.active_per_account() if throttled else {}
        self.bookings: dict[str, float] = {}  # account -> next_start_at after this plan
        self.deadline: float | None = None  # the earliest time a wait here can end
        self._windows: dict[str, tuple[bool, float | None]] = {}

    def _note(self, at: float | None) -> None:
        if at is not None and (self.deadline is None or at < self.deadline):
            self.deadline = at

    def check(self, account_id: str | None) -> str | None:
        """None if a job of this account may start now, else why it waits."""
        account = self.accounts.get(account_id) if account_id is not None else None
        if account is None:
            return None
        now = self.now
        if account.cooldown_until is not None and account.cooldown_until > now:
            self._note(account.cooldown_until)
            return THROTTLED
        if account.allowance is not None and self.active.get(account.id, 0) >= account.allowance:
            return THROTTLED  # a job's end frees it: no deadline
        if account.max_starts_per_minute:
            due = self.bookings.get(account.id, account.next_start_at)
            if due is not None and due > now:
                self._note(due)
                return BUDGET
        spent, until = self.window(account)
        if spent:
            self._note(until)
            return BUDGET
        return None

    def started(self, account_id: str | None) -> None:
        account = self.accounts.get(account_id) if account_id is not None else None
        if account is None:
            return
        self.active[account.id] = self.active.get(account.id, 0) + 1
        if account.max_starts_per_minute:
            due = self.bookings.get(account.id, account.next_start_at)
            base = max(self.now, due or self.now)
            self.bookings[account.id] = base + 60.0 / account.max_starts_per_minute

    def window(self, account: Account) -> tuple[bool, float | None]:
        """Whether a token window of the account is spent, and when enough of it frees
        (None: only running jobs spend it, their end will tell)."""
        if account.id in self._windows:
            return self._windows[account.id]
        found: tuple[bool, float | None] = (False, None)
        for limit, seconds in ((account.max_tokens_per_hour, account.hour_seconds),
                               (account.max_tokens_per_day, account.day_seconds)):
            if not limit:
                continue
            used = self.store.tokens_used(account.id, self.now - seconds)
            total = sum(t for _, t in used)
            if total < limit:
                continue
            until = None
            for ended, tokens in used:
                if ended is None:
                    continue
                total -= tokens
                if total < limit:
                    until = ended + seconds
                    break
            if not found[0] or (until is not None and (found[1] is None or until > found[1])):
                found = (True, until)
        self._windows[account.id] = found
        return found

    def book(self) -> None:
        """Write the start bucket's new times (inside the claiming transaction)."""
        for account_id, due in self.bookings.items():
            self.store.set_account_state(account_id, next_start_at=due)


# -- recording a job's end --------------------------------------------------------------


def _jitter() -> float:
    return int.from_bytes(os.urandom(2), "big") / 65535  # no `random`: keeps the runner small


def cooldown(backoff: float, strikes: int) -> float:
    """Exponential with jitter: backoff, 2×, 4×, … (up to +25%), at most COOLDOWN_MAX."""
    return min(COOLDOWN_MAX, backoff * 2.0 ** max(0, strikes - 1)) * (1 + 0.25 * _jitter())


def retries_allowed(store: Store, job: Job) -> int:
    account = store.accounts([job.spec.account]).get(job.spec.account) if job.spec.account else None
    return account.rate_limit_retries if account is not None else DEFAULT_RATE_LIMIT_RETRIES


def rate_limited(store: Store, job: Job, now: float, retry_after: float | None) -> float | None:
    """Inside the transaction that ended `job` rate-limited (after its row was ended):
    cut the account's allowance and open (or extend) its cool-down. Returns when its
    next attempt may start: the cool-down's end, or None when the account is not
    adaptive (the job's own backoff then applies)."""
    account_id = job.spec.account
    account = store.accounts([account_id]).get(account_id) if account_id else None
    if account is None:
        return None
    if not account.adaptive:
        store.add_account_event(account.id, now, "429", 0.0)
        return None
    active = store.active_per_account().get(account.id, 0)  # without this job, ended
    changes: dict[str, Any] = {"limited_at": now}
    started = job.started_at
    if account.cut_at is not None and started is not None and started < account.cut_at:
        # The same burst as the last cut: no second halving; the allowance is at most
        # what still runs (all of it ran when the limit was hit).
        if account.allowance is not None and active < account.allowance:
            changes["allowance"] = max(1, active)
        strikes = account.strikes
        delay = retry_after
    else:
        level = active + 1
        base = level if account.allowance is None else min(account.allowance, level)
        changes["allowance"] = max(1, base // 2)
        changes["cut_from"] = max(account.cut_from or 0, level)
        changes["cut_at"] = now
        strikes = changes["strikes"] = account.strikes + 1
        delay = retry_after if retry_after is not None else cooldown(account.backoff, strikes)
    until = account.cooldown_until if account.cooldown_until and account.cooldown_until > now else now
    if delay is not None and now + delay > until:
        until = changes["cooldown_until"] = now + delay
    store.set_account_state(account.id, **changes)
    # The cool-down in force from now on: `status --stats` adds up their union.
    store.add_account_event(account.id, now, "429", until - now)
    return until


def succeeded(store: Store, job: Job, now: float) -> None:
    """Inside the transaction that ended `job` succeeded: additive increase."""
    account_id = job.spec.account
    account = store.accounts([account_id]).get(account_id) if account_id else None
    if account is None or (account.allowance is None and not account.strikes):
        return
    changes: dict[str, Any] = {}
    if account.strikes:
        changes["strikes"] = 0
    after_cut = account.cut_at is None or (job.started_at or 0.0) >= account.cut_at
    if account.allowance is not None and after_cut:
        active = store.active_per_account().get(account.id, 0)
        if active + 1 >= account.allowance:  # the allowance was in use: it held
            raised = account.allowance + 1
            ceiling = account.max_parallel or account.cut_from
            if ceiling is None or raised >= ceiling:
                changes.update(allowance=None, cut_from=None)
            else:
                changes.update(allowance=raised, cut_at=now)
    if changes:
        store.set_account_state(account.id, **changes)


# -- what status shows ------------------------------------------------------------------


@dataclass
class AccountState:
    """An account as `status`, `doctor` and `--json` show it."""

    id: str
    label: str
    throttled: bool
    allowance: int | None  # None: not cut
    ceiling: int | None
    active: int
    queued: int
    limited_at: float | None
    cooldown_until: float | None
    next_start: float | None  # the earliest a queued job of it may start, if known
    budget_until: float | None  # a spent token window frees then
    budget_spent: bool
    adaptive: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def account_states(store: Store, queued: Mapping[str, int], now: float) -> list[AccountState]:
    """Every account with jobs queued or active, or throttled now."""
    gate = Gate(store, (), now)
    gate.accounts = store.accounts()
    gate.active = store.active_per_account()
    found = []
    for account in gate.accounts.values():
        waiting = queued.get(account.id, 0)
        active = gate.active.get(account.id, 0)
        cooling = account.cooldown_until is not None and account.cooldown_until > now
        if not (waiting or active or cooling or account.allowance is not None):
            continue
        gate.deadline = None
        reason = gate.check(account.id)
        spent, until = gate.window(account)
        next_start = gate.deadline if reason is not None else None
        found.append(AccountState(
            account.id, account.label, cooling or account.allowance is not None,
            account.allowance, account.max_parallel or account.cut_from, active, waiting,
            account.limited_at, account.cooldown_until if cooling else None,
            next_start if waiting else None, until, spent, account.adaptive,
        ))
    return found


def describe(state: AccountState) -> str:
    """One line: "rate-limited at 21:03: 2 of 6 slots, next start 21:04:10"."""
    def hm(t: float, seconds: bool = False) -> str:
        return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.localtime(t))

    parts = []
    if state.throttled:
        head = f"rate-limited at {hm(state.limited_at)}" if state.limited_at else "rate-limited"
        if state.allowance is not None:
            ceiling = f" of {state.ceiling}" if state.ceiling else ""
            head += f": {state.allowance}{ceiling} slots"
        parts.append(head)
    if state.budget_spent:
        parts.append("token budget spent" + (f" until {hm(state.budget_until, True)}"
                                             if state.budget_until else ""))
    if state.next_start is not None:
        parts.append(f"next start {hm(state.next_start, True)}")
    if not parts:
        parts.append(f"{state.active} running")
    return ", ".join(parts)
