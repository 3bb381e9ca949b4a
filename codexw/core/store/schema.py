"""The registry's schema: the migrations from the first version on, and applying them.

`PRAGMA user_version` is the number of migrations applied; all that are missing run in
one transaction. A migration is never edited once released: a change is a new one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from codexw.core.errors import StoreError

if TYPE_CHECKING:
    from codexw.core.store.connection import Connection

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        project TEXT NOT NULL,
        source TEXT,
        max_parallel INTEGER,
        halt_on_failure INTEGER NOT NULL DEFAULT 0,
        halted_reason TEXT
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        task TEXT NOT NULL,
        level TEXT NOT NULL,
        type TEXT NOT NULL,
        model TEXT,
        sandbox TEXT NOT NULL,
        cwd TEXT NOT NULL,
        project TEXT NOT NULL,
        codex_bin TEXT NOT NULL,
        codex_args TEXT NOT NULL DEFAULT '[]',
        codex_home TEXT,
        template TEXT,
        timeout REAL,
        kill_grace REAL NOT NULL,
        retries INTEGER NOT NULL DEFAULT 0,
        retry_timeouts INTEGER NOT NULL DEFAULT 0,
        backoff_base REAL NOT NULL,
        backoff_max REAL NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        batch_id INTEGER REFERENCES batches(id),
        name TEXT,
        global_limit INTEGER,
        resume_thread TEXT,
        resume_of INTEGER,
        attempt INTEGER NOT NULL DEFAULT 1,
        retry_of INTEGER,
        queued_at REAL NOT NULL,
        not_before REAL,
        started_at REAL,
        ended_at REAL,
        claimed_by_pid INTEGER,
        claimed_by_start REAL,
        runner_pid INTEGER,
        runner_start REAL,
        codex_pgid INTEGER,
        exit_code INTEGER,
        reason TEXT,
        retryable INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        cached_input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_output_tokens INTEGER NOT NULL DEFAULT 0,
        thread_id TEXT,
        report_path TEXT,
        log_path TEXT,
        last_action TEXT,
        kill_requested INTEGER NOT NULL DEFAULT 0,
        host TEXT
    );
    CREATE TABLE job_deps (
        job_id INTEGER NOT NULL,
        dep_id INTEGER NOT NULL,
        PRIMARY KEY (job_id, dep_id)
    );
    CREATE INDEX jobs_by_state ON jobs(state, priority DESC, id);
    CREATE INDEX jobs_by_project ON jobs(project, id);
    CREATE INDEX jobs_by_batch ON jobs(batch_id, state);
    CREATE INDEX jobs_by_ended ON jobs(ended_at);
    CREATE INDEX jobs_by_retry_of ON jobs(retry_of);
    CREATE INDEX job_deps_by_dep ON job_deps(dep_id);
    """,
    # 2: `status --stats` from indexes alone (a covering index for the counts and token
    # sums, ordered durations per level for the median and p90 without a sort).
    """
    CREATE INDEX jobs_stats ON jobs(project, state, type, level, queued_at, started_at,
        ended_at, input_tokens, cached_input_tokens, output_tokens, reasoning_output_tokens);
    CREATE INDEX jobs_by_level_duration ON jobs(level, (ended_at - started_at))
        WHERE started_at IS NOT NULL AND ended_at IS NOT NULL;
    CREATE INDEX jobs_by_project_level_duration ON jobs(project, level, (ended_at - started_at))
        WHERE started_at IS NOT NULL AND ended_at IS NOT NULL;
    """,
    # 3: remote jobs (the Celery backend): where a job runs and its Celery task id; the
    # worker's name goes in the existing `host` column.
    """
    ALTER TABLE jobs ADD COLUMN backend TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE jobs ADD COLUMN broker_url TEXT;
    ALTER TABLE jobs ADD COLUMN queue TEXT;
    ALTER TABLE jobs ADD COLUMN celery_task_id TEXT;
    """,
    # 4: the PATH of the command that launched the job, so that codex (an npm script
    # run through `env node`) starts the same whoever fills the slot (cron, a runner).
    """
    ALTER TABLE jobs ADD COLUMN path_env TEXT;
    """,
    # 5: a random key per attempt (a runner proves the job is its own, beyond the id) and
    # the name of the file holding the launching command's environment (core.envfile).
    """
    ALTER TABLE jobs ADD COLUMN job_key TEXT;
    ALTER TABLE jobs ADD COLUMN env_key TEXT;
    """,
    # 6: whether the prompt asks for the report's sections (`--no-sections`).
    """
    ALTER TABLE jobs ADD COLUMN report_sections INTEGER NOT NULL DEFAULT 1;
    """,
    # 7: the files an ended run changed (JSON, path -> kind), from its events and git
    # status, as its report lists them: `codexw mcp`'s result tool reads them back.
    """
    ALTER TABLE jobs ADD COLUMN files TEXT;
    """,
    # 8: whether an npm codex starts as its native binary, and what the runner started.
    """
    ALTER TABLE jobs ADD COLUMN codex_native INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN codex_exec TEXT;
    """,
    # 9: a git worktree per job (docs/isolation.md): the spec's isolation fields, and what
    # became of the branch (files it changed, when it was merged).
    """
    ALTER TABLE jobs ADD COLUMN isolation TEXT NOT NULL DEFAULT 'none';
    ALTER TABLE jobs ADD COLUMN base_commit TEXT;
    ALTER TABLE jobs ADD COLUMN branch TEXT;
    ALTER TABLE jobs ADD COLUMN worktree TEXT;
    ALTER TABLE jobs ADD COLUMN branch_prefix TEXT NOT NULL DEFAULT 'codexw/';
    ALTER TABLE jobs ADD COLUMN worktree_copy TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN worktree_setup TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN dirty_base INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN files_changed INTEGER;
    ALTER TABLE jobs ADD COLUMN merged_at REAL;
    CREATE INDEX jobs_by_branch ON jobs(project, branch) WHERE branch IS NOT NULL;
    """,
    # 10: the rate limiter (core/limiter.py): the account a job runs on, how many of its
    # attempts before it were rate-limited (they do not count against --retries) and
    # when a slot was claimed for it (a start, for the start bucket's checks); a
    # batch's token budget; one row per account (its settings, from the latest launch on
    # it, and its state: AIMD allowance, cool-down, start bucket); 429s and throttled
    # time (cool-down seconds) for `status --stats`.
    """
    ALTER TABLE jobs ADD COLUMN account TEXT;
    ALTER TABLE jobs ADD COLUMN rate_limited INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN claimed_at REAL;
    CREATE INDEX jobs_by_account ON jobs(account, ended_at);
    ALTER TABLE batches ADD COLUMN budget_tokens INTEGER;
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        max_parallel INTEGER,
        adaptive INTEGER NOT NULL DEFAULT 1,
        backoff REAL NOT NULL DEFAULT 2.0,
        rate_limit_retries INTEGER NOT NULL DEFAULT 6,
        max_starts_per_minute INTEGER,
        max_tokens_per_hour INTEGER,
        max_tokens_per_day INTEGER,
        hour_seconds REAL NOT NULL DEFAULT 3600,
        day_seconds REAL NOT NULL DEFAULT 86400,
        allowance INTEGER,
        cut_from INTEGER,
        cut_at REAL,
        cooldown_until REAL,
        strikes INTEGER NOT NULL DEFAULT 0,
        limited_at REAL,
        next_start_at REAL
    );
    CREATE TABLE account_events (
        account TEXT NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        seconds REAL
    );
    CREATE INDEX account_events_by_at ON account_events(at);
    """,
    # 11: job-end notifications (core.announce): where a job's or a batch's end is announced,
    # and one row per announcement, inserted in the transaction that ends the job (never
    # lost), claimed before sending and marked after (never sent twice). UNIQUE: one
    # announcement per job end and per batch end.
    """
    ALTER TABLE jobs ADD COLUMN notify TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE batches ADD COLUMN notify TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE announcements (
        id INTEGER PRIMARY KEY,
        job_id INTEGER UNIQUE,
        batch_id INTEGER UNIQUE,
        targets TEXT NOT NULL,
        created_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'due',
        sender_pid INTEGER,
        sender_start REAL,
        sent_at REAL,
        error TEXT
    );
    CREATE INDEX announcements_open ON announcements(state, created_at)
        WHERE state IN ('due', 'sending');
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(store: Connection, path: os.PathLike[str]) -> None:
    version = store.conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: registry schema {version} is newer than this codexw ({SCHEMA_VERSION})",
            "upgrade codexw",
        )
    with store.transaction(notify_waiters=False):
        version = store.conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    store.conn.execute(statement)
        store.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
