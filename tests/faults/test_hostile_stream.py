"""A hostile codex stdout (issue 12, defects 1 and 11), through real processes: the fake
codex writes the lines verbatim; the job still ends with its true outcome, the raw
lines stay in the event log, the report notes what was not understood, every later
command works, and reading one huge line costs linear time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codexw.core.events import MAX_DEPTH, MAX_LINE_BYTES
from codexw.core.models import TOKEN_KEYS, JobSpec
from codexw.core.run import CodexRun, StopRequest
from codexw.core.store import Store
from codexw.runner import RegistrySink
from tests.conftest import Env

INT64_MAX = 2**63 - 1


def _hostile_stream(ending: str) -> bytes:
    def line(event: object) -> bytes:
        return json.dumps(event).encode() + b"\n"

    deep = 200_000
    parts = [
        line({"type": "turn.completed", "usage": {"input_tokens": 2**63, "output_tokens": 1}}),
        b"[" * deep + b"]" * deep + b"\n",
        b'{"type":"turn.completed","usage":{"x":' + b"[" * deep + b"]" * deep + b"}}\n",
        b'{"type":"turn.completed","usage":[1]}\n',
        line({"type": "item.completed", "item": {"id": "f", "type": "file_change", "changes": 5}}),
        line({"type": "thread.started", "thread_id": {"an": "object"}}),
        b'{"type":"thread.started","thread_id":9223372036854775808}\n',
        b'{"type":"error","message":"bad \\ud800 surrogate"}\n',
        line({"type": "item.completed", "item": {"id": "m", "type": "agent_message",
                                                 "text": "x" * (MAX_LINE_BYTES + 1)}}),
    ]
    if ending == "failed":
        parts.append(line({"type": "turn.failed",
                           "error": {"message": {"code": "E_BAD", "detail": ["x"]}}}))
    return b"".join(parts)


@pytest.mark.parametrize("ending", ["succeeded", "failed"])
def test_hostile_event_lines_are_kept_noted_and_the_job_ends_properly(cx: Env, ending: str) -> None:
    stream = _hostile_stream(ending)
    raw = cx.tmp / "stream.jsonl"
    raw.write_bytes(stream)
    task = f"@fake raw {raw}" + (" ; @fake exit 1" if ending == "failed" else "")
    job_id = cx.launch(task)["job_id"]

    done = cx.run("wait", str(job_id), timeout=120)
    assert done.returncode == (0 if ending == "succeeded" else 1), done.stderr
    assert "Traceback" not in done.stderr
    job = cx.job(job_id)
    assert job["state"] == ending, job
    if ending == "failed":
        assert "E_BAD" in job["reason"]  # the object message, as text
    # Nothing SQLite refuses reached the registry; the fake's own thread id survives.
    row = cx.db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert all(type(row[k]) is int and 0 <= row[k] <= INT64_MAX for k in TOKEN_KEYS)
    assert row["input_tokens"] >= 100  # the fake's good turn.completed counted
    assert isinstance(row["thread_id"], str) and len(row["thread_id"]) == 36
    # The raw lines are kept byte for byte in the event log.
    assert stream in Path(job["log_path"]).read_bytes()
    # The report says what was not understood.
    report = Path(job["report_path"]).read_text()
    assert "## Warnings" in report
    assert f"nested deeper than {MAX_DEPTH} levels" in report
    assert f"over the {MAX_LINE_BYTES} byte limit" in report
    assert "unusable usage (list)" in report and "unusable thread_id (dict)" in report
    # Every later command works, `logs` included: it reads the same hostile lines.
    for args in (["status"], ["status", str(job_id)], ["status", "--json"], ["status", "--stats"],
                 ["logs", str(job_id)], ["logs", "--json", str(job_id)],
                 ["logs", "-f", str(job_id)]):
        proc = cx.run(*args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
    shown = cx.run("logs", str(job_id)).stdout
    assert f"nested deeper than {MAX_DEPTH} levels" in shown and "bytes is not shown" in shown
    raw_out = subprocess.run([sys.executable, "-m", "codexw", "logs", "--raw", str(job_id)],
                             cwd=cx.project, env=cx.env, capture_output=True, timeout=120)
    assert raw_out.returncode == 0 and stream in raw_out.stdout


# -- linear time on one huge line: CodexRun.follow in this process, codex a writer process --

WRITER = """
import os, sys
size, kind = int(sys.argv[1]), sys.argv[2]
if kind == "lines":
    data = (b"y" * 1023 + b"\\n") * (size // 1024)
else:  # one event under the length cap, parsed; then one line over it, skipped
    head = b'{"type":"item.completed","item":{"type":"agent_message","text":"'
    first = head + b"m" * (6 << 20) + b'"}}\\n'
    data = first + b"x" * (size - len(first) - 1) + b"\\n"
view = memoryview(data)
while view:
    view = view[os.write(1, view[: 1 << 16]):]
"""


def _run_cpu(store: Store, project: Path, kind: str, size: int) -> float:
    spec = JobSpec(task="t", level="low", type="workers", cwd=str(project),
                   project=str(project), codex_bin="codex")
    with store.transaction():
        job_id = store.insert_job(spec, now=time.time())
    job = store.get_job(job_id)
    runner = CodexRun(job.spec, RegistrySink(store, job, StopRequest()), dict(os.environ))
    runner.log_fd = os.open(project / f"{job_id}.jsonl", os.O_WRONLY | os.O_CREAT, 0o600)
    runner.codex = subprocess.Popen([sys.executable, "-c", WRITER, str(size), kind],
                                    stdout=subprocess.PIPE, start_new_session=True)
    wake_r, wake_w = os.pipe()
    try:
        start = time.process_time()  # this process: the runner's loop, not the writer
        ending = runner.follow(wake_r)
        spent = time.process_time() - start
    finally:
        for fd in (wake_r, wake_w, runner.log_fd):
            os.close(fd)
    assert ending.state.value == "succeeded"
    assert os.path.getsize(project / f"{job_id}.jsonl") == size  # all of it logged
    if kind == "one-line":
        assert (runner.summary.final_message or "").startswith("m" * 1000)
        assert any("not parsed" in w for w in runner.summary.warnings)
    return spent


def test_one_huge_line_costs_the_runner_linear_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 MiB as one line costs about what 32 MiB of ordinary lines does (the old
    `pending += chunk; pending.split(b"\\n")` took ~10 s on it, quadratic)."""
    monkeypatch.setenv("CODEXW_STATE_DIR", str(tmp_path / "state"))
    project = tmp_path / "p"
    (project / ".git").mkdir(parents=True)
    store = Store.open()
    size = 32 << 20
    baseline = min(_run_cpu(store, project, "lines", size) for _ in range(2))
    one_line = min(_run_cpu(store, project, "one-line", size) for _ in range(2))
    assert one_line < 3 * baseline + 0.1, (one_line, baseline)
