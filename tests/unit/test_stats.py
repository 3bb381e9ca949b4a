"""status --stats: SQL aggregates over a registry with known numbers, and the CLI around them."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from codexw.core.models import JobSpec
from codexw.core.store import Store
from codexw.services.stats import job_stats
from tests.conftest import Env


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    s = Store.open()
    yield s
    s.close()


def add(
    store: Store, project: Path, *, state: str = "succeeded", level: str = "low",
    job_type: str = "workers", duration: float | None = 10.0, tokens: tuple[int, ...] = (0, 0, 0, 0),
    queued_at: float = 1_700_000_000.0, task: str = "t",
) -> int:
    spec = JobSpec(task=task, level=level, type=job_type, cwd=str(project), project=str(project),
                   codex_bin="codex")
    with store.transaction():
        job_id = store.insert_job(spec, now=queued_at)
        started = queued_at + 1 if duration is not None else None
        ended = started + duration if started is not None else (
            None if state in ("queued", "running") else queued_at + 1)
        store.conn.execute(
            "UPDATE jobs SET state = ?, started_at = ?, ended_at = ?, input_tokens = ?,"
            " cached_input_tokens = ?, output_tokens = ?, reasoning_output_tokens = ? WHERE id = ?",
            (state, started, ended, *tokens, job_id),
        )
    return job_id


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_counts_success_rate_durations_and_tokens(store: Store, tmp_path: Path) -> None:
    project = tmp_path / "p"
    low = [float(d) for d in (7, 1, 9, 3, 5, 2, 10, 4, 8, 6)]
    for d in low:
        add(store, project, duration=d, tokens=(100, 10, 20, 5))
    for state, d in (("failed", 100.0), ("timed_out", 300.0), ("lost", 50.0)):
        add(store, project, state=state, level="high", job_type="research", duration=d,
            tokens=(1000, 0, 200, 50))
    add(store, project, state="killed", level="high", duration=1.0)
    add(store, project, state="cancelled", level="xhigh", duration=None)
    add(store, project, state="queued", level="xhigh", duration=None, queued_at=1_800_000_000.0,
        task="newest task\nsecond line")
    add(store, tmp_path / "elsewhere", level="minimal", duration=1000.0, tokens=(9, 9, 9, 9))

    st = job_stats(cwd=str(project), store=store, disk=False)

    assert st.total == 16
    assert st.by_state == {"queued": 1, "succeeded": 10, "failed": 1, "timed_out": 1, "killed": 1,
                           "lost": 1, "cancelled": 1}
    assert st.by_type == {"workers": 13, "research": 3}
    assert list(st.by_level) == ["low", "high", "xhigh"]  # in level order
    assert st.rated == 13 and st.success_rate == pytest.approx(10 / 13)  # killed/cancelled: not rated
    assert st.durations["low"].runs == 10
    assert st.durations["low"].median == nearest_rank(low, 0.5) == 5.0
    assert st.durations["low"].p90 == nearest_rank(low, 0.9) == 9.0
    high = [100.0, 300.0, 50.0, 1.0]
    assert (st.durations["high"].median, st.durations["high"].p90) == (
        nearest_rank(high, 0.5), nearest_rank(high, 0.9))
    assert "xhigh" not in st.durations  # never ran
    assert st.tokens == {"input_tokens": 4000, "cached_input_tokens": 100, "output_tokens": 800,
                         "reasoning_output_tokens": 200}
    assert st.tokens_by_level["high"]["output_tokens"] == 600
    assert st.oldest.id == 1 and st.newest.task == "newest task"

    everywhere = job_stats(all_projects=True, store=store, disk=False)
    assert everywhere.total == 17 and everywhere.durations["minimal"].median == 1000.0
    assert everywhere.project is None


def test_type_filter_ranks_the_same_as_the_index(store: Store, tmp_path: Path) -> None:
    project = tmp_path / "p"
    durations = [float((i * 37) % 101) for i in range(57)]
    for d in durations:
        add(store, project, level="medium", duration=d)
    by_index = job_stats(cwd=str(project), store=store, disk=False).durations["medium"]
    by_type = job_stats(cwd=str(project), job_type="workers", store=store, disk=False)
    assert by_type.durations["medium"] == by_index
    assert (by_index.median, by_index.p90) == (nearest_rank(durations, 0.5),
                                               nearest_rank(durations, 0.9))
    assert job_stats(cwd=str(project), job_type="research", store=store, disk=False).total == 0


def test_stats_read_indexes_not_rows(store: Store) -> None:
    def plan(sql: str, params: tuple) -> str:
        return " ".join(r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql, params))

    groups = "SELECT project, state, type, level, COUNT(*), SUM(input_tokens) FROM jobs{} GROUP BY project, state, type, level"
    assert "COVERING INDEX jobs_stats" in plan(groups.format(""), ())
    assert "COVERING INDEX jobs_stats" in plan(groups.format(" WHERE project = ?"), ("/p",))
    assert "TEMP B-TREE" not in plan(groups.format(""), ())
    step = ("SELECT ended_at - started_at FROM jobs WHERE {}level = ? AND started_at IS NOT NULL"
            " AND ended_at IS NOT NULL ORDER BY ended_at - started_at LIMIT 1 OFFSET 3")
    assert "jobs_by_level_duration" in plan(step.format(""), ("low",))
    assert "jobs_by_project_level_duration" in plan(step.format("project = ? AND "), ("/p", "low"))
    assert "TEMP B-TREE" not in plan(step.format(""), ("low",))


def test_disk_use_of_reports_archives_and_logs(store: Store, tmp_path: Path) -> None:
    project = tmp_path / "p"
    mine = add(store, project)
    theirs = add(store, tmp_path / "q")
    workers = project / ".codexw" / "workers"
    workers.mkdir(parents=True)
    (workers / "a_codex_task.md").write_bytes(b"x" * 100)
    (workers / "b_codex_task.md").write_bytes(b"x" * 300)
    (workers / "c_codex_task.md.gz").write_bytes(b"x" * 50)
    (workers / "elsewhere_codex_task.md").symlink_to(workers / "a_codex_task.md")
    month = project / ".codexw" / "archive" / "2025-01" / "research"
    month.mkdir(parents=True)
    (month / "d_codex_task.md.gz").write_bytes(b"x" * 70)
    logs = Path(os.environ["CODEXW_STATE_DIR"]) / "logs"
    (logs / f"{mine}.jsonl").write_bytes(b"x" * 1000)
    (logs / f"{mine}.stderr.log.gz").write_bytes(b"x" * 10)
    (logs / f"{theirs}.jsonl").write_bytes(b"x" * 5000)

    st = job_stats(cwd=str(project), store=store)

    assert st.disk["reports"].to_dict() == {"files": 2, "bytes": 400}
    assert st.disk["archives"].to_dict() == {"files": 2, "bytes": 120}
    assert st.disk["logs"].to_dict() == {"files": 2, "bytes": 1010}
    assert st.average_report_bytes == 200
    assert job_stats(all_projects=True, store=store).disk["logs"].bytes == 6010
    research = job_stats(cwd=str(project), job_type="research", store=store)
    assert research.disk["archives"].bytes == 70 and research.disk["reports"].files == 0


def test_status_stats_cli_text_and_json(cx: Env) -> None:
    store = Store.open()
    for n in range(3):
        add(store, cx.project, state="succeeded" if n else "failed", level="high",
            duration=60.0 * (n + 1), tokens=(1500, 0, 250, 40))
    store.close()

    data = json.loads(cx.ok("status", "--stats", "--json").stdout)
    assert data["version"] == 1 and data["command"] == "status"
    stats = data["stats"]
    assert stats["jobs"] == 3 and stats["by_state"] == {"succeeded": 2, "failed": 1}
    assert stats["success_rate"] == pytest.approx(2 / 3)
    assert stats["durations"]["high"] == {"runs": 3, "median": 120.0, "p90": 180.0}
    assert stats["tokens"]["input_tokens"] == 4500
    assert set(stats["disk"]) == {"reports", "archives", "logs"}
    assert stats["project"] == str(cx.project)

    text = cx.ok("status", "--stats").stdout
    assert "66.7% of 3 rated runs" in text
    assert "high" in text and "2m00s" in text and "3m00s" in text
    assert "in 4.5k" in text

    bad = cx.run("status", "--stats", "1")
    assert bad.returncode == 2 and "--stats" in bad.stderr
