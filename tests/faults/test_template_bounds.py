"""A report template is user code: it can neither hang codexw nor cost a job its outcome.

Rendering runs in a forked child bounded in time (templates.RENDER_TIMEOUT_S), output
size and memory. Past a bound, launch refuses the template in one line; at a job's
end, the outcome is recorded anyway and the report falls back to the built-in
template with a warning that names the template.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from codexw.core import templates
from tests.conftest import Env

FOREVER = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
RUNAWAY = {
    "loop": FOREVER,
    "size": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "memory": "{{ 'x' * 10000000000 }}",
}


def _use_template(cx: Env, text: str) -> Path:
    templates = cx.tmp / "templates"
    templates.mkdir()
    template = templates / "worker-task.md"
    template.write_text(text)
    config = cx.tmp / "config" / "config.toml"
    config.write_text(config.read_text() + f'templates_dir = "{templates}"\n')
    return template


def test_a_template_that_never_finishes_is_refused_at_launch_within_the_bound(cx: Env) -> None:
    template = _use_template(cx, "# {{ job.id }}\n" + FOREVER)
    began = time.monotonic()
    proc = cx.run("launch", "a task", timeout=60)
    assert time.monotonic() - began < templates.RENDER_TIMEOUT_S + 30
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(template) in lines[0] and "did not finish" in lines[0]
    assert cx.run("status", "--json", "--all").stdout.count('"id"') == 0


@pytest.mark.parametrize("kind", list(RUNAWAY))
def test_a_template_that_runs_away_only_at_the_end_costs_the_job_nothing(
    cx: Env, kind: str
) -> None:
    # Fine for the succeeded sample that launch checks; runs away for a failed job.
    template = _use_template(
        cx, "# {{ job.id }}\n{% if job.state == 'failed' %}" + RUNAWAY[kind] + "{% endif %}\n"
    )
    cx.ok("launch", "@fake fail auth")
    assert cx.run("wait", "1", timeout=120).returncode == 1
    job = cx.job(1)
    assert job["state"] == "failed"
    assert "401 Unauthorized" in job["reason"] and "report template failed" in job["reason"]
    text = Path(job["report_path"]).read_text()
    assert str(template) in text and "the built-in template was used" in text
    assert "@fake fail auth" in text  # the built-in template's report of the job
    assert len(text) < templates.RENDER_MAX_BYTES
