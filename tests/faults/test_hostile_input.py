"""Hostile and odd input: shell metacharacters, NUL bytes, bad UTF-8, a megabyte of
text, empty tasks, path-like type names, levels in the wrong case, planted symlinks,
secrets in the environment, and the permissions of what codexw writes."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Env, wait_until
from tests.faults.helpers import one_line_error, wait_running


def _nothing_recorded(cx: Env) -> None:
    db = cx.state / "codexw.db"
    if db.exists():
        assert cx.db().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert not (cx.project / ".codexw").exists() or not list((cx.project / ".codexw").rglob("*.md"))


# -- task text ------------------------------------------------------------------------

HOSTILE = {
    "command-substitution": "fix it $(touch {pwned}) now",
    "backticks": "fix it `touch {pwned}` now",
    "quotes": "it's \"quoted\" 'twice' \\' \\\" unbalanced ' \"",
    "semicolon-rm": "; rm -rf {victim} ; echo done && touch {pwned} | cat",
    "leading-dash": "-rf / --help --version",
    "template-syntax": "{{{{ job.id }}}} {{% for x in range(3) %}}X{{% endfor %}} {{# c #}}",
    "env-and-glob": "$HOME ${{PATH}} * ?[a] ~ !! %s %n",
    "control-chars": "bell\a esc\x1b[31mred\x1b[0m cr\r tab\t",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_task_text_reaches_codex_verbatim_on_stdin_never_a_shell(cx: Env, name: str) -> None:
    pwned = cx.tmp / "pwned"
    victim = cx.tmp / "victim"
    victim.mkdir()
    task = HOSTILE[name].format(pwned=pwned, victim=victim)
    info = json.loads(cx.ok("launch", "--json", "--", task).stdout)
    assert cx.run("wait", str(info["job_id"])).returncode == 0
    (run,) = cx.fake_runs()
    assert run["prompt"].startswith(task + "\n")  # byte for byte, then codexw's suffix
    assert run["argv"][-1] == "-" and task not in run["argv"]
    assert not pwned.exists() and victim.is_dir()
    job = cx.job(info["job_id"])
    assert job["task"] == task
    report = Path(job["report_path"]).read_bytes()
    assert task.strip().encode() in report  # rendered as data, never as a template


@pytest.mark.parametrize("task", ["-x", "--no-such-flag task", "-rf /", "-p five"])
def test_task_with_a_leading_dash_needs_a_double_dash_and_is_never_half_parsed(
    cx: Env, task: str
) -> None:
    proc = cx.run("launch", task)
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stderr
    _nothing_recorded(cx)


@pytest.mark.parametrize("how", ["stdin", "file", "batch-jsonl"])
def test_nul_byte_in_task_is_refused(cx: Env, how: str) -> None:
    task = "before\x00after"
    if how == "stdin":
        proc = cx.run("launch", "-f", "-", input=task)
    elif how == "file":
        path = cx.tmp / "task.md"
        path.write_text(task)
        proc = cx.run("launch", "-f", str(path))
    else:
        path = cx.tmp / "tasks.jsonl"
        path.write_text(json.dumps({"task": task}) + "\n")
        proc = cx.run("batch", str(path))
    assert proc.returncode == 2
    assert "NUL" in one_line_error(proc)
    _nothing_recorded(cx)


@pytest.mark.parametrize("how", ["task-file", "stdin", "batch-file"])
def test_invalid_utf8_task_is_refused_with_the_byte_offset(cx: Env, how: str) -> None:
    data = "héllo ".encode() + b"\xff\xfe broken"
    path = cx.tmp / "task.md"
    path.write_bytes(data)
    if how == "task-file":
        proc = cx.run("launch", "-f", str(path))
    elif how == "stdin":
        proc = cx.run("launch", "-f", "-", input=data)
    else:
        proc = cx.run("batch", str(path))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "not valid UTF-8 (byte 7)" in line and "UTF-8" in line
    _nothing_recorded(cx)


@pytest.mark.slow
def test_one_megabyte_task_is_handed_over_whole(cx: Env) -> None:
    line = "0123456789abcdef" * 4 + "\n"
    task = "@fake sleep 0\n" + line * (1_048_576 // len(line))
    path = cx.tmp / "big.md"
    path.write_text(task)
    cx.ok("launch", "-f", str(path))
    assert cx.run("wait", "1", timeout=120).returncode == 0
    (run,) = cx.fake_runs()
    assert run["prompt"].startswith(task) and len(run["prompt"]) > 1_048_576
    assert all(len(arg) < 4096 for arg in run["argv"])  # never on the command line
    assert cx.db().execute("SELECT task FROM jobs WHERE id = 1").fetchone()[0] == task
    assert len(cx.ok("status").stdout.splitlines()) == 2  # the table shows the first line only
    assert Path(cx.job(1)["report_path"]).stat().st_size > 1_000_000


@pytest.mark.parametrize(
    "args",
    [("launch", ""), ("launch", "   \n\t  "), ("launch", "-f", "EMPTY"), ("launch", "-f", "-"),
     ("launch",), ("launch", "high", "")],
    ids=["empty", "blank", "empty-file", "empty-stdin", "no-task", "level-then-empty"],
)
def test_empty_task_is_refused(cx: Env, args: tuple[str, ...]) -> None:
    empty = cx.tmp / "empty.md"
    empty.write_text("")
    args = tuple(str(empty) if a == "EMPTY" else a for a in args)
    proc = cx.run(*args, input="")
    assert proc.returncode == 2
    assert "task" in one_line_error(proc)
    _nothing_recorded(cx)


# -- type names and levels ------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../x", "a/b", ".", "..", "/etc", "A", "a" * 33, "-x", "a b", "ä", "x\n", "", "_x"],
)
def test_type_name_that_could_escape_or_is_too_long_is_refused(cx: Env, name: str) -> None:
    for args in (("launch", "--type", name, "task"), ("launch", "low", name, "task")):
        proc = cx.run(*args)
        assert proc.returncode == 2, (args, proc.stdout)
        if name.startswith("-") and args[1] == "low":
            # the option parser refuses it first, in one line with the `--` hint
            assert "no such option: -x" in proc.stderr and "`--`" in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1
        else:
            assert "invalid type name" in one_line_error(proc)
    _nothing_recorded(cx)
    assert os.listdir(cx.project) == [".git"]  # no folder made anywhere, .codexw included


def test_type_name_of_exactly_32_characters_is_accepted(cx: Env) -> None:
    name = "a" * 31 + "9"
    info = cx.launch("task", "--type", name)
    assert cx.run("wait", str(info["job_id"])).returncode == 0
    assert Path(cx.job(info["job_id"])["report_path"]).parent == cx.project / ".codexw" / name


@pytest.mark.parametrize(
    "args",
    [("--level", "HIGH"), ("--level", "High"), ("--level", "bogus"), ("--level", ""),
     ("HIGH",), ("Low",)],
    ids=["flag-upper", "flag-title", "flag-unknown", "flag-empty", "positional-upper",
         "positional-title"],
)
def test_level_in_the_wrong_case_or_unknown_is_refused_never_passed_to_codex(
    cx: Env, args: tuple[str, ...]
) -> None:
    proc = cx.run("launch", *args, "task")
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "level" in line and "minimal, low, medium, high, xhigh" in line
    _nothing_recorded(cx)
    assert not cx.fake_runs()


# -- planted symlinks -----------------------------------------------------------------


@pytest.mark.slow
def test_symlink_planted_at_a_report_path_is_never_followed(cx: Env) -> None:
    victim = cx.tmp / "victim.txt"
    victim.write_text("precious\n")
    folder = cx.project / ".codexw" / "workers"
    folder.mkdir(parents=True)
    # Someone predicts job 1's TEMP name for every second of the next minute...
    now = time.time()
    planted = []
    for ahead in range(-2, 60):
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(now + ahead))
        link = folder / f"{stamp}_TEMP_1_codex_task.md"
        link.symlink_to(victim)
        planted.append(link)
    gate = cx.tmp / "gate"
    info = cx.launch(f"@fake wait-for {gate}")
    job = wait_running(cx, 1)
    temp = Path(info["report_path"])
    # Never followed: the taken name is left alone, the TEMP report gets one of its own.
    assert temp.is_file() and not temp.is_symlink() and temp not in planted
    assert "_TEMP_1." in temp.name
    # ...and, once the runner PID is known, its final name.
    final_name = f"{temp.name[:15]}_{job['runner_pid']}_codex_task.md"
    final_link = folder / final_name
    final_link.symlink_to(victim)
    gate.touch()
    assert cx.run("wait", "1").returncode == 0
    report = Path(cx.job(1)["report_path"])
    assert report.is_file() and not report.is_symlink()
    assert report.name == final_name.replace("_codex_task.md", "_2_codex_task.md")
    assert victim.read_text() == "precious\n"
    assert final_link.is_symlink() and os.readlink(final_link) == str(victim)
    assert all(p.is_symlink() for p in planted if p != temp)


# -- secrets --------------------------------------------------------------------------

SECRETS = {
    "OPENAI_API_KEY": "sk-codexw-test-OPENAI-5f0b8c1d2e",
    "CODEX_API_KEY": "codexw-test-CODEX-9a8b7c6d",
    "AZURE_OPENAI_API_KEY": "codexw-test-AZURE-13572468",
    "GITHUB_TOKEN": "ghp_codexwTestToken0123456789",
    "AWS_SECRET_ACCESS_KEY": "codexw/test/AWS/SECRET+key",
}


def _everything_written(root: Path) -> bytes:
    data = b""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            raw = path.read_bytes()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
            data += raw
    return data


@pytest.mark.slow
def test_environment_secrets_are_never_written_anywhere(cx: Env) -> None:
    env = dict(SECRETS)
    outputs = []

    def run(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
        proc = cx.run(*args, env=env, **kw)
        outputs.append(proc.stdout + proc.stderr)
        return proc

    gate = cx.tmp / "gate"
    run("launch", "--json", "--retries", "1", f"@fake wait-for {gate}\nfirst")
    job = wait_running(cx, 1)
    codex_env = Path(f"/proc/{job['codex_pgid']}/environ").read_bytes()
    assert SECRETS["OPENAI_API_KEY"].encode() in codex_env  # codex does get its key...
    run("status", "--json", "1")  # with the process tree
    run("launch", "--json", "@fake crash")
    run("launch", "--json", "@fake fail 500")
    run("batch", "-", "--json", "-j", "2", input="@fake write made.txt\nplain task\n")
    run("kill", "--json", "1")
    run("retry", "--json", "1")
    gate.touch()
    for args in (("wait", "--json", "1", "2", "3"), ("logs", "--json", "2"), ("logs", "--raw", "3"),
                 ("status", "--json", "--all"), ("status", "--stats", "--json")):
        run(*args, timeout=120)
    # The launch environments (0600, for whoever starts a queued job) go once every
    # job has ended; from then on nothing in the state dir may hold a secret.
    def all_ended() -> bool:
        jobs = json.loads(cx.ok("status", "--json", "--all").stdout)["jobs"]
        return all(j["state"] not in ("queued", "starting", "running") for j in jobs)

    wait_until(all_ended, timeout=120, what="every job to end")
    env_dir = cx.state / "env"
    wait_until(lambda: not any(env_dir.glob("*.json")), what="launch environments removed")
    written = _everything_written(cx.state) + _everything_written(cx.project / ".codexw")
    for name, value in SECRETS.items():  # ...but codexw never writes it down
        assert value.encode() not in written, f"{name} was written to the state dir or a report"
        for out in outputs:
            assert value not in out, f"{name} appeared in codexw's output"


# -- permissions ----------------------------------------------------------------------


def _run_with_umask(cx: Env, mask: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexw", *args], cwd=cx.project, env=cx.env,
        capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(mask),
    )


@pytest.mark.slow
def test_state_dir_is_0700_and_its_files_0600_even_with_umask_0(cx: Env) -> None:
    gate = cx.tmp / "gate"
    assert _run_with_umask(cx, 0, "launch", f"@fake wait-for {gate}").returncode == 0
    wait_running(cx, 1)
    waiter = subprocess.Popen([sys.executable, "-m", "codexw", "wait", "1"], cwd=cx.project,
                              env=cx.env, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0))
    notify = cx.state / "notify"
    wait_until(lambda: notify.is_dir() and any(p.is_fifo() for p in notify.iterdir()),
               what="wait's notify FIFO")
    seen = {"db": False, "wal": False, "shm": False, "log": False, "fifo": False}
    assert stat.S_IMODE(cx.state.stat().st_mode) == 0o700
    for path in [cx.state, *cx.state.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode == 0o700, f"{path} is {oct(mode)}"
        else:
            assert mode == 0o600, f"{path} is {oct(mode)}"
        seen["db"] |= path.name == "codexw.db"
        seen["wal"] |= path.name == "codexw.db-wal"
        seen["shm"] |= path.name == "codexw.db-shm"
        seen["log"] |= path.name == "1.jsonl"
        seen["fifo"] |= path.is_fifo()
    assert all(seen.values()), seen
    gate.touch()
    assert waiter.wait(timeout=120) == 0


@pytest.mark.slow
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_reports_follow_the_users_umask(cx: Env, mask: int, mode: int) -> None:
    gate = cx.tmp / "gate"
    out = _run_with_umask(cx, mask, "launch", "--json", f"@fake wait-for {gate}")
    temp = Path(json.loads(out.stdout)["report_path"])
    assert stat.S_IMODE(temp.stat().st_mode) == mode
    gate.touch()
    assert cx.run("wait", "1").returncode == 0
    final = Path(cx.job(1)["report_path"])
    assert stat.S_IMODE(final.stat().st_mode) == mode


# -- numbers past SQLite's INTEGER, NUL bytes in what becomes argv, deep batch chains ----
# Each used to crash (OverflowError, RecursionError: exit 1 and a traceback) or to be
# recorded and then kill the runner at exec (a NUL byte), so the job went `lost` and was
# retried. core.validate refuses all of them before anything is recorded.

HUGE = "99999999999999999999"
PAST_INT64 = str(2**63)


def _registry_untouched(cx: Env) -> None:
    _nothing_recorded(cx)
    db = cx.state / "codexw.db"
    if db.exists():
        assert cx.db().execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
    assert not cx.fake_runs(), "codex was started"


def _dependents_first_chain(n: int, cycle: bool) -> str:
    """n JSONL tasks, each after the next one: the last listed must run first."""
    lines = []
    for i in range(n):
        after = [f"t{i + 1}"] if i + 1 < n else (["t0"] if cycle else [])
        lines.append(json.dumps({"task": f"step {i}", "name": f"t{i}", "after": after}))
    return "\n".join(lines) + "\n"


BAD_NUMBERS = {
    "batch-j-past-int64": ("batch", "-j", PAST_INT64, "TASKS"),
    "batch-j-over-10000": ("batch", "-j", "10001", "TASKS"),
    "launch-priority-huge": ("launch", "--priority", HUGE, "x"),
    "launch-priority-past-int32": ("launch", "--priority", str(2**31), "x"),
    "launch-retries-huge": ("launch", "--retries", HUGE, "x"),
    "launch-retries-over-100": ("launch", "--retries", "101", "x"),
    "launch-after-huge": ("launch", "--after", HUGE, "x"),
    "launch-timeout-huge": ("launch", "--timeout", HUGE + "d", "x"),
    "batch-retries-huge": ("batch", "--retries", HUGE, "TASKS"),
    "continue-retries-huge": ("continue", "1", "more", "--retries", HUGE),
    "status-id": ("status", PAST_INT64),
    "status-latest": ("status", "-n", HUGE),
    "wait-id": ("wait", PAST_INT64),
    "wait-batch": ("wait", "--batch", PAST_INT64),
    "logs-id": ("logs", PAST_INT64),
    "kill-id": ("kill", PAST_INT64),
    "retry-id": ("retry", PAST_INT64),
    "continue-id": ("continue", PAST_INT64, "more"),
}


@pytest.mark.parametrize("name", list(BAD_NUMBERS))
def test_numbers_past_what_the_registry_holds_are_refused_in_one_line(cx: Env, name: str) -> None:
    tasks = cx.tmp / "tasks.txt"
    tasks.write_text("a\nb\n")
    args = [str(tasks) if a == "TASKS" else a for a in BAD_NUMBERS[name]]
    proc = cx.run(*args)
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    line = one_line_error(proc)
    assert "OverflowError" not in line and "range" in line, line
    _registry_untouched(cx)


BAD_TEXT = {
    # where the NUL byte (or undecodable byte) comes from → (files to write, argv)
    "user-config-model": ({"USER": 'model = "gpt\\u0000x"\n'}, ("launch", "x")),
    "project-config-model": ({"PROJECT": 'model = "gpt\\u0000x"\n'}, ("launch", "x")),
    "user-config-codex-args": ({"USER": 'codex_args = ["-c", "a=\\u0000"]\n'}, ("launch", "x")),
    "user-config-codex-bin": ({"USER": 'codex_bin = "co\\u0000dex"\n'}, ("launch", "x")),
    "user-config-templates-dir": ({"USER": 'templates_dir = "/t\\u0000"\n'}, ("launch", "x")),
    "config-for-a-batch": ({"USER": 'model = "gpt\\u0000x"\n'}, ("batch", "-", "--detach")),
    "batch-jsonl-model": ({"tasks.jsonl": '{"task": "x", "model": "gpt\\u0000x"}\n'},
                          ("batch", "TASKS", "--detach")),
    "batch-toml-model": ({"tasks.toml": '[[task]]\ntask = "x"\nmodel = "gpt\\u0000x"\n'},
                         ("batch", "TASKS", "--detach")),
    "batch-toml-priority": ({"tasks.toml": f'[[task]]\ntask = "x"\npriority = {HUGE}\n'},
                            ("batch", "TASKS", "--detach")),
    "batch-jsonl-retries": ({"tasks.jsonl": f'{{"task": "x", "retries": {HUGE}}}\n'},
                            ("batch", "TASKS", "--detach")),
    "config-timeout-inf": ({"USER": "timeout = inf\n"}, ("launch", "x")),
    "config-max-parallel": ({"USER": f"max_parallel = {HUGE}\n"}, ("launch", "x")),
    "flag-model-bad-utf8": ({}, ("launch", "--model", "gpt\udcff", "x")),
    "flag-codex-arg-bad-utf8": ({}, ("launch", "--codex-arg", "\udcff", "x")),
    "task-bad-utf8-argv": ({}, ("launch", "fix \udcff")),
}


@pytest.mark.parametrize("name", list(BAD_TEXT))
def test_nul_bytes_and_bad_values_from_config_and_batch_files_are_refused_before_recording(
    cx: Env, name: str
) -> None:
    files, argv = BAD_TEXT[name]
    user_config = cx.tmp / "config" / "config.toml"
    where = None
    for target, content in files.items():
        if target == "USER":
            path = user_config
            content = user_config.read_text() + content
        elif target == "PROJECT":
            path = cx.project / ".codexw" / "config.toml"
            path.parent.mkdir(exist_ok=True)
        else:
            path = cx.tmp / target
        path.write_text(content)
        where = path
    args = [str(where) if a == "TASKS" else a for a in argv]
    proc = cx.run(*args, input="a\nb\n")
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    line = one_line_error(proc)
    if where is not None:
        assert str(where) in line, line  # names the file the value came from
    _registry_untouched(cx)


@pytest.mark.parametrize("back_to", [0, 600], ids=["whole-chain", "second-half"])
def test_1200_task_batch_listed_dependents_first_is_checked_without_recursion(
    cx: Env, back_to: int
) -> None:
    # The last listed task (the chain's first to run) waits for task `back_to`: a cycle
    # found only after walking the chain 1200 (or 600) deep.
    text = _dependents_first_chain(1200, cycle=False).replace(
        '"after": []', f'"after": ["t{back_to}"]')
    path = cx.tmp / "chain.jsonl"
    path.write_text(text)
    proc = cx.run("batch", str(path), "--detach")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert "RecursionError" not in line
    assert f"dependency cycle t{back_to} → t{back_to + 1} → " in line, line
    assert f"({1200 - back_to} tasks)" in line, line
    _registry_untouched(cx)


def _recorded_job(cx: Env, **spec_fields: object) -> int:
    """A finished job written straight into the registry, as a codexw without today's
    checks (or codex itself, for the thread id) could have left it."""
    from codexw.core.models import JobSpec, JobState
    from codexw.core.store import Store

    thread_id = spec_fields.pop("thread_id", None)
    store = Store.open()
    with store.transaction():
        spec = JobSpec(task="old task", level="low", type="workers", cwd=str(cx.project),
                       project=str(cx.project), codex_bin="codex", **spec_fields)  # type: ignore[arg-type]
        job_id = store.insert_job(spec, now=time.time())
        store.finish(job_id, JobState.FAILED, ended_at=time.time(), thread_id=thread_id)
    store.close()
    return job_id


@pytest.mark.parametrize(
    ("fields", "argv"),
    [({"model": "gpt\x00x"}, ("retry", "1")),
     ({"codex_args": ("-c", "a=\x00")}, ("retry", "1")),
     ({"thread_id": "thread\x00x"}, ("continue", "1", "more"))],
    ids=["retry-model", "retry-codex-args", "continue-thread-id"],
)
def test_retry_and_continue_of_a_row_with_a_nul_byte_are_refused(
    cx: Env, fields: dict, argv: tuple[str, ...]
) -> None:
    _recorded_job(cx, **fields)
    proc = cx.run(*argv)
    assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
    assert "NUL" in one_line_error(proc)
    assert cx.db().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1  # nothing queued
    assert not cx.fake_runs()
