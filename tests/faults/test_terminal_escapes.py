"""Terminal escape sequences from codex or from a task never reach the terminal (issue 12,
defect 4).

An agent message, a command line, a thread id, a failure reason or a task can hold
OSC 52 (write the clipboard), OSC 0 (retitle the window), a clear-screen CSI, a C1 CSI
(U+009B), a bidi override (U+202E) or rich markup. Everything codexw prints for people
goes through one sanitiser (`codexw.cli.render.clean`): each control character is shown
as a visible escape (ESC as `\\x1b`), and rich never reads the text as markup. `--raw`
and `--json` stay exact. Real processes: the fake codex emits the hostile events.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.faults.helpers import one_line_error, run_in_terminal, wait_running

OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"  # clipboard := "rm -rf ~"
OSC0 = "\x1b]0;owned window\x07"
CLEAR = "\x1b[2J\x1b[H"
C1_CSI = "\x9b2J"
BIDI = "\u202e"
MARKUP = "[bold red]markup[/bold red] :warning:"
HOSTILE = f"{OSC52}{OSC0}{CLEAR}{C1_CSI}{BIDI}{MARKUP}"
# What must never appear in people's output: the escape introducers themselves.
FORBIDDEN = ["\x1b]", "\x1b[2J", "\x07", "\x9b", "\u202e"]

MESSAGE = f"all done {HOSTILE} end of message"
COMMAND = f"echo {OSC52} {CLEAR}"
THREAD = f"thread-{OSC0}-{C1_CSI}"
FAILURE = f"quota {OSC52} exceeded {CLEAR}"
TASK_LINE = f"fix the build {OSC0}{CLEAR} {MARKUP}"


def _directive_json(value: object) -> str:
    """JSON for a directive argument: ';' escaped, or the fake would split the line."""
    return json.dumps(value).replace(";", "\\u003b")


def _item(item: dict) -> str:
    return "@fake emit " + _directive_json({"type": "item.completed", "item": item})


def hostile_task(*extra: str) -> str:
    return "\n".join([
        TASK_LINE,
        f"@fake thread {_directive_json(THREAD)}",
        _item({"id": "c1", "type": "command_execution", "command": COMMAND,
               "aggregated_output": "", "exit_code": 0, "status": "completed"}),
        _item({"id": "m1", "type": "agent_message", "text": MESSAGE}),
        _item({"id": "e1", "type": "error", "message": FAILURE}),
        *extra,
    ])


def failing_task() -> str:
    failed = {"type": "turn.failed", "error": {"message": FAILURE}}
    return hostile_task("@fake emit " + _directive_json({"type": "error", "message": FAILURE}),
                        "@fake emit " + _directive_json(failed), "@fake exit 1")


def _clean(out: str, what: str) -> None:
    for seq in FORBIDDEN:
        assert seq not in out, f"{what} printed {seq!r}:\n{out!r}"


def _run_bytes(cx: Env, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "codexw", *args], capture_output=True,
                          cwd=cx.project, env=cx.env, timeout=120)


def _recorded(cx: Env) -> int:
    """A failed job written straight into the registry with a hostile thread id, reason
    and last action: what an older codexw (or a remote worker) may have recorded. The
    runner of today keeps only well-formed thread ids, so rendering must not rely on it."""
    import time

    from codexw.core.models import JobSpec, JobState
    from codexw.core.store import Store

    store = Store.open()
    with store.transaction():
        spec = JobSpec(task=TASK_LINE, level="low", type="workers", cwd=str(cx.project),
                       project=str(cx.project), codex_bin="codex")
        job_id = store.insert_job(spec, now=time.time())
        store.finish(job_id, JobState.FAILED, ended_at=time.time(), thread_id=THREAD,
                     reason=FAILURE, last_action=COMMAND)
    store.close()
    return job_id


@pytest.fixture
def ended(cx: Env) -> dict:
    """Job 1 succeeded after hostile output; job 2 failed with a hostile reason."""
    assert cx.run("launch", "--", hostile_task()).returncode == 0
    assert cx.run("launch", "--", failing_task()).returncode == 0
    cx.run("wait", "1", "2")
    return {"ok": cx.job(1), "failed": cx.job(2)}


def test_logs_show_agent_messages_and_commands_with_escapes_made_visible(
    cx: Env, ended: dict
) -> None:
    for args in (("logs", "1"), ("logs", "-f", "1"), ("logs", "2")):
        proc = cx.run(*args)
        assert proc.returncode == 0, proc.stderr
        _clean(proc.stdout + proc.stderr, " ".join(args))
        if args[-1] == "1":
            assert "all done \\x1b]52\\x3bc" not in proc.stdout  # ';' is no control character
            assert "all done \\x1b]52;c;cm0gLXJmIH4K\\x07\\x1b]0;owned window\\x07" in proc.stdout
            assert "\\x1b[2J\\x1b[H\\x9b2J\\u202e[bold red]markup[/bold red] :warning:" in proc.stdout
            assert "$ echo \\x1b]52;c;" in proc.stdout
            assert "session thread-\\x1b]0;owned window\\x07-\\x9b2J" in proc.stdout


def test_status_table_and_detail_and_wait_show_escapes_visibly(cx: Env, ended: dict) -> None:
    old = _recorded(cx)
    for args in (("status",), ("status", "1"), ("status", "2"), ("status", str(old)),
                 ("wait", "1", "2", str(old)), ("status", "--all")):
        proc = cx.run(*args)
        _clean(proc.stdout + proc.stderr, " ".join(args))
    detail = cx.run("status", "2").stdout
    assert "quota \\x1b]52;c;cm0gLXJmIH4K\\x07 exceeded" in detail, detail
    assert "fix the build \\x1b]0;owned window\\x07" in cx.run("status").stdout
    detail = cx.run("status", str(old)).stdout
    assert "thread-\\x1b]0;owned window\\x07-\\x9b2J" in detail, detail
    assert "echo \\x1b]52;c;cm0gLXJmIH4K\\x07 \\x1b[2J" in detail, detail  # last action
    waited = cx.run("wait", "2")
    assert waited.returncode == 1 and "quota \\x1b]52;c;" in waited.stdout


def test_raw_and_json_stay_exact(cx: Env, ended: dict) -> None:
    log = Path(ended["ok"]["log_path"])
    with open(log, "ab") as fh:  # a line codex wrote that is not even UTF-8
        fh.write(b"not json \xff\xfe \x1b]0;t\x07 \xc2\x9b end\n")
    raw = _run_bytes(cx, "logs", "--raw", "1")
    assert raw.returncode == 0
    assert raw.stdout == log.read_bytes()  # byte for byte, as codex wrote it
    entries = [json.loads(line) for line in cx.ok("logs", "--json", "1").stdout.splitlines()]
    assert {"kind": "message", "text": MESSAGE} in [
        {k: e[k] for k in ("kind", "text")} for e in entries]
    assert any(e["text"] == COMMAND for e in entries)
    _clean(cx.ok("logs", "--json", "1").stdout, "logs --json")  # JSON escapes them itself
    assert json.loads(cx.ok("status", "--json", "1").stdout)["job"]["task"].startswith(TASK_LINE)
    old = _recorded(cx)
    job = json.loads(cx.ok("status", "--json", str(old)).stdout)["job"]
    assert (job["thread_id"], job["reason"], job["last_action"]) == (THREAD, FAILURE, COMMAND)
    waited = json.loads(cx.run("wait", "--json", "2").stdout)
    assert FAILURE in waited["jobs"][0]["reason"]  # the reason quotes codex exactly


def test_batch_kill_continue_and_retry_output_is_clean(cx: Env) -> None:
    gate = cx.tmp / "gate"
    tasks = cx.tmp / "tasks.jsonl"
    tasks.write_text(json.dumps({"task": hostile_task()}) + "\n"
                     + json.dumps({"task": failing_task()}) + "\n")
    batch = cx.run("batch", str(tasks), "-j", "2")
    assert batch.returncode == 1, batch.stderr  # the second one failed
    _clean(batch.stdout + batch.stderr, "batch")
    assert "fix the build \\x1b]0;owned window\\x07" in batch.stdout
    assert "quota \\x1b]52;c;" in batch.stdout

    old = _recorded(cx)
    follow_up = cx.run("continue", str(old), f"and now {OSC0} more")
    assert follow_up.returncode == 0, follow_up.stderr
    _clean(follow_up.stdout + follow_up.stderr, "continue")
    assert "(thread thread-\\x1b]0;owned window\\x07-\\x9b2J)" in follow_up.stdout

    retried = cx.run("retry", "2")
    _clean(retried.stdout + retried.stderr, "retry")

    cx.ok("launch", "--", f"{TASK_LINE}\n@fake wait-for {gate}")
    running = max(j["id"] for j in json.loads(cx.ok("status", "--json", "--all").stdout)["jobs"])
    wait_running(cx, running)
    killed = cx.run("kill", str(running))
    _clean(killed.stdout + killed.stderr, "kill")
    cx.run("wait", "--batch", "1")
    for job in json.loads(cx.ok("status", "--json", "--all").stdout)["jobs"]:
        cx.run("wait", str(job["id"]))  # the follow-up and the retry too


def test_error_messages_quoting_a_path_or_task_are_one_clean_line(cx: Env) -> None:
    for args in (("launch", "-f", str(cx.tmp / f"missing{OSC0}.md")),
                 ("batch", str(cx.tmp / f"tasks{CLEAR}.txt")),
                 ("launch", "--cd", str(cx.tmp / f"no{OSC52}dir"), "x")):
        proc = cx.run(*args)
        assert proc.returncode == 2
        line = one_line_error(proc)
        _clean(line, args[0])
        assert "\\x1b" in line  # shown, so the user sees what the name really is


def test_rich_rendering_on_a_terminal_never_reads_markup_or_passes_escapes(
    cx: Env, ended: dict
) -> None:
    for args in (("logs", "1"), ("status",), ("status", "1")):
        out = run_in_terminal(cx, *args)
        for seq in ("\x1b]", "\x1b[2J", "\x07", "\x9b", "\u202e"):
            assert seq not in out, f"{args} put {seq!r} on the terminal: {out!r}"
        if args == ("logs", "1"):
            # shown as text, not turned into bold red, and :warning: not into an emoji
            assert "[bold red]markup[/bold red] :warning:" in out, out
    cx.launch(f"{MARKUP} first")  # at the start of the task: the table shows 50 characters
    assert cx.run("wait", "3").returncode == 0
    assert f"{MARKUP} first" in run_in_terminal(cx, "status")


def test_doctor_and_trust_show_what_they_quote_with_escapes_made_visible(cx: Env) -> None:
    # doctor quotes codex's own output (its version); trust quotes a project's values.
    liar = cx.bin_dir / "codex-liar"
    liar.write_text(f"#!/bin/sh\nprintf 'codex-cli 0.169.0 {OSC52}{CLEAR}\\n'\n")
    liar.chmod(0o755)
    (cx.project / ".codexw").mkdir(exist_ok=True)
    toml_escaped = OSC0.replace("\x1b", "\\u001b").replace("\x07", "\\u0007")
    (cx.project / ".codexw" / "config.toml").write_text(f'codex_args = ["-c", "x={toml_escaped}"]\n')
    doctor = cx.run("doctor", env={"CODEXW_CODEX_BIN": str(liar)})
    _clean(doctor.stdout + doctor.stderr, "doctor")
    trust = cx.run("trust")
    assert trust.returncode == 0, trust.stderr
    _clean(trust.stdout + trust.stderr, "trust")
    assert "\\x1b" in trust.stdout
