from __future__ import annotations

from pathlib import Path

from codexw.core.codex import RunSummary, build_argv, build_prompt, is_transient
from codexw.core.models import JobSpec


def _spec(tmp_path: Path, **kw) -> JobSpec:  # type: ignore[no-untyped-def]
    (tmp_path / ".git").mkdir(exist_ok=True)
    return JobSpec(task="t", level="high", type="workers", cwd=str(tmp_path), project=str(tmp_path),
                   codex_bin="/bin/codex", **kw)


def test_argv_has_level_approval_sandbox_and_reads_stdin(tmp_path: Path) -> None:
    argv = build_argv(_spec(tmp_path, model="m1"))
    assert argv[:3] == ["/bin/codex", "exec", "--json"]
    assert 'model_reasoning_effort="high"' in argv and 'approval_policy="never"' in argv
    assert argv[argv.index("-s") + 1] == "workspace-write"
    assert argv[argv.index("-m") + 1] == "m1"
    assert argv[-1] == "-" and "t" not in argv
    assert "--skip-git-repo-check" not in argv


def test_outside_git_repo_skips_the_check(tmp_path: Path) -> None:
    spec = JobSpec(task="t", level="low", type="workers", cwd=str(tmp_path), project=str(tmp_path),
                   codex_bin="codex")
    if not any((p / ".git").exists() for p in (tmp_path, *tmp_path.parents)):
        assert "--skip-git-repo-check" in build_argv(spec)


def test_prompt_asks_for_report_sections() -> None:
    prompt = build_prompt("do it")
    assert prompt.startswith("do it")
    for section in ("Task Summary", "Files Modified", "Changes Made", "Issues Encountered", "Next Steps"):
        assert section in prompt


def test_summary_folds_events_and_sums_usage() -> None:
    s = RunSummary()
    lines = [
        '{"type":"thread.started","thread_id":"abc"}',
        '{"type":"item.started","item":{"id":"i1","type":"command_execution","command":"ls","exit_code":null,"status":"in_progress"}}',
        '{"type":"item.completed","item":{"id":"i1","type":"command_execution","command":"ls","exit_code":2,"status":"failed"}}',
        '{"type":"item.completed","item":{"id":"i2","type":"file_change","changes":[{"path":"a.py","kind":"update"}]}}',
        '{"type":"turn.completed","usage":{"input_tokens":200,"cached_input_tokens":5,"output_tokens":40,"reasoning_output_tokens":7}}',
        '{"type":"item.completed","item":{"id":"e","type":"error","message":"Model metadata for `X` not found"}}',
        '{"type":"something.new","x":1}',
        "not json",
        '{"type":"item.completed","item":{"id":"i3","type":"agent_message","text":"final words"}}',
        '{"type":"turn.completed","usage":{"input_tokens":100,"output_tokens":10}}',
    ]
    for line in lines:
        s.feed_line(line)
    assert s.thread_id == "abc"
    assert [(c.command, c.exit_code) for c in s.commands.values()] == [("ls", 2)]
    assert s.files == {"a.py": "update"}
    assert s.usage == {"input_tokens": 300, "cached_input_tokens": 5, "output_tokens": 50,
                       "reasoning_output_tokens": 7}
    assert s.final_message == "final words"
    assert s.warnings == ["Model metadata for `X` not found"]
    assert not s.turn_failed and s.error is None
    assert s.bad_lines == 1


def test_failure_events() -> None:
    s = RunSummary()
    s.feed_line('{"type":"error","message":"exceeded retry limit, last status: 429 Too Many Requests"}')
    s.feed_line('{"type":"turn.failed","error":{"message":"exceeded retry limit, last status: 429 Too Many Requests"}}')
    assert s.turn_failed and "429" in (s.error or "")


def test_transient_classification() -> None:
    assert is_transient("exceeded retry limit, last status: 429 Too Many Requests")
    assert is_transient("We're currently experiencing high demand, which may cause temporary errors.")
    assert is_transient("stream disconnected before completion")
    assert not is_transient("unexpected status 401 Unauthorized: invalid api key")
    assert not is_transient(None)
