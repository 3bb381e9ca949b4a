"""codex's stdout is untrusted input (issue 12, defects 1 and 11): no event line can crash
the parser, put a value SQLite refuses into the registry, grow the runner's memory
without bound, or cost more than linear time."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import time
import tracemalloc
from pathlib import Path

import pytest

from codexw.backends.celery import protocol
from codexw.core import lifecycle, reports
from codexw.core.codex import RunSummary, is_transient
from codexw.core.events import MAX_DEPTH, MAX_LINE_BYTES, LineSplitter, Skipped, too_deep
from codexw.core.models import TOKEN_KEYS, Job, JobSpec, JobState
from codexw.core.store import Store

INT64_MAX = 2**63 - 1
DEEP = 200_000


def _line(event: object) -> str:
    return json.dumps(event)


def _turn(**usage: object) -> str:
    return _line({"type": "turn.completed", "usage": usage})


def _item(**item: object) -> str:
    return _line({"type": "item.completed", "item": item})


# Each: the lines codex sends. Every one of them crashed the runner or the registry write.
HOSTILE: dict[str, list[str]] = {
    "input_tokens-2^63": [_turn(input_tokens=2**63, output_tokens=1)],
    "tokens-sum-past-int64": [_turn(input_tokens=INT64_MAX), _turn(input_tokens=INT64_MAX)],
    "tokens-2^200": [_turn(input_tokens=2**200, cached_input_tokens=2**64)],
    "tokens-negative-float-bool-str": [
        _turn(input_tokens=-5, output_tokens=1.5e300, cached_input_tokens=True,
              reasoning_output_tokens="9")
    ],
    "usage-a-list": ['{"type":"turn.completed","usage":[1]}'],
    "usage-a-string": ['{"type":"turn.completed","usage":"lots"}'],
    "nested-arrays-200000": ["[" * DEEP + "]" * DEEP],
    "nested-objects-200000": ['{"a":' * DEEP + "1" + "}" * DEEP],
    "nested-inside-an-event": [
        '{"type":"turn.completed","usage":{"input_tokens":3,"x":' + "[" * DEEP + "]" * DEEP + "}}"
    ],
    "unbalanced-200000": ["[" * DEEP],
    "changes-an-int": [_item(id="f", type="file_change", changes=5)],
    "changes-junk": [
        _item(id="f", type="file_change",
              changes=[5, None, {"path": {"a": 1}}, {"path": 7}, {"path": "ok.py", "kind": ["x"]}])
    ],
    "thread_id-an-object": [_line({"type": "thread.started", "thread_id": {"a": 1}})],
    "thread_id-2^63": ['{"type":"thread.started","thread_id":9223372036854775808}'],
    "thread_id-huge-string": [_line({"type": "thread.started", "thread_id": "a" * 100_000})],
    "thread_id-nul-and-option": [
        _line({"type": "thread.started", "thread_id": "a\u0000b"}),
        _line({"type": "thread.started", "thread_id": "--help"}),
    ],
    "turn.failed-message-an-object": [
        _line({"type": "turn.failed", "error": {"message": {"nested": {"deeper": [1, 2]}}}})
    ],
    "turn.failed-error-a-list": [_line({"type": "turn.failed", "error": [1, {"x": None}]})],
    "error-message-an-object": [_line({"type": "error", "message": {"code": 500}})],
    "lone-surrogates": [
        '{"type":"thread.started","thread_id":"\\ud800"}',
        '{"type":"error","message":"bad \\udc80 text"}',
        '{"type":"item.completed","item":{"id":"\\ud800","type":"command_execution",'
        '"command":"echo \\udfff","exit_code":0}}',
        '{"type":"turn.failed","error":{"message":"x\\ud800y"}}',
    ],
    "command-object-exit-code-2^70": [
        _item(id={"a": 1}, type="command_execution", command={"argv": ["rm"]}, exit_code=2**70,
              status={"s": 1})
    ],
    "message-an-object": [_item(id="m", type="agent_message", text=[1, 2, 3])],
    "error-item-an-object": [_item(id="e", type="error", message=[{"a": 1}])],
    "type-an-object": [_line({"type": {"a": 1}, "item": 5}), _line({"type": "item.completed", "item": [1]})],
}

GOOD_TAIL = [
    _item(id="ok", type="agent_message", text="done"),
    _turn(input_tokens=5, output_tokens=2),
]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    return Store.open()


def _job(store: Store, tmp_path: Path) -> Job:
    (tmp_path / "p").mkdir(exist_ok=True)
    spec = JobSpec(task="t", level="low", type="workers", cwd=str(tmp_path / "p"),
                   project=str(tmp_path / "p"), codex_bin="codex")
    with store.transaction():
        job_id = store.insert_job(spec, now=time.time())
    return store.get_job(job_id)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_event_is_noted_and_every_value_fits_the_registry(
    name: str, store: Store, tmp_path: Path
) -> None:
    summary = RunSummary()
    for line in [*HOSTILE[name], *GOOD_TAIL]:
        summary.feed_line(line)
        summary.feed_line(line.encode("utf-8", "surrogatepass"))  # as the runner reads it

    # What can be understood still is; the rest is a warning in the report.
    assert summary.final_message == "done"
    assert summary.warnings, "a hostile event must leave a warning"
    assert all(isinstance(w, str) and len(w) < 2000 for w in summary.warnings)
    for key in TOKEN_KEYS:
        value = summary.usage[key]
        assert type(value) is int and 0 <= value <= INT64_MAX
    assert summary.usage["input_tokens"] >= 10  # the good turn.completed counted (twice)
    assert summary.thread_id is None or (
        isinstance(summary.thread_id, str) and len(summary.thread_id) <= 128
        and not summary.thread_id.startswith("-") and "\x00" not in summary.thread_id
    )
    texts = [summary.error, summary.last_action, *summary.messages, *summary.warnings,
             *summary.files, *summary.files.values(),
             *(c.command for c in summary.commands.values()),
             *(c.status for c in summary.commands.values()), *summary.commands]
    for text in texts:
        if text is not None:
            assert isinstance(text, str)
            text.encode("utf-8")  # no lone surrogates: SQLite and report files take it
    for run in summary.commands.values():
        assert run.exit_code is None or (type(run.exit_code) is int and abs(run.exit_code) < 2**31)
    is_transient(summary.error)

    # The registry takes all of it, as the runner writes it (progress, then the end).
    job = _job(store, tmp_path)
    with store.transaction():
        store.update_progress(job.id, summary.last_action, summary.usage, summary.thread_id)
    with store.transaction():
        assert store.finish(job.id, JobState.FAILED, ended_at=time.time(), reason=summary.error,
                            tokens=summary.usage, thread_id=summary.thread_id,
                            last_action=summary.last_action)
    ended = store.get_job(job.id)
    assert ended.state == JobState.FAILED
    assert all(0 <= ended.tokens[k] <= INT64_MAX for k in TOKEN_KEYS)
    reports.render_temp(ended, summary).encode("utf-8")
    protocol.encode(protocol.summary_to_dict(summary))


def test_token_counts_saturate_so_every_sum_stays_a_64_bit_integer(
    store: Store, tmp_path: Path
) -> None:
    summary = RunSummary()
    for _ in range(10):
        summary.feed_line(_turn(input_tokens=2**62, output_tokens=2**62))
    assert summary.usage["input_tokens"] <= INT64_MAX
    # A report adds input and output; `status --stats` has SQLite SUM every job's counts
    # (SUM raises "integer overflow" past 2**63): many such jobs must still add up.
    assert summary.usage["input_tokens"] * 1_000_000 <= INT64_MAX
    for _ in range(3):
        job = _job(store, tmp_path)
        with store.transaction():
            store.finish(job.id, JobState.SUCCEEDED, ended_at=time.time(), tokens=summary.usage)
    (row,) = store.stats_groups(None, None)
    assert row["input_tokens"] == 3 * summary.usage["input_tokens"]


def test_normal_events_are_still_understood_exactly() -> None:
    summary = RunSummary()
    for line in [
        '{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}',
        _item(id="c1", type="command_execution", command="bash -lc ls", exit_code=0, status="completed"),
        _item(id="f1", type="file_change", changes=[{"path": "a.py", "kind": "add"}]),
        '{"type":"x","deep":' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}",
        _turn(input_tokens=200, cached_input_tokens=0, output_tokens=40, reasoning_output_tokens=3),
        _item(id="m", type="agent_message", text="[[[{{ not brackets \\\" ]]"),
    ]:
        summary.feed_line(line)
    assert summary.thread_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert [(c.command, c.exit_code) for c in summary.commands.values()] == [("bash -lc ls", 0)]
    assert summary.files == {"a.py": "add"}
    assert summary.usage == {"input_tokens": 200, "cached_input_tokens": 0, "output_tokens": 40,
                             "reasoning_output_tokens": 3}
    assert summary.final_message == "[[[{{ not brackets \\\" ]]"
    assert summary.warnings == [] and summary.bad_lines == 0


def test_a_line_over_the_length_cap_is_not_parsed_and_is_noted() -> None:
    summary = RunSummary()
    big = _item(id="m", type="agent_message", text="x" * (MAX_LINE_BYTES + 10))
    summary.feed_line(big)
    summary.feed_line(GOOD_TAIL[0])
    assert summary.final_message == "done"
    assert summary.bad_lines == 1
    assert any("not parsed" in w and str(len(big)) in w for w in summary.warnings)


def test_nesting_check_is_exact_and_ignores_brackets_in_strings() -> None:
    for depth in (MAX_DEPTH - 1, MAX_DEPTH):
        assert not too_deep(("[" * depth + "]" * depth).encode())
        assert not too_deep(('{"a":' * depth + "1" + "}" * depth).encode())
    assert too_deep(("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode())
    assert too_deep(("[" * DEEP).encode())
    inside = json.dumps({"t": "[" * 10_000 + '\\"' + "{" * 10_000, "u": ["\\"]}).encode()
    assert not too_deep(inside)
    escaped = json.dumps(["\\\\\"[[["] * 100).encode()  # quotes and backslashes in strings
    assert not too_deep(escaped)
    assert json.loads(escaped)


def _nested(rng: random.Random, depth: int) -> object:
    """A random JSON value exactly `depth` containers deep, with bracket-laden strings."""
    if depth == 0:
        return rng.choice([1, "[{", '\\"]}', None, "\\", "plain"])
    inner = _nested(rng, depth - 1)
    siblings = [_nested(rng, rng.randint(0, min(depth - 1, 3))) for _ in range(rng.randint(0, 2))]
    if rng.random() < 0.5:
        return [*siblings, inner]
    return {f"k{i}": v for i, v in enumerate([inner, *siblings])}


def test_nesting_check_agrees_with_the_real_depth_of_random_json() -> None:
    rng = random.Random(64)
    for _ in range(300):
        depth = rng.randint(MAX_DEPTH - 3, MAX_DEPTH + 3)
        line = json.dumps(_nested(rng, depth), separators=rng.choice([(",", ":"), (", ", ": ")]))
        assert too_deep(line.encode()) == (depth > MAX_DEPTH), (depth, line[:200])


def test_warnings_commands_files_and_messages_stay_bounded() -> None:
    summary = RunSummary()
    n = 5_000
    for i in range(n):
        summary.feed_line(_item(id=f"e{i}", type="error", message=f"warning {i}"))
        summary.feed_line(_item(id=f"c{i}", type="command_execution", command="x" * 20_000,
                                exit_code=0))
        summary.feed_line(_item(id=f"f{i}", type="file_change",
                                changes=[{"path": f"{i}-" + "p" * 10_000, "kind": "add"}]))
        summary.feed_line(_item(id=f"m{i}", type="agent_message", text=f"message {i}"))
    assert len(summary.warnings) <= 100
    assert summary.warnings[0] == "warning 0"
    assert any(str(n) in w or str(n - 50) in w for w in summary.warnings[-5:]), summary.warnings[-5:]
    assert len(summary.commands) <= 1000
    assert all(len(c.command) <= 10_000 for c in summary.commands.values())
    assert any("commands" in w for w in summary.warnings)
    assert len(summary.files) <= 5_000 and all(len(p) <= 5_000 for p in summary.files)
    assert len(summary.messages) <= 100 and summary.final_message == f"message {n - 1}"
    huge = RunSummary()
    huge.feed_line(_item(id="m", type="agent_message", text="y" * (6 << 20)))
    assert huge.final_message is not None and len(huge.final_message) <= (2 << 20)


# -- the line splitter -----------------------------------------------------------------


def test_splitter_gives_the_same_lines_as_split_for_any_chunking() -> None:
    rng = random.Random(12)
    data = b"".join(
        rng.choice([b"", b"a", b"{}", b"x" * 1000, b"\xff\xfe"]) + b"\n" * rng.randint(0, 2)
        for _ in range(3000)
    ) + b"tail"
    for _ in range(20):
        splitter = LineSplitter(max_line=1 << 20)
        out: list[bytes | Skipped] = []
        i = 0
        while i < len(data):
            step = rng.choice([1, 2, 7, 100, 4096, 70_000])
            out += splitter.feed(data[i : i + step])
            i += step
        out += splitter.close()
        assert out == data.split(b"\n")


def test_splitter_skips_an_oversized_line_and_keeps_its_memory_bounded() -> None:
    splitter = LineSplitter(max_line=1000)
    out = splitter.feed(b"a\n" + b"z" * 600)
    for _ in range(100):
        out += splitter.feed(b"z" * 600)
        assert sum(map(len, splitter._parts)) <= 1000  # nothing kept past the cap
    out += splitter.feed(b"zz\nb\n" + b"q" * 5000)
    out += splitter.close()
    assert out == [b"a", Skipped(600 * 101 + 2), b"b", Skipped(5000)]
    assert splitter.close() == []


def _split_time(chunks: list[bytes]) -> float:
    splitter = LineSplitter(max_line=64 << 20)
    start = time.process_time()
    count = 0
    for chunk in chunks:
        count += len(splitter.feed(chunk))
    count += len(splitter.close())
    assert count >= 1
    return time.process_time() - start


def test_splitter_is_linear_on_one_long_line() -> None:
    """One 48 MiB line (buffered whole: the cap is raised past it) costs about what 48 MiB
    of ordinary lines does. The old `pending += chunk; pending.split()` took ~20 s."""
    size, step = 48 << 20, 64 << 10
    long_line = b"x" * size
    ordinary = (b"y" * 1023 + b"\n") * (size // 1024)
    long_chunks = [long_line[i : i + step] for i in range(0, size, step)]
    ordinary_chunks = [ordinary[i : i + step] for i in range(0, size, step)]
    baseline = min(_split_time(ordinary_chunks) for _ in range(2))
    one_line = min(_split_time(long_chunks) for _ in range(2))
    assert one_line < 3 * baseline + 0.05, (one_line, baseline)


def test_summary_from_log_reads_a_huge_line_in_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "1.jsonl"
    with log.open("wb") as fh:
        fh.write((_line({"type": "thread.started", "thread_id": "th-1"}) + "\n").encode())
        fh.write(b'{"type":"item.completed","item":{"type":"agent_message","text":"')
        fh.write(b"x" * (40 << 20))
        fh.write(b'"}}\n')
        fh.write((GOOD_TAIL[0] + "\n" + GOOD_TAIL[1]).encode())  # the last line has no newline
    spec = JobSpec(task="t", level="low", type="workers", cwd=str(tmp_path), project=str(tmp_path),
                   codex_bin="codex")
    job = Job(id=1, spec=spec, state=JobState.RUNNING, log_path=str(log))
    tracemalloc.start()
    try:
        summary = lifecycle.summary_from_log(job)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_LINE_BYTES + (8 << 20), peak
    assert summary.thread_id == "th-1" and summary.final_message == "done"
    assert summary.usage["input_tokens"] == 5
    assert any("not parsed" in w for w in summary.warnings)


# -- the remote backend: a worker forwards its log in bounded parts, the other side joins them


class _Entries:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def add(self, kind: str, data: str) -> None:
        assert kind == "lines"
        self.sent.append(data)

    def refresh(self) -> None:
        pass


@pytest.mark.skipif(importlib.util.find_spec("redis") is None, reason="redis not installed")
def test_a_long_line_crosses_from_worker_to_submitter_in_bounded_parts(tmp_path: Path) -> None:
    from codexw.backends.celery.remote import RemoteRun
    from codexw.backends.celery.worker import FORWARD_SIZE, StreamSink
    from codexw.core.run import StopRequest

    text = "é" * (3 << 20)  # 6 MiB of two-byte characters: parts must not split one
    log = (_line({"type": "thread.started", "thread_id": "th-9"}) + "\n"
           + json.dumps({"type": "item.completed", "item": {"id": "m", "type": "agent_message",
                                                            "text": text}}, ensure_ascii=False)
           + "\n"
           + _turn(input_tokens=5)).encode()  # the last line is not finished yet
    stream = _Entries()
    worker = StreamSink("task", stream, tmp_path, "node", StopRequest())  # type: ignore[arg-type]
    worker.log_file().write_bytes(log)

    worker.on_progress(RunSummary(), changed=True)  # complete lines, parts ≤ FORWARD_SIZE
    parts = [p.encode() for p in worker.stream.sent]
    assert all(len(p) <= FORWARD_SIZE for p in parts) and len(parts) >= 6
    assert b"".join(parts) == log[: log.rfind(b"\n") + 1]  # no character cut in two
    worker.forward(force=True)  # the end of the run: the unfinished line too
    assert "".join(worker.stream.sent).encode() == log

    submitter = RemoteRun.__new__(RemoteRun)
    submitter.summary = RunSummary()
    submitter.log_fd = os.open(tmp_path / "local.jsonl", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for part in worker.stream.sent:
            submitter.on_lines(part)
    finally:
        os.close(submitter.log_fd)
    submitter.summary.end_of_stream()
    assert (tmp_path / "local.jsonl").read_bytes() == log
    summary = submitter.summary
    assert summary.thread_id == "th-9" and summary.usage["input_tokens"] == 5
    assert (summary.final_message or "").startswith("é" * 1000) and summary.bad_lines == 0


def test_a_worker_summary_is_checked_again_when_it_crosses_the_broker(
    store: Store, tmp_path: Path
) -> None:
    """The broker is a trust boundary: a worker's summary gets the same checks as codex's
    events, so nothing SQLite refuses (or a runaway size) reaches the registry."""
    from codexw.backends.celery.protocol import summary_from_dict

    hostile = {
        "thread_id": {"an": "object"},
        "commands": [{"id": 1, "command": ["rm"], "exit_code": 2**70, "status": None}, 5],
        "files": {"a" * 10_000: 7},
        "messages": ["m" * (3 << 20), 9],
        "warnings": "not a list",
        "usage": {"input_tokens": 2**63, "output_tokens": True, "cached_input_tokens": -5},
        "error": {"nested": [1, 2]},
        "turn_failed": "yes",
        "events": 2**80,
    }
    summary = summary_from_dict(hostile)
    assert summary.thread_id is None and summary.turn_failed is False
    assert summary.usage["input_tokens"] <= 10**12 and summary.usage["output_tokens"] == 0
    assert summary.usage["cached_input_tokens"] == 0
    assert all(run.exit_code is None for run in summary.commands.values())
    assert isinstance(summary.error, str) and summary.warnings == []
    assert all(len(m) <= (1 << 20) for m in summary.messages)
    assert summary_from_dict("not a dict").events == 0
    spec = JobSpec(task="t", level="low", type="workers", cwd=str(tmp_path),
                   project=str(tmp_path), codex_bin="codex")
    with store.transaction():  # what reaches the registry fits it
        job_id = store.insert_job(spec, now=0.0)
        assert store.finish(job_id, JobState.FAILED, ended_at=1.0, tokens=summary.usage,
                            thread_id=summary.thread_id, reason=summary.error)
