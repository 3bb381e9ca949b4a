"""core.codexbin: the npm wrapper's native binary, found the way the wrapper finds it,
and the wrapper kept whenever the layout is not the one codexw read."""

from __future__ import annotations

import json
import os
import platform
import stat
from pathlib import Path

import pytest

from codexw.core import codexbin

WRAPPER_JS = """#!/usr/bin/env node
const PLATFORM_PACKAGE_BY_TARGET = {};
// vendor root, CODEX_MANAGED_PACKAGE_ROOT ...
"""
TRIPLE, SUFFIX = codexbin._TRIPLES.get((platform.system(), platform.machine()), (None, None))
pytestmark = pytest.mark.skipif(TRIPLE is None, reason="no native codex build for this machine")


def _executable(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def npm_install(prefix: Path, wrapper: str = WRAPPER_JS, native: bool = True) -> Path:
    """The layout `npm install --prefix PREFIX @openai/codex` leaves; returns .bin/codex."""
    modules = prefix / "node_modules"
    root = modules / "@openai" / "codex"
    (root / "bin").mkdir(parents=True)
    (root / "package.json").write_text(json.dumps({"name": "@openai/codex"}))
    _executable(root / "bin" / "codex.js", wrapper)
    platform_pkg = modules / "@openai" / f"codex-{SUFFIX}"
    platform_pkg.mkdir(parents=True)
    (platform_pkg / "package.json").write_text(json.dumps({"name": "@openai/codex"}))
    if native:
        _executable(platform_pkg / "vendor" / str(TRIPLE) / "bin" / "codex")
    (modules / ".bin").mkdir()
    link = modules / ".bin" / "codex"
    link.symlink_to("../@openai/codex/bin/codex.js")
    return link


def test_the_npm_wrapper_is_replaced_by_its_native_binary(tmp_path: Path) -> None:
    link = npm_install(tmp_path)
    program = codexbin.locate(str(link))
    assert program.kind == codexbin.NATIVE
    root = (tmp_path / "node_modules" / "@openai" / "codex").resolve()
    assert program.path == str(
        tmp_path.resolve() / "node_modules" / "@openai" / f"codex-{SUFFIX}" / "vendor" / str(TRIPLE)
        / "bin" / "codex")
    assert dict(program.env) == {"CODEX_MANAGED_PACKAGE_ROOT": str(root),
                                 "CODEX_MANAGED_BY_NPM": "1"}
    assert program.wrapper == str(link)
    assert program.describe().startswith("native ")


def test_the_environment_is_the_wrappers(tmp_path: Path) -> None:
    program = codexbin.locate(str(npm_install(tmp_path)))
    env = program.environ({"PATH": "/bin", "CODEX_MANAGED_BY_PNPM": "1", "KEEP": "x"})
    assert env["PATH"] == "/bin" and env["KEEP"] == "x"
    assert "CODEX_MANAGED_BY_PNPM" not in env  # the wrapper deletes the others too
    assert env["CODEX_MANAGED_BY_NPM"] == "1"


def test_the_package_local_vendor_folder_is_the_fallback(tmp_path: Path) -> None:
    link = npm_install(tmp_path, native=False)
    root = tmp_path / "node_modules" / "@openai" / "codex"
    binary = _executable(root / "vendor" / str(TRIPLE) / "bin" / "codex")
    program = codexbin.locate(str(link))
    assert program.kind == codexbin.NATIVE
    assert program.path == str(binary.resolve())


@pytest.mark.parametrize("spoil, why", [
    ("wrapper", "is not a wrapper codexw knows"),
    ("package", "is not the @openai/codex package"),
    ("native", "no native binary"),
    ("pnpm", "installed by pnpm"),
])
def test_an_unrecognised_layout_keeps_the_wrapper(tmp_path: Path, spoil: str, why: str) -> None:
    link = npm_install(tmp_path, wrapper="console.log('a different wrapper')\n"
                       if spoil == "wrapper" else WRAPPER_JS, native=spoil != "native")
    root = tmp_path / "node_modules" / "@openai" / "codex"
    if spoil == "package":
        (root / "package.json").write_text(json.dumps({"name": "not-codex"}))
    if spoil == "pnpm":
        (tmp_path / "node_modules" / ".modules.yaml").write_text("layoutVersion: 5\n")
    program = codexbin.locate(str(link))
    assert program.kind == codexbin.WRAPPER
    assert program.path == str(link)
    assert why in program.note
    assert program.environ({"A": "1"}) == {"A": "1"}  # started as installed, nothing added


def test_codex_native_false_keeps_the_wrapper(tmp_path: Path) -> None:
    link = npm_install(tmp_path)
    program = codexbin.locate(str(link), native=False)
    assert (program.kind, program.path) == (codexbin.WRAPPER, str(link))
    assert "codex_native = false" in program.describe()


def test_any_other_program_runs_as_it_is(tmp_path: Path) -> None:
    other = _executable(tmp_path / "codex")
    program = codexbin.locate(str(other))
    assert (program.kind, program.path) == (codexbin.PROGRAM, str(other))
    assert codexbin.locate(str(tmp_path / "missing")).kind == codexbin.PROGRAM


def test_the_real_installed_package_is_recognised() -> None:
    """The layout read from @openai/codex itself (CODEXW_E2E_CODEX, as CI installs it)."""
    real = os.environ.get("CODEXW_E2E_CODEX")
    if not real:
        if os.environ.get("CODEXW_REQUIRE_E2E") == "1":
            pytest.fail("CODEXW_E2E_CODEX is not set")
        pytest.skip("CODEXW_E2E_CODEX is not set")
    program = codexbin.locate(real)
    assert program.kind == codexbin.NATIVE, program.note
    assert os.access(program.path, os.X_OK)
