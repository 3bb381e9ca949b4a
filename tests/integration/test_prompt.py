"""What codex reads: the task, and (unless turned off) the request for the report's sections."""

from __future__ import annotations

from pathlib import Path

from codexw.core.codex import PROMPT_SUFFIX
from tests.conftest import Env


def _prompts(cx: Env) -> dict[str, str]:
    return {run["prompt"].split("\n")[0]: run["prompt"] for run in cx.fake_runs()}


def test_sections_are_asked_for_by_default_and_can_be_turned_off(cx: Env) -> None:
    cx.launch("with sections")
    cx.launch("without sections", "--no-sections")
    assert cx.run("wait", "1", "2").returncode == 0
    prompts = _prompts(cx)
    assert prompts["with sections"] == "with sections" + PROMPT_SUFFIX
    assert prompts["without sections"] == "without sections"
    for job_id in (1, 2):  # status shows the task alone either way
        assert cx.job(job_id)["task"] in ("with sections", "without sections")


def test_report_sections_false_in_the_config_sends_the_task_alone(cx: Env) -> None:
    config = Path(cx.env["CODEXW_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + "report_sections = false\n")
    cx.launch("from config")
    cx.launch("flag wins", "--sections")
    assert cx.run("wait", "1", "2").returncode == 0
    prompts = _prompts(cx)
    assert prompts["from config"] == "from config"
    assert prompts["flag wins"] == "flag wins" + PROMPT_SUFFIX


def test_the_help_says_what_is_appended(cx: Env) -> None:
    text = cx.ok("launch", "--help").stdout
    assert "--no-sections" in text and "final message" in text
