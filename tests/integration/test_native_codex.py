"""A job whose codex is the npm wrapper runs the native binary, with the wrapper's
environment; `codex_native = false` runs the wrapper. Here the "native binary" and the
"wrapper" are both the fake codex, laid out as npm lays out @openai/codex."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.unit.test_codexbin import TRIPLE, npm_install


def _fake_codex_layout(cx: Env) -> Path:
    shim = (cx.bin_dir / "codex").read_text()
    # The wrapper: the fake codex too, with the lines codexw recognises as comments.
    wrapper = shim.replace("\n", "\n# PLATFORM_PACKAGE_BY_TARGET CODEX_MANAGED_PACKAGE_ROOT vendor\n", 1)
    link = npm_install(cx.tmp / "npm", wrapper=wrapper)
    native = link.parent.parent / "@openai" / next(
        p.name for p in (link.parent.parent / "@openai").iterdir() if p.name != "codex"
    ) / "vendor" / str(TRIPLE) / "bin" / "codex"
    native.write_text(shim)
    return link


def _ran(cx: Env, job_id: int) -> str:
    detail = cx.ok("status", str(job_id)).stdout
    found = re.search(r"^ *codex  (.*)$", detail, re.M)
    assert found, detail
    return found.group(1)


@pytest.mark.skipif(TRIPLE is None, reason="no native codex build for this machine")
def test_the_native_binary_runs_with_the_wrappers_environment(cx: Env) -> None:
    link = _fake_codex_layout(cx)
    cx.env["CODEXW_CODEX_BIN"] = str(link)
    root = str((link.parent.parent / "@openai" / "codex").resolve())

    cx.launch("native run")
    assert cx.run("wait", "1").returncode == 0
    assert cx.job(1)["state"] == "succeeded"
    assert cx.fake_runs()[-1]["managed"] == {"CODEX_MANAGED_PACKAGE_ROOT": root,
                                             "CODEX_MANAGED_BY_NPM": "1"}
    assert _ran(cx, 1).startswith("native ") and str(link) in _ran(cx, 1)

    cx.env["CODEXW_CODEX_NATIVE"] = "false"
    cx.launch("wrapper run")
    assert cx.run("wait", "2").returncode == 0
    assert cx.fake_runs()[-1]["managed"] == {}  # this "wrapper" adds nothing itself
    assert _ran(cx, 2).startswith(f"npm wrapper {link}")
