"""The CLI's small decisions, without processes: positional words, the platform check,
the help pages (issue 14, items 6, 16, 17, 19)."""

from __future__ import annotations

import re
import sys

import pytest

from codexw.cli import app
from codexw.cli.launch_cmd import split_positional
from codexw.core.errors import UsageError
from codexw.services.doctor import check_os


@pytest.mark.parametrize(("args", "expected"), [
    (["fix it"], (None, None, "fix it")),
    (["high"], ("high", None, None)),
    (["research"], (None, "research", None)),
    (["high", "research"], ("high", "research", None)),
    (["high", "research", "x"], ("high", "research", "x")),
    (["high", "mine", "x"], ("high", "mine", "x")),
    (["research", "x"], (None, "research", "x")),
])
def test_level_and_type_words_are_never_the_task(args: list[str], expected: tuple) -> None:
    assert split_positional(args) == expected


def test_a_misspelt_level_is_named_with_the_closest() -> None:
    with pytest.raises(UsageError, match="did you mean high"):
        split_positional(["hihg", "fix it"])
    with pytest.raises(UsageError, match="did you mean xhigh"):
        split_positional(["xhihg", "research", "fix it"])


def test_doctor_warns_on_an_untested_platform() -> None:
    assert check_os("linux").status == "ok"
    mac = check_os("darwin")
    assert mac.status == "warn" and "not tested" in mac.detail
    assert check_os("win32").status == "warn"
    assert check_os(sys.platform).status == ("ok" if sys.platform == "linux" else "warn")


def _help(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        app.build_app(args[0] if args else None)([*args, "--help"], prog_name="codexw")
    return capsys.readouterr().out


def test_every_help_page_has_examples_one_placeholder_style_and_described_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in app.COMMANDS:
        text = _help(name, capsys=capsys)
        assert "Examples:" in text and f"codexw {name}" in text.split("Examples:")[1], name
        assert "<str>" not in text and "<int" not in text and "<=x<=" not in text, name
        assert "(default:" not in text, name  # one style: [default: …]
        arguments = text.split("Arguments:")[1].split("Options:")[0] if "Arguments:" in text else ""
        for line in arguments.splitlines():
            if line.strip() and line.startswith("  ") and not line.startswith("      "):
                assert re.search(r"\S\s{2,}\S", line.strip()), f"{name}: undescribed {line!r}"


def test_short_flags_mean_one_thing_across_commands(capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, set[str]] = {}
    for name in app.COMMANDS:
        for short, long in re.findall(r"^\s+(-[a-zA-Z]), (--[a-z-]+)", _help(name, capsys=capsys),
                                      re.MULTILINE):
            seen.setdefault(short, set()).add(long)
    # -f is --file where a task is read and --follow in logs, as in tail: no command has both.
    clashes = {s: ls for s, ls in seen.items() if len(ls) > 1 and s != "-f"}
    assert not clashes
    assert seen["-n"] == {"--latest"} and seen["-w"] == {"--wait"}


def test_the_command_list_is_not_cut_mid_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys=capsys)
    commands = text.split("Commands:")[1]
    assert "..." not in commands
    assert "--install-completion" in text
