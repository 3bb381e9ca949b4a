"""Which program codex really is: the npm package's native binary instead of its Node wrapper.

`npm install -g @openai/codex` puts a Node script (`bin/codex.js`) on PATH. All it does is
find the platform package's native binary, add two environment variables and start it:
a Node process (~45 MB RSS, ~0.5 s of start-up) per job for nothing. `locate` reads the
installed package the way the wrapper does and returns the native binary with the same
environment, or the wrapper itself when the layout is not one codexw recognises (a
future package, pnpm/bun/vite+ installs it cannot vouch for): never a guess.

What the wrapper of @openai/codex 0.169.0–0.171.0 does, read from its `bin/codex.js`:
- the binary: `<platform package>/vendor/<target triple>/bin/codex`, the platform package
  being `@openai/codex-<os>-<arch>` resolved from the package root (node_modules lookup),
  else `<package root>/vendor/...`;
- the environment: `CODEX_MANAGED_PACKAGE_ROOT=<real path of the package root>` and
  `CODEX_MANAGED_BY_NPM=1` (the other `CODEX_MANAGED_BY_*` removed). The native binary finds
  its bundled `rg` (`codex-path/`) and resources itself, from its own location.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

NATIVE = "native"    # the package's native binary, started directly
WRAPPER = "wrapper"  # the Node wrapper (not recognised, or native start turned off)
PROGRAM = "program"  # codex_bin is not the npm wrapper: started as it is

PACKAGE_NAME = "@openai/codex"
# Lines of bin/codex.js that the layout below was read from; a wrapper without them is
# a different wrapper, and then codexw starts it rather than guess what it would do.
WRAPPER_MARKERS = ("PLATFORM_PACKAGE_BY_TARGET", "CODEX_MANAGED_PACKAGE_ROOT", "vendor")
MANAGED_BY = ("CODEX_MANAGED_BY_NPM", "CODEX_MANAGED_BY_BUN", "CODEX_MANAGED_BY_PNPM",
              "CODEX_MANAGED_BY_VITE_PLUS")
_TRIPLES = {
    ("Linux", "x86_64"): ("x86_64-unknown-linux-musl", "linux-x64"),
    ("Linux", "aarch64"): ("aarch64-unknown-linux-musl", "linux-arm64"),
    ("Darwin", "x86_64"): ("x86_64-apple-darwin", "darwin-x64"),
    ("Darwin", "arm64"): ("aarch64-apple-darwin", "darwin-arm64"),
}
WRAPPER_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class CodexProgram:
    """What to exec for `codex`, and what to add to its environment."""

    path: str
    kind: str
    env: tuple[tuple[str, str], ...] = ()
    wrapper: str | None = None  # the npm wrapper this stands in for
    note: str = ""  # why the wrapper runs, when it does

    def environ(self, base: dict[str, str]) -> dict[str, str]:
        if self.kind != NATIVE:
            return base
        env = {k: v for k, v in base.items() if k not in MANAGED_BY}
        env.update(self.env)
        return env

    def describe(self) -> str:
        if self.kind == NATIVE:
            return f"native {self.path} (npm wrapper {self.wrapper} bypassed)"
        if self.kind == WRAPPER:
            return f"npm wrapper {self.path}" + (f" ({self.note})" if self.note else "")
        return self.path


def locate(codex_bin: str, native: bool = True) -> CodexProgram:
    """The program to start for `codex_bin` (a path, as launch resolved it)."""
    script = _wrapper_script(codex_bin)
    if script is None:
        return CodexProgram(codex_bin, PROGRAM)
    if not native:
        return CodexProgram(codex_bin, WRAPPER, note="codex_native = false")
    try:
        return _native(codex_bin, script)
    except _Unrecognised as exc:
        return CodexProgram(codex_bin, WRAPPER, note=str(exc))


class _Unrecognised(Exception):
    pass


def _wrapper_script(codex_bin: str) -> Path | None:
    """bin/codex.js of an @openai/codex package when `codex_bin` is (a link to) it."""
    try:
        script = Path(os.path.realpath(codex_bin))
    except (OSError, ValueError):
        return None
    if script.name != "codex.js" or script.parent.name != "bin":
        return None
    return script


def _native(codex_bin: str, script: Path) -> CodexProgram:
    root = script.parent.parent
    try:
        manifest = json.loads((root / "package.json").read_text(encoding="utf-8"))
        with script.open("rb") as fh:
            source = fh.read(WRAPPER_MAX_BYTES).decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        raise _Unrecognised(f"cannot read the package at {root}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("name") != PACKAGE_NAME:
        raise _Unrecognised(f"{root} is not the {PACKAGE_NAME} package")
    if not all(marker in source for marker in WRAPPER_MARKERS):
        raise _Unrecognised(f"{script} is not a wrapper codexw knows")
    target = _TRIPLES.get((platform.system(), platform.machine()))
    if target is None:
        raise _Unrecognised(f"no native build known for {platform.system()} {platform.machine()}")
    triple, suffix = target
    manager = _package_manager(root)
    if manager != "npm":
        raise _Unrecognised(f"installed by {manager}, whose layout codexw does not vouch for")
    for vendor in (*_platform_vendors(root, f"{PACKAGE_NAME}-{suffix}"), root / "vendor"):
        binary = vendor / triple / "bin" / "codex"
        if os.access(binary, os.X_OK) and binary.is_file():
            env = (("CODEX_MANAGED_PACKAGE_ROOT", str(root)), ("CODEX_MANAGED_BY_NPM", "1"))
            return CodexProgram(str(binary), NATIVE, env, wrapper=codex_bin)
    raise _Unrecognised(f"no native binary for {triple} beside {root}")


def _platform_vendors(root: Path, package: str) -> list[Path]:
    """Where Node's require.resolve(`<package>/package.json`) from `root` looks: each
    node_modules folder from the package root up."""
    found = []
    for folder in (root, *root.parents):
        candidate = folder / "node_modules" / package
        if (candidate / "package.json").is_file():
            found.append(candidate / "vendor")
    return found


def _same(path: Path, root: Path) -> bool:
    try:
        return Path(os.path.realpath(path)) == root
    except (OSError, ValueError):
        return False


def _package_manager(root: Path) -> str:
    """npm, unless the wrapper's own heuristics would say pnpm, bun or vite+."""
    if ".bun/install/global" in str(root):
        return "bun"
    for folder in (root, *root.parents):
        modules = folder / "node_modules"
        if (modules / ".modules.yaml").exists() and _same(modules / "@openai" / "codex", root):
            return "pnpm"
        if folder.name == "packages" and (folder / "@openai" / "codex.json").exists():
            return "vite+"
    return "npm"
