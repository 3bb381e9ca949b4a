"""The Celery backend's settings and wire format, and that the local path never imports celery."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from codexw.backends.celery import protocol
from codexw.core.codex import RunSummary
from codexw.core.config import Config, load_config
from codexw.core.errors import ConfigError, UsageError
from codexw.core.models import Job, JobSpec, JobState
from tests.conftest import Env


def test_backend_keys_from_env_file_and_flags(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXW_CONFIG_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text('backend = "celery"\nqueue = "gpu.codex"\n')
    monkeypatch.setenv("CODEXW_BROKER_URL", "redis://h:6379/1")
    cfg = load_config()
    assert (cfg.backend, cfg.broker_url, cfg.queue) == ("celery", "redis://h:6379/1", "gpu.codex")
    assert cfg.sources["broker_url"] == "CODEXW_BROKER_URL"
    cfg = cfg.with_overrides(backend="local", queue="other")
    assert (cfg.backend, cfg.queue) == ("local", "other")
    monkeypatch.delenv("CODEXW_BROKER_URL")
    (tmp_path / "config.toml").write_text("")
    cfg = load_config()
    assert (cfg.backend, cfg.broker_url, cfg.queue) == ("local", None, "codex")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("backend", "k8s", "one of local, celery"),
        ("broker_url", "amqp://guest@h//", "a Redis URL"),
        ("broker_url", "redis://h /0", "a Redis URL"),
        ("queue", "bad queue", "a queue name"),
        ("queue", "-x", "a queue name"),
    ],
)
def test_bad_backend_values_name_the_key(tmp_path, monkeypatch, key, value, expected) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CODEXW_CONFIG_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text(f"{key} = {value!r}\n".replace("'", '"'))
    with pytest.raises(ConfigError) as err:
        load_config()
    assert key in err.value.message and expected in (err.value.hint or "")
    with pytest.raises(UsageError):
        Config().with_overrides(**{key: value})


def test_mask_url_hides_the_password() -> None:
    assert protocol.mask_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert protocol.mask_url("rediss://user:pw@h/0") == "rediss://user:***@h/0"
    assert protocol.mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_payload_and_summary_round_trip() -> None:
    spec = JobSpec(task="t", level="high", type="research", cwd="/p/sub", project="/p",
                   codex_bin="/usr/bin/codex", timeout=60.0, codex_args=("--ephemeral",),
                   backend="celery", broker_url="redis://h/0", queue="codex")
    job = Job(id=7, spec=spec, state=JobState.STARTING, attempt=2)
    payload = protocol.payload_for(job, {"input_tokens": 5})
    assert "broker_url" not in str(payload) and payload["attempt"] == 2
    mine = protocol.spec_from_payload(payload, cwd="/w/sub", project="/w", codex_bin="codex",
                                      codex_home="/auth", timeout=30.0, kill_grace=2.0)
    assert (mine.cwd, mine.codex_home, mine.timeout, mine.level) == ("/w/sub", "/auth", 30.0, "high")
    assert mine.codex_args == ("--ephemeral",) and mine.backend == "local"
    summary = RunSummary()
    for line in [
        '{"type":"thread.started","thread_id":"th"}',
        '{"type":"item.completed","item":{"id":"1","type":"command_execution","command":"ls","exit_code":0}}',
        '{"type":"item.completed","item":{"id":"2","type":"file_change","changes":[{"path":"a.py","kind":"add"}]}}',
        '{"type":"item.completed","item":{"id":"3","type":"agent_message","text":"done"}}',
        '{"type":"turn.completed","usage":{"input_tokens":9,"output_tokens":3}}',
    ]:
        summary.feed_line(line)
    back = protocol.summary_from_dict(protocol.decode(protocol.encode(protocol.summary_to_dict(summary))))
    assert back.thread_id == "th" and back.final_message == "done" and back.files == {"a.py": "add"}
    assert back.commands["1"].command == "ls" and back.commands["1"].exit_code == 0
    assert back.usage["input_tokens"] == 9 and back.events == summary.events


@pytest.mark.skipif(importlib.util.find_spec("celery") is None, reason="celery not installed")
def test_worker_maps_the_job_directory_into_its_workspace(tmp_path) -> None:
    from codexw.backends.celery.worker import _workdir

    (tmp_path / "ws" / "sub").mkdir(parents=True)
    ws = str(tmp_path / "ws")
    assert _workdir("/p/sub", "/p", ws) == (f"{ws}/sub", ws, None)
    assert _workdir("/p/gone", "/p", ws) == (ws, ws, None)
    assert _workdir("/elsewhere", "/p", ws) == (ws, ws, None)
    cwd, _project, problem = _workdir(str(tmp_path / "nope"), str(tmp_path), None)
    assert problem is not None and "--workspace" in problem


def test_help_and_a_local_launch_never_import_celery(cx: Env) -> None:
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('\\nIMPORTED ' + str(sorted("
        "m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'redis')"
        " or (m.startswith('codexw.backends') and m not in ('codexw.backends',"
        " 'codexw.backends.local'))))))\n"
        "from codexw.cli.app import main\n"
        "sys.argv = ['codexw', *sys.argv[1:]]\n"
        "main()\n"
    )
    for args in (["--help"], ["worker", "--help"], ["launch", "--json", "hello"]):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                              text=True, cwd=cx.project, env=cx.env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.rstrip().endswith("IMPORTED []"), (args, proc.stderr)
    assert cx.run("wait", "1").returncode == 0
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, codexw.runner; print(sorted(m for m in sys.modules"
         " if m.split('.')[0] in ('celery', 'kombu', 'typer', 'rich')))"],
        capture_output=True, text=True, env=cx.env, timeout=60,
    )
    assert proc.stdout.strip() == "[]"


def test_worker_prunes_only_its_old_event_logs(tmp_path) -> None:
    import os
    import time

    from codexw.services.worker import LOG_RETENTION, prune_logs

    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text("{}\n")
    new.write_text("{}\n")
    past = time.time() - LOG_RETENTION - 60
    os.utime(old, (past, past))
    assert prune_logs(tmp_path) == 1
    assert not old.exists() and new.exists()
    assert prune_logs(tmp_path / "missing") == 0
