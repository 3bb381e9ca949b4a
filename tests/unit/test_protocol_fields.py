"""Every JobSpec field is classified as sent to a Celery worker or kept on this machine."""

from __future__ import annotations

import dataclasses

from codexw.backends.celery import protocol
from codexw.core.models import Job, JobSpec, JobState


def test_every_spec_field_is_classified_sent_or_not() -> None:
    sent, kept = set(protocol.SENT_SPEC_FIELDS), set(protocol.NOT_SENT_SPEC_FIELDS)
    fields = {f.name for f in dataclasses.fields(JobSpec)}
    assert not sent & kept
    assert sent | kept == fields, (
        f"classify in backends/celery/protocol.py: {sorted(fields - sent - kept)}"
    )


def test_the_payload_carries_only_the_sent_fields() -> None:
    spec = JobSpec(task="t", level="low", type="workers", cwd="/c", project="/p",
                   codex_bin="/secret/bin/codex", codex_home="/secret/home", env_key="k",
                   path_env="/secret/path", broker_url="redis://:pw@h", codex_args=("-x",))
    payload = protocol.payload_for(Job(id=1, spec=spec, state=JobState.STARTING))
    assert set(payload["spec"]) == set(protocol.SENT_SPEC_FIELDS)
    assert "secret" not in repr(payload) and "pw" not in repr(payload)
    assert payload["spec"]["codex_args"] == ["-x"]
