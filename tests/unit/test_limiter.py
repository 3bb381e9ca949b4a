"""The per-account rate limiter on a real registry: classification of codex's 429s,
AIMD, cool-downs, budgets, and the identity of an account."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from codexw.core import limiter
from codexw.core.codex import rate_limit
from codexw.core.lifecycle import Ending, record_end
from codexw.core.models import JobSpec, JobState
from codexw.core.scheduler import _plan
from codexw.core.store import Account, Store

ACCOUNT = "acct"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    st = Store.open()
    with st.transaction():
        st.save_account(ACCOUNT, {"label": "openai OPENAI_API_KEY (/h)", "max_parallel": 6,
                                  "backoff": 2.0})
    return st


def _spec(**kw) -> JobSpec:  # type: ignore[no-untyped-def]
    return JobSpec(task="t", level="low", type="workers", cwd="/p", project="/p",
                   codex_bin="codex", account=ACCOUNT, **kw)


def _running(store: Store, n: int, started: float) -> list[int]:
    ids = []
    with store.transaction():
        for _ in range(n):
            job_id = store.insert_job(_spec(), now=started)
            store.mark_starting(job_id, 1, None)
            store.adopt(job_id, 1, None)
            store.mark_running(job_id, 1, 1, started)
            ids.append(job_id)
    return ids


def _end(store: Store, job_id: int, ending: Ending, at: float) -> int | None:
    job = store.get_job(job_id)
    recorded, retry = record_end(store, job, ending, ended_at=at, summary=None, report_path=None)
    assert recorded
    return retry


def _limited() -> Ending:
    return Ending(JobState.FAILED, "rate-limited: exceeded retry limit, last status: 429",
                  1, True, rate_limited=True)


def _account(store: Store) -> Account:
    return store.accounts([ACCOUNT])[ACCOUNT]


@pytest.mark.parametrize(("text", "limited", "after"), [
    ("exceeded retry limit, last status: 429 Too Many Requests", True, None),
    ("Rate limit reached for gpt-5 on tokens per min. Please try again in 1.5s.", True, 1.5),
    ("429 Too Many Requests; Retry-After: 20", True, 20.0),
    ("rate limit: please try again in 2 minutes", True, 120.0),
    ("You exceeded your current quota, please check your plan and billing details (429)",
     False, None),
    ("We're currently experiencing high demand, which may cause temporary errors.", False, None),
    ("unexpected status 401 Unauthorized: invalid api key", False, None),
])
def test_rate_limits_are_told_apart_from_other_failures(
    text: str, limited: bool, after: float | None
) -> None:
    assert rate_limit(text) == (limited, after)


def test_a_usage_limit_with_a_reset_time_waits_until_then() -> None:
    now = time.mktime((2026, 1, 5, 15, 0, 0, 0, 0, -1))
    limited, after = rate_limit("You've hit your usage limit. Try again at 3:45 PM.", now)
    assert limited and after == pytest.approx(45 * 60)


def test_a_429_halves_the_allowance_and_opens_a_cool_down(store: Store) -> None:
    t0 = time.time()
    ids = _running(store, 6, t0)
    retry = _end(store, ids[0], _limited(), t0 + 1)
    account = _account(store)
    assert account.allowance == 3 and account.cut_from == 6
    assert account.cooldown_until is not None
    assert t0 + 1 + 2.0 <= account.cooldown_until <= t0 + 1 + 2.5  # backoff + jitter
    # Requeued for when the cool-down ends, without counting against --retries (0).
    assert retry is not None
    again = store.get_job(retry)
    assert again.rate_limited == 1 and again.not_before == account.cooldown_until
    # The same burst (started before the cut) does not halve again: the allowance only
    # falls to what still runs.
    _end(store, ids[1], _limited(), t0 + 1.1)
    assert _account(store).allowance == 3  # 4 still run
    for job_id in ids[2:4]:
        _end(store, job_id, _limited(), t0 + 1.2)
    assert _account(store).allowance == 2


def test_no_job_of_the_account_starts_during_its_cool_down(store: Store) -> None:
    t0 = time.time()
    ids = _running(store, 2, t0)
    retry = _end(store, ids[0], _limited(), t0)
    assert retry is not None
    until = _account(store).cooldown_until
    assert until is not None
    with store.snapshot():
        plan = _plan(store, until - 0.01)
    assert plan.start == [] and plan.waiting == {retry: limiter.THROTTLED}
    assert plan.deadline == until  # the waker's alarm
    with store.snapshot():
        plan = _plan(store, until + 0.01)
    assert plan.start == [] and plan.waiting == {retry: limiter.THROTTLED}  # allowance 1
    _end(store, ids[1], Ending(JobState.SUCCEEDED), until)
    with store.snapshot():
        plan = _plan(store, until + 0.01)
    assert [j.id for j in plan.start] == [retry]


def test_successes_after_the_cut_raise_the_allowance_back_to_the_ceiling(store: Store) -> None:
    t0 = time.time()
    ids = _running(store, 4, t0)
    _end(store, ids[0], _limited(), t0 + 1)  # 4 active: allowance 2
    assert _account(store).allowance == 2
    _end(store, ids[1], Ending(JobState.SUCCEEDED), t0 + 2)  # started before the cut
    assert _account(store).allowance == 2
    later = _running(store, 1, t0 + 5)
    _end(store, later[0], Ending(JobState.SUCCEEDED), t0 + 6)  # 2 active + itself ≥ 2
    assert _account(store).allowance == 3
    for n in range(3):
        more = _running(store, 3, t0 + 10 + n)
        _end(store, more[0], Ending(JobState.SUCCEEDED), t0 + 10.5 + n)
        for job_id in more[1:]:
            _end(store, job_id, Ending(JobState.SUCCEEDED), t0 + 10.6 + n)
    account = _account(store)
    assert account.allowance is None and account.strikes == 0  # back at max_parallel 6


def test_without_adaptive_a_429_cuts_nothing_and_the_job_backs_off(store: Store) -> None:
    with store.transaction():
        store.save_account(ACCOUNT, {"label": "x", "adaptive": False})
    t0 = time.time()
    ids = _running(store, 3, t0)
    retry = _end(store, ids[0], _limited(), t0)
    account = _account(store)
    assert account.allowance is None and account.cooldown_until is None
    assert retry is not None and store.get_job(retry).not_before is not None


def test_a_rate_limited_attempt_never_halts_its_batch(store: Store) -> None:
    with store.transaction():
        batch = store.insert_batch("/p", None, 2, True)
        store.save_account(ACCOUNT, {"label": "x", "rate_limit_retries": 0})
    ids = _running(store, 1, time.time())
    with store.transaction():
        store.conn.execute("UPDATE jobs SET batch_id = ? WHERE id = ?", (batch, ids[0]))
    _end(store, ids[0], _limited(), time.time())
    assert store.get_batch(batch).halted_reason is None


def test_the_start_bucket_spaces_starts(store: Store) -> None:
    with store.transaction():
        store.save_account(ACCOUNT, {"label": "x", "max_starts_per_minute": 30})
        for _ in range(3):
            store.insert_job(_spec(), now=1.0)
    now = time.time()
    with store.transaction():
        plan = _plan(store, now)
        assert len(plan.start) == 1 and plan.deadline == pytest.approx(now + 2.0)
        assert set(plan.waiting.values()) == {limiter.BUDGET}
        assert plan.gate is not None
        plan.gate.book()
    with store.snapshot():
        assert len(_plan(store, now + 1.9).start) == 0
        assert len(_plan(store, now + 2.0).start) == 1


def test_a_spent_token_window_holds_starts_until_it_frees(store: Store) -> None:
    with store.transaction():
        store.save_account(ACCOUNT, {"label": "x", "max_tokens_per_hour": 1000})
    t0 = time.time()
    (done,) = _running(store, 1, t0 - 100)
    with store.transaction():
        store.update_progress(done, None, {"input_tokens": 900, "output_tokens": 200}, None)
    _end(store, done, Ending(JobState.SUCCEEDED), t0 - 50)
    with store.transaction():
        waiting = store.insert_job(_spec(), now=t0)
    with store.snapshot():
        plan = _plan(store, t0)
    assert plan.start == [] and plan.waiting == {waiting: limiter.BUDGET}
    assert plan.deadline == pytest.approx(t0 - 50 + 3600)


def test_two_keys_are_two_accounts_and_the_secret_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    home = tmp_path / "codex"
    home.mkdir()
    base = {"CODEX_HOME": str(home), "HOME": str(tmp_path)}
    one = limiter.identify({**base, "OPENAI_API_KEY": "sk-one-secret"})
    again = limiter.identify({**base, "OPENAI_API_KEY": "sk-one-secret"})
    two = limiter.identify({**base, "OPENAI_API_KEY": "sk-two-secret"})
    login = limiter.identify(base)
    assert one == again and len({one.id, two.id, login.id}) == 3
    assert "secret" not in one.label and "OPENAI_API_KEY" in one.label
    assert "login" in login.label
    salt = tmp_path / "state" / "account-salt"
    assert (salt.stat().st_mode & 0o777) == 0o600
    # A custom provider's own key variable is the credential.
    (home / "config.toml").write_text(
        'model_provider = "mock"\n[model_providers.mock]\nenv_key = "MOCK_KEY"\n')
    mock = limiter.identify({**base, "MOCK_KEY": "k", "OPENAI_API_KEY": "sk-one-secret"})
    assert mock.id != one.id and mock.label.startswith("mock MOCK_KEY")


@pytest.mark.parametrize(("line", "value"), [
    ("adaptive = false", False), ('rate_limit_backoff = "0.5s"', 0.5),
    ("rate_limit_retries = 0", 0), ("max_starts_per_minute = 30", 30),
    ("max_tokens_per_hour = 1000000", 1_000_000), ('max_tokens_per_day = "5"', 5),
])
def test_limiter_keys_are_read_from_config(tmp_path: Path, line: str, value: object) -> None:
    from codexw.core.config import parse_file, read_bytes

    path = tmp_path / "config.toml"
    path.write_text(line + "\n")
    assert list(parse_file(path, read_bytes(path)).values()) == [value]


@pytest.mark.parametrize("line", [
    'adaptive = "maybe"', "rate_limit_backoff = 0", "rate_limit_retries = -1",
    "rate_limit_retries = 101", "max_starts_per_minute = 0", "max_tokens_per_hour = 0",
    "max_tokens_per_day = 1e3", "max_tokens_per_day = 10000000000000000",
])
def test_bad_limiter_values_name_the_file_and_key(tmp_path: Path, line: str) -> None:
    from codexw.core.config import parse_file, read_bytes
    from codexw.core.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as err:
        parse_file(path, read_bytes(path))
    assert str(path) in err.value.message and line.split(" =")[0] in err.value.message
