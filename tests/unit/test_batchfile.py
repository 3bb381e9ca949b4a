from __future__ import annotations

import pytest

from codexw.core.batchfile import detect_format, parse
from codexw.core.errors import UsageError


def test_text_skips_blank_and_comments() -> None:
    entries = parse("t.txt", "a\n\n# no\n  b  \n")
    assert [e.task for e in entries] == ["a", "b"]
    assert entries[1].where == "t.txt line 4"


def test_jsonl_fields() -> None:
    entries = parse("t.jsonl", '{"task":"x","name":"n","priority":3,"timeout":90,"retries":1}\n'
                               '{"task":"y","after":"n","level":"high","type":"research"}\n')
    assert entries[0].timeout == "90" and entries[0].priority == 3 and entries[0].retries == 1
    assert entries[1].after == ["n"] and entries[1].level == "high"


def test_stdin_format_is_sniffed() -> None:
    assert detect_format("-", '\n# c\n{"task": "x"}') == "jsonl"
    assert detect_format("-", '[[task]]\ntask = "x"') == "toml"
    assert detect_format("-", "plain task") == "text"


@pytest.mark.parametrize(
    "content",
    ['{"task": ""}', '{"task": 5}', '{"task": "x", "priority": "high"}', '{"task": "x", "after": [1]}',
     '["task"]', '{"task": "x", "name": "bad name!"}',
     '{"task": "a", "name": "n"}\n{"task": "b", "name": "n"}',
     '{"task": "x", "priority": ' + "1" * 5000 + '}'],  # json.loads: ValueError, no .msg
)
def test_bad_jsonl_is_refused(content: str) -> None:
    with pytest.raises(UsageError, match="t.jsonl"):
        parse("t.jsonl", content)
