from __future__ import annotations

import pytest

from codexw.core.models import FINAL_STATES, JobState, is_job_type


@pytest.mark.parametrize("name", ["workers", "research", "custom", "a", "x_y-2", "a" * 32])
def test_valid_type_names(name: str) -> None:
    assert is_job_type(name)


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "A", "-a", "a" * 33, "archive", "wörk"])
def test_invalid_or_reserved_type_names(name: str) -> None:
    assert not is_job_type(name)


def test_states_are_the_words_users_see() -> None:
    assert JobState("timed_out") is JobState.TIMED_OUT
    assert str(JobState.RUNNING) == "running"
    assert JobState.QUEUED not in FINAL_STATES and JobState.CANCELLED in FINAL_STATES


def test_process_identity_ignores_wall_clock_steps() -> None:
    """The start token is counted from boot: a stepped clock cannot make a live
    runner look like another process."""
    import os
    import time

    from codexw.core import process

    me = os.getpid()
    token = process.create_time(me)
    assert token is not None and token < time.clock_gettime(time.CLOCK_BOOTTIME) + 1  # since boot
    assert process.is_alive(me, token)
    assert not process.is_alive(me, token - 10)
