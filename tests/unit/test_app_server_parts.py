"""The app-server backend's pure parts: events translated to exec's, codex's trust write
undone (and only that), the version gate."""

from __future__ import annotations

from pathlib import Path

from codexw.backends.appserver import files, translate
from codexw.core.codex import RunSummary, app_server_refusal


def test_items_become_the_exec_events_run_summary_reads() -> None:
    summary = RunSummary()
    for raw in [
        {"type": "commandExecution", "id": "c1", "command": "/bin/bash -lc 'make'",
         "status": "completed", "exitCode": 2, "aggregatedOutput": "boom"},
        {"type": "fileChange", "id": "f1", "status": "completed",
         "changes": [{"path": "a.py", "kind": {"type": "add"}, "diff": ""},
                     {"path": "b.py", "kind": "update", "diff": ""}]},
        {"type": "agentMessage", "id": "m1", "text": "all done"},
        {"type": "userMessage", "id": "u1", "content": []},  # not shown by exec either
    ]:
        item = translate.item(raw)
        if item is not None:
            summary.feed({"type": "item.completed", "item": item})
    assert translate.item({"type": "userMessage", "id": "u1"}) is None
    (command,) = summary.commands.values()
    assert (command.command, command.exit_code) == ("/bin/bash -lc 'make'", 2)
    assert summary.files == {"a.py": "add", "b.py": "update"}
    assert summary.messages == ["all done"]


def test_hostile_items_do_not_raise() -> None:
    for raw in [None, [], {"type": "commandExecution", "exitCode": "x", "command": 5},
                {"type": "fileChange", "changes": "nope"}, {"type": "reasoning", "summary": [1]}]:
        translate.item(raw)
    assert translate.usage_of({"tokenUsage": {"last": {"inputTokens": -1, "outputTokens": True}}}) == {}


def test_usage_is_the_latest_responses_and_sums_per_turn() -> None:
    params = {"tokenUsage": {"total": {"inputTokens": 900}, "last": {
        "inputTokens": 100, "cachedInputTokens": 10, "outputTokens": 20,
        "reasoningOutputTokens": 3}}}
    assert translate.usage_of(params) == {"input_tokens": 100, "cached_input_tokens": 10,
                                          "output_tokens": 20, "reasoning_output_tokens": 3}


CONFIG = b'model = "m"\n\n[model_providers.mock]\nname = "mock"\n'


def test_the_trust_entry_codex_writes_is_undone(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(CONFIG)
    config.write_bytes(CONFIG + b'\n[projects."/work/p"]\ntrust_level = "trusted"\n')
    assert files.undo_trust_write(config, CONFIG, "/work/p")
    assert config.read_bytes() == CONFIG


def test_other_changes_are_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    edited = CONFIG.replace(b'"m"', b'"other"') + b'\n[projects."/work/p"]\ntrust_level = "trusted"\n'
    config.write_bytes(edited)
    assert not files.undo_trust_write(config, CONFIG, "/work/p")  # the user changed the model
    assert config.read_bytes() == edited
    already = CONFIG + b'\n[projects."/work/p"]\ntrust_level = "trusted"\n'
    config.write_bytes(already)
    assert not files.undo_trust_write(config, already, "/work/p")  # trusted before: theirs


def test_a_config_codex_created_is_removed(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(b'[projects."/work/p"]\ntrust_level = "trusted"\n')
    assert files.undo_trust_write(config, None, "/work/p")
    assert not config.exists()


def test_only_tested_codex_versions_are_driven() -> None:
    assert app_server_refusal("codex-cli 0.169.0\n") is None
    refusal = app_server_refusal("codex-cli 0.171.0")
    assert refusal is not None and "0.171.0 is not a version" in refusal and "0.169.0" in refusal
    assert app_server_refusal("garbage") is not None
