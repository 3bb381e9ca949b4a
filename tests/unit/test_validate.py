"""core.validate and the batch dependency check: the refusals that used to be crashes
(OverflowError at insert, RecursionError on a long `after` chain, NUL bytes at exec)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace

import pytest

from codexw.core.batchfile import find_cycle, parse
from codexw.core.errors import EXIT_USAGE, UsageError
from codexw.core.models import JobSpec
from codexw.core.validate import (
    MAX_ID,
    MAX_PARALLEL,
    MAX_RETRIES,
    SpecError,
    check_fields,
    check_spec,
)

SPEC = JobSpec(task="t", level="low", type="workers", cwd="/p", project="/p", codex_bin="codex")


def _chain(n: int, last_after: list[str]) -> str:
    """n JSONL tasks listed dependents-first: task i runs after task i+1."""
    return "\n".join(
        json.dumps({"task": f"step {i}", "name": f"t{i}",
                    "after": [f"t{i + 1}"] if i + 1 < n else last_after})
        for i in range(n)
    ) + "\n"


@pytest.fixture
def shallow_stack():  # type: ignore[no-untyped-def]
    """Far below the chain's length: any recursion per task would fail."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    yield
    sys.setrecursionlimit(old)


def test_1200_tasks_listed_dependents_first_parse_in_file_order(shallow_stack: None) -> None:
    entries = parse("chain.jsonl", _chain(1200, []))
    assert [e.name for e in entries] == [f"t{i}" for i in range(1200)]
    assert entries[0].after == ["t1"] and entries[-1].after == []


def test_cycle_closed_at_the_end_of_a_1200_task_chain_is_named(shallow_stack: None) -> None:
    with pytest.raises(UsageError) as err:
        parse("chain.jsonl", _chain(1200, ["t0"]))
    assert err.value.exit_code == EXIT_USAGE
    assert "dependency cycle t0 → t1 → t2 → … → t1198 → t1199 → t0 (1200 tasks)" in err.value.message


def test_find_cycle_small_graphs() -> None:
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None  # a diamond
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]
    assert find_cycle({"a": [], "b": ["b"]}) == ["b", "b"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"retries": MAX_RETRIES + 1}, "retries 101 is out of range (0 to 100)"),
        ({"retries": -1}, "retries -1 is out of range"),
        ({"priority": 2**63}, "priority 9223372036854775808 is out of range"),
        ({"priority": -(2**31) - 1}, "out of range (-2147483648 to 2147483647)"),
        ({"after": (1, MAX_ID + 1)}, "--after job id 9223372036854775808 is out of range"),
        ({"after": (0,)}, "--after job id 0 is out of range"),
        ({"global_limit": MAX_PARALLEL + 1}, "max_parallel 10001 is out of range"),
        ({"batch_id": 2**64}, "batch_id 18446744073709551616 is out of range"),
        ({"timeout": float("inf")}, "timeout inf is not a finite number"),
        ({"timeout": 10.0**20}, "timeout 1e+20 s is out of range"),
        ({"kill_grace": float("nan")}, "kill_grace nan is not a finite number"),
        ({"model": "gpt\x00"}, "model contains a NUL byte"),
        ({"codex_args": ("-c", "x=\x00")}, "a codex argument contains a NUL byte"),
        ({"cwd": "/p\x00"}, "the working directory contains a NUL byte"),
        ({"resume_thread": "th\x00"}, "resume_thread contains a NUL byte"),
        ({"model": "gpt\udcff"}, "model is not valid UTF-8 (character 3)"),
    ],
)
def test_spec_fields_out_of_range_or_not_passable_are_refused(change: dict, words: str) -> None:
    with pytest.raises(SpecError) as err:
        check_spec(replace(SPEC, **change))
    assert words in str(err.value)
    assert err.value.field == next(iter(change))
    assert err.value.exit_code == EXIT_USAGE


def test_the_limits_themselves_are_accepted() -> None:
    check_spec(replace(SPEC, retries=MAX_RETRIES, priority=2**31 - 1, after=(MAX_ID,),
                       global_limit=MAX_PARALLEL, timeout=366 * 86400.0, model="gpt-5",
                       codex_args=("-c", 'a="ü ✓"')))


def test_a_field_added_later_is_checked_by_its_type() -> None:
    @dataclass(frozen=True)
    class Later(JobSpec):
        counter: int = 0
        hook: str | None = None

    check_fields(Later(**SPEC.__dict__, counter=2**63 - 1))
    with pytest.raises(SpecError, match="counter 9223372036854775808 is out of range"):
        check_fields(Later(**SPEC.__dict__, counter=2**63))
    with pytest.raises(SpecError, match="hook contains a NUL byte"):
        check_fields(Later(**SPEC.__dict__, hook="a\x00b"))
