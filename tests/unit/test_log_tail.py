"""`read_log(tail_bytes=…)`: the board reads the end of a long log, not all of it."""

from __future__ import annotations

from codexw.services.logs import read_log
from tests.conftest import Env


def test_the_tail_of_a_log_is_the_end_of_the_whole_log(cx: Env) -> None:
    job = cx.launch("@fake events 200")
    cx.ok("wait", str(job["job_id"]))
    _, entries = read_log(job["job_id"])
    whole = [e.text for e in entries]
    log = cx.state / "logs" / f"{job['job_id']}.jsonl"
    size = log.stat().st_size
    _, entries = read_log(job["job_id"], tail_bytes=size // 4)
    tail = [e.text for e in entries]
    assert 10 < len(tail) < len(whole) // 2
    assert whole[-len(tail):] == tail  # whole entries only: the cut line is not shown
    _, entries = read_log(job["job_id"], tail_bytes=size * 2)
    assert [e.text for e in entries] == whole
